"""The command line: train, sample and eval, and one-line errors with exit status 2 for bad input."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_SHAKESPEARE
from test_corpora import Server

from minilm.cli import main
from minilm.training import checkpoint

pytest.importorskip("minilm.ngram")

NGRAM = ["--model", "ngram", "--context", "3", "--width", "8", "--hidden", "32", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """A tiny n-gram run through the command line, shared by the tests below (which must not change it)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *NGRAM, "--data", str(corpus), "--out", str(out), "--steps", "40", "--lr", "0.02"]) == 0
    return out


def one_line_error(capsys, code, expected, match):
    out, err = capsys.readouterr()
    assert code == expected, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], err
    assert match in lines[0], lines[0]
    return lines[0]


def test_train_writes_checkpoint_metrics_and_plot(trained, capsys):
    m = json.loads((trained / "metrics.json").read_text())
    for key in ("model", "steps", "train_loss", "val_loss", "val_perplexity", "tokens_per_second", "seconds",
                "n_params", "val_bits_per_char"):
        assert m[key] is not None, key
    assert m["model"] == "ngram" and m["steps"] == 40
    assert m["val_perplexity"] == pytest.approx(np.exp(m["val_loss"]))
    assert (trained / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert checkpoint.load(trained / "checkpoint.npz")["meta"]["step"] == 40


def test_sample_and_eval_print_text_and_perplexity(trained, corpus, capsys):
    ck = str(trained / "checkpoint.npz")
    assert main(["sample", "--checkpoint", ck, "--prompt", "the cat", "--tokens", "30", "--seed", "1"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the cat") and len(text.rstrip("\n")) == len("the cat") + 30
    assert main(["sample", "--checkpoint", ck, "--tokens", "20", "--temperature", "0"]) == 0
    assert main(["sample", "--checkpoint", ck, "--tokens", "20", "--top-k", "3"]) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", ck]) == 0
    out = capsys.readouterr().out
    m = json.loads((trained / "metrics.json").read_text())
    assert f"loss {m['val_loss']:.4f}" in out and "perplexity" in out and "bits/char" in out
    assert "validation set" in out
    assert main(["eval", "--checkpoint", ck, "--data", str(corpus)]) == 0
    assert f"over {len(corpus.read_text()) - 3:,} tokens of all of" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["--steps", "-1"], "--steps must be a positive integer"),
    (["--steps", "ten"], "invalid int value: 'ten'"),
    (["--model", "gpt5"], "invalid choice: 'gpt5'"),
    (["--heads", "4"], "--heads does not apply to --model ngram"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--corpus", "pydoc"], "not allowed with argument --data"),
    (["--nonsense"], "unrecognized arguments: --nonsense"),
])
def test_bad_flags_are_one_line_errors(argv, match, corpus, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:  # argparse's own errors exit from inside parse_args
        code = main(["train", *NGRAM, "--data", str(corpus), "--out", str(tmp_path / "x"), *argv])
        raise SystemExit(code)
    one_line_error(capsys, e.value.code, 2, match)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("content,match", [(None, "no such file"), (b"", "file is empty"),
                                           (b"\xff\xfe caf\xe9", "not UTF-8")])
def test_bad_data_files_are_one_line_errors(content, match, tmp_path, capsys):
    f = tmp_path / "data.txt"
    if content is not None:
        f.write_bytes(content)
    code = main(["train", *NGRAM, "--data", str(f), "--out", str(tmp_path / "x")])
    one_line_error(capsys, code, 2, match)
    assert not (tmp_path / "x").exists()


def test_sample_top_p(trained, capsys):
    ck = str(trained / "checkpoint.npz")
    runs = {}
    for extra in ([], ["--top-p", "1"], ["--top-p", "0.5"], ["--top-p", "1e-9"], ["--temperature", "0"]):
        assert main(["sample", "--checkpoint", ck, "--prompt", "the ", "--tokens", "40", "--seed", "3", *extra]) == 0
        runs[" ".join(extra)] = capsys.readouterr().out
    assert runs["--top-p 1"] == runs[""]  # p = 1 keeps every token: plain sampling, draw for draw
    assert runs["--top-p 1e-9"] != runs[""]  # the smallest nucleus is the argmax alone: greedy ...
    greedy = runs["--temperature 0"]  # ... under the default temperature (0.8)
    assert main(["sample", "--checkpoint", ck, "--prompt", "the ", "--tokens", "40", "--temperature", "0.8",
                 "--top-p", "1e-9", "--seed", "9"]) == 0
    assert capsys.readouterr().out == runs["--top-p 1e-9"] == greedy
    for bad in ("0", "1.5", "-1"):
        one_line_error(capsys, main(["sample", "--checkpoint", ck, "--top-p", bad]), 2, "top_p must be in (0, 1]")


def test_an_existing_checkpoint_is_never_overwritten(trained, corpus, capsys):
    before = (trained / "checkpoint.npz").read_bytes()
    code = main(["train", *NGRAM, "--data", str(corpus), "--out", str(trained), "--steps", "5"])
    one_line_error(capsys, code, 2, "exists; continue it with --resume")
    code = main(["train", "--resume", "--out", str(trained), "--steps", "80", "--lr", "0.5"])
    one_line_error(capsys, code, 2, "--lr 0.5 differs from the checkpoint's 0.02")
    code = main(["train", "--resume", "--out", str(trained), "--steps", "40"])
    one_line_error(capsys, code, 2, "is at step 40 of --steps 40")
    code = main(["train", *NGRAM, "--data", str(corpus), "--out", str(trained), "--force", "--steps", "-5"])
    one_line_error(capsys, code, 2, "--steps must be a positive integer")  # --force, but the run failed
    assert (trained / "checkpoint.npz").read_bytes() == before


def test_nan_stops_with_a_message(corpus, tmp_path, capsys):
    code = main(["train", *NGRAM, "--data", str(corpus), "--out", str(tmp_path), "--steps", "50", "--lr", "1e30"])
    line = one_line_error(capsys, code, 1, "is nan at step")
    assert "no checkpoint was written" in line
    assert not (tmp_path / "checkpoint.npz").exists()


def test_corrupt_and_mismatched_checkpoints(trained, tmp_path, capsys):
    raw = (trained / "checkpoint.npz").read_bytes()
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(raw[: len(raw) // 3])
    for argv in (["sample", "--checkpoint", str(bad)], ["eval", "--checkpoint", str(bad)],
                 ["train", "--resume", "--out", str(tmp_path), "--steps", "80"]):
        one_line_error(capsys, main(argv), 2, "corrupt checkpoint")
    assert bad.read_bytes() == raw[: len(raw) // 3]  # the failed resume left it alone
    ck = checkpoint.load(trained / "checkpoint.npz")
    ck["meta"]["config"]["n_hidden"] = 33  # the weights are for 32 hidden units
    checkpoint.save(bad, {k: v for k, v in ck["meta"].items() if k not in ("format", "version")}, ck["params"])
    one_line_error(capsys, main(["sample", "--checkpoint", str(bad)]), 2, "does not match its config")
    one_line_error(capsys, main(["sample", "--checkpoint", str(tmp_path / "none.npz")]), 2, "no such checkpoint")


def test_text_outside_the_vocabulary_is_a_one_line_error(trained, tmp_path, capsys):
    ck = str(trained / "checkpoint.npz")
    one_line_error(capsys, main(["sample", "--checkpoint", ck, "--prompt", "Zebra"]), 2, "'Z' (U+005A) is not in")
    (tmp_path / "other.txt").write_text("語")
    one_line_error(capsys, main(["eval", "--checkpoint", ck, "--data", str(tmp_path / "other.txt")]), 2,
                   "not in the vocabulary")


def test_word_tokenizer_and_chinese_text(tmp_path, capsys):
    zh = tmp_path / "zh.txt"
    zh.write_text("语言模型预测下一个词。掩码语言模型预测被掩盖的词。\n" * 40)
    assert main(["train", *NGRAM, "--data", str(zh), "--out", str(tmp_path / "zh"), "--steps", "30"]) == 0
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(tmp_path / "zh" / "checkpoint.npz"), "--prompt", "语言",
                 "--tokens", "10"]) == 0
    assert capsys.readouterr().out.startswith("语言")
    assert main(["train", *NGRAM, "--data", str(zh), "--out", str(tmp_path / "zh"), "--steps", "30", "--tokenizer",
                 "word", "--max-vocab", "8", "--force"]) == 0  # --force: this run replaces the first
    tok = checkpoint.load(tmp_path / "zh" / "checkpoint.npz")["meta"]["tokenizer"]
    assert tok["kind"] == "word" and len(tok["itos"]) == 8 and tok["itos"][0] == "<unk>"


def test_masked_lm_fills_in_the_blanks(corpus, tmp_path, capsys):
    pytest.importorskip("minilm.mlm")
    out = tmp_path / "mlm"
    assert main(["train", "--model", "mlm", "--data", str(corpus), "--out", str(out), "--steps", "10", "--layers",
                 "1", "--heads", "2", "--width", "16", "--block-size", "16", "--quiet"]) == 0
    capsys.readouterr()
    ck = str(out / "checkpoint.npz")
    assert main(["sample", "--checkpoint", ck, "--prompt", "the [MASK]at sees", "--temperature", "0"]) == 0
    filled = capsys.readouterr().out.rstrip("\n")
    assert len(filled) == len("the cat sees") and "[MASK]" not in filled
    assert filled[:4] == "the " and filled[5:] == "at sees"
    one_line_error(capsys, main(["sample", "--checkpoint", ck, "--prompt", "the cat"]), 2, "no [MASK]")
    assert main(["eval", "--checkpoint", ck]) == 0
    assert "masked-token loss" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED_SHAKESPEARE.exists(), reason="no shared copy of tinyshakespeare")
def test_train_on_the_downloaded_corpus(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINILM_CACHE", str(tmp_path / "cache"))
    with Server(SHARED_SHAKESPEARE.read_bytes()) as srv:
        monkeypatch.setenv("MINILM_TINYSHAKESPEARE_URL", srv.url)
        code = main(["train", *NGRAM, "--corpus", "tinyshakespeare", "--out", str(tmp_path / "r"), "--steps", "3"])
    assert code == 0, capsys.readouterr()
    assert "1,003,854 training and 111,540 validation tokens" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "cache")) == ["tinyshakespeare.txt"]
    assert Path(tmp_path / "r" / "checkpoint.npz").exists()
