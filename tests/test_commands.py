"""Every checkpoint kind through sample, eval and translate; path arguments; file modes; --fast; --threads."""

import os
import stat

import numpy as np
import pytest
from test_cli import one_line_error

from minilm.cli import main
from minilm.training import threads

TINY = {
    "transformer": ["--layers", "1", "--heads", "2", "--width", "16", "--block-size", "16", "--batch-size", "8"],
    "mlm": ["--layers", "1", "--heads", "2", "--width", "16", "--block-size", "16", "--batch-size", "8"],
    "ngram": ["--context", "3", "--width", "8", "--hidden", "16", "--batch-size", "16"],
    "lstm": ["--width", "8", "--hidden", "16", "--block-size", "8", "--batch-size", "4"],
    "seq2seq": ["--task", "numbers", "--max-number", "299", "--layers", "1", "--heads", "2", "--width", "16",
                "--batch-size", "8", "--eval-size", "10"],
}


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    """A three-step checkpoint of every model kind."""
    out = {}
    for model, flags in TINY.items():
        d = tmp_path_factory.mktemp(model)
        data = [] if model == "seq2seq" else ["--data", str(corpus)]
        assert main(["train", "--model", model, *flags, *data, "--steps", "3", "--out", str(d), "--quiet"]) == 0
        out[model] = d / "checkpoint.npz"
    return out


@pytest.mark.parametrize("model", list(TINY))
def test_each_checkpoint_kind_works_or_names_the_command_that_serves_it(model, runs, capsys):
    ck = str(runs[model])
    capsys.readouterr()
    prompt = "the [MASK]at" if model == "mlm" else "the "
    code = main(["sample", "--checkpoint", ck, "--prompt", prompt, "--tokens", "5"])
    if model == "seq2seq":
        line = one_line_error(capsys, code, 2, "which `minilm sample` does not serve")
        assert f"minilm translate --checkpoint {ck}" in line
    else:
        assert code == 0 and capsys.readouterr().out.startswith("the")
    assert main(["eval", "--checkpoint", ck]) == 0
    assert "perplexity" in capsys.readouterr().out
    code = main(["translate", "--checkpoint", ck, "three thousand and forty-two"])
    if model == "seq2seq":
        assert code == 0 and capsys.readouterr().out.startswith("three thousand and forty-two\t")
    else:
        line = one_line_error(capsys, code, 2, "which `minilm translate` does not serve")
        assert f"minilm sample --checkpoint {ck}" in line


def test_eval_data_on_a_seq2seq_checkpoint_is_refused(runs, corpus, capsys):
    code = main(["eval", "--checkpoint", str(runs["seq2seq"]), "--data", str(corpus)])
    one_line_error(capsys, code, 2, "--data does not apply to")


def _train(corpus, out, *extra):
    return main(["train", "--model", "ngram", *TINY["ngram"], "--data", str(corpus), "--steps", "2",
                 "--out", str(out), "--quiet", *extra])


def test_out_that_is_a_file_is_a_one_line_error_and_the_file_is_kept(corpus, tmp_path, capsys):
    f = tmp_path / "README.md"
    f.write_text("my notes\n")
    one_line_error(capsys, _train(corpus, f), 2, f"--out {f} is a file, not a directory")
    assert f.read_text() == "my notes\n"
    one_line_error(capsys, _train(corpus, f / "run"), 2, "is a file, so")
    assert f.read_text() == "my notes\n"


def test_out_with_missing_parents_is_created(corpus, tmp_path):
    assert _train(corpus, tmp_path / "a" / "b" / "c") == 0
    assert (tmp_path / "a" / "b" / "c" / "checkpoint.npz").is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_an_unwritable_folder_is_a_one_line_error(corpus, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        one_line_error(capsys, _train(corpus, locked / "run"), 2, "permission denied")
    finally:
        locked.chmod(0o700)


def test_checkpoint_that_is_a_folder_and_data_that_is_missing(corpus, tmp_path, capsys):
    one_line_error(capsys, main(["sample", "--checkpoint", str(tmp_path)]), 2, "no such checkpoint")
    one_line_error(capsys, main(["train", "--model", "ngram", "--data", str(tmp_path / "none.txt"), "--out",
                                 str(tmp_path / "r"), "--quiet"]), 2, "no such file")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(corpus, tmp_path, umask):
    old = os.umask(umask)
    try:
        assert _train(corpus, tmp_path / "run") == 0
    finally:
        os.umask(old)
    for name in ("checkpoint.npz", "metrics.json", "loss.png"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_fast_without_a_fast_path_is_refused_before_anything_is_written(corpus, tmp_path, capsys, monkeypatch):
    import minilm.fast.training

    monkeypatch.setattr(minilm.fast.training, "attach", lambda s: None)
    one_line_error(capsys, _train(corpus, tmp_path / "run", "--fast"), 2, "--fast: there is no fast path")
    assert not (tmp_path / "run").exists()


def test_threads_are_chosen_from_the_products_or_given(monkeypatch, corpus, tmp_path, capsys):
    small = {"W": np.zeros((64, 256))}
    assert threads.choose(small, 1024)[0] == 1  # 16.8M multiply-adds
    big = {"W": np.zeros((768, 3072))}
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert threads.choose(big, 1024) == (2, threads.choose(big, 1024)[1])
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1.9, 1.0, 1.0))
    n, why = threads.choose(big, 1024)
    assert n == 1 and "load average 1.9" in why
    assert threads.choose(big, 1024, requested=3)[0] == 3
    one_line_error(capsys, _train(corpus, tmp_path / "run", "--threads", "0"), 2, "--threads must be a positive")


def test_sample_from_a_model_without_the_causal_mask_recomputes(corpus, tmp_path, capsys):
    out = tmp_path / "nomask"
    assert main(["train", "--model", "transformer", *TINY["transformer"], "--no-causal-mask", "--data", str(corpus),
                 "--steps", "2", "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    texts = []
    for cache in ("--cache", "--no-cache"):  # the cache would be wrong here: both recompute, both give the same
        assert main(["sample", "--checkpoint", str(out / "checkpoint.npz"), "--prompt", "the ", "--tokens", "20",
                     cache]) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] == texts[1] and texts[0].startswith("the ")


def test_classroom_paths_are_one_line_errors(tmp_path, capsys):
    f = tmp_path / "notes.txt"
    f.write_text("mine\n")
    for argv, match in ((["exercise", "make", str(f)], "is a file, not a directory"),
                        (["exercise", "check", str(f)], "is not a folder"),
                        (["exercise", "check", str(tmp_path), "--json", str(tmp_path / "no" / "g.json")],
                         "does not exist")):
        code = main(argv)
        out, err = capsys.readouterr()
        lines = (out + err).strip().splitlines()
        assert code == 2 and len(lines) == 1 and match in lines[0], (argv, out, err)
    assert f.read_text() == "mine\n"
