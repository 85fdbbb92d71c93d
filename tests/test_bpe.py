"""Byte-level BPE: exact round trips, incremental training equal to recounting, GPT-2 files, Hugging Face ids."""

import json
import math
from collections import Counter

import numpy as np
import pytest

from minilm.bpe import BYTE_TO_CHAR, GPT2_BYTE_ORDER, GPT2_PATTERN, BPETokenizer
from minilm.training.data import tokenizer_from_dict

ENGLISH = (
    "A language model gives a sentence a probability. Given the words so far, it predicts the next one.\n"
    "Self-attention lets every position look at every other position of the sequence; multi-head attention "
    "does this in several subspaces at once and concatenates the results.\n"
    "Perplexity is the exponential of the mean negative log-likelihood: the lower, the better. "
    "We've trained 12 models, they'll run in 3.5 seconds, and it's 2003's idea (Bengio et al.).\n"
)
CHINESE = (
    "语言模型为一个句子给出概率。给定前面的词，模型预测下一个词。\n"
    "自注意力让每个位置都能看到序列中的其他位置；多头注意力把表示分成几个子空间，分别计算，再拼接起来。\n"
    "困惑度是平均负对数似然的指数，数值越低，模型越好。2003年，神经网络语言模型第一次用词向量表示上下文。\n"
    "语境学习指的是：模型只凭提示里的几个例子就能完成新的任务，而不更新任何参数。\u3000这就是“上下文学习”。\n"
)
MIXED = (
    "GPT-2 用字节级 BPE 🤖，所以 emoji 👍🏽 和中文都能编码！café naïve Ωμέγα\n"
    "tabs\t\tand   spaces  \r\n"
    "family 👨‍👩‍👧 flags 🇨🇳🇬🇧, zero\u200bwidth, nbsp\u00a0here… ½ ² ٣ \U0001f600\U0001f600!!\n"
)


def corpus(repeat: int = 3) -> str:
    return (ENGLISH + CHINESE + MIXED) * repeat


@pytest.fixture(scope="module")
def trained():
    return BPETokenizer.train(corpus(), 256 + 300)


# ---- a reference trainer: recount every pair of the corpus for each merge -----------------------------------


def naive_train(text: str, n_merges: int) -> list[tuple[bytes, bytes]]:
    words = [[bytes([b]) for b in w.encode("utf-8")] for w in GPT2_PATTERN.findall(text)]
    merges = []
    for _ in range(n_merges):
        counts = Counter(p for w in words for p in zip(w[:-1], w[1:], strict=True))
        if not counts:
            break
        top = max(counts.values())
        # ties: the smallest (left id, right id); ids are GPT-2's for the bytes, then the merges in order
        ids = {bytes([b]): i for i, b in enumerate(GPT2_BYTE_ORDER)}
        for a, b in merges:
            ids.setdefault(a + b, len(ids))
        a, b = min((p for p, c in counts.items() if c == top), key=lambda p: (ids[p[0]], ids[p[1]]))
        merges.append((a, b))
        for w in words:
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i : i + 2] = [a + b]
                i += 1
    return merges


def test_incremental_training_makes_the_merges_of_recounting():
    text = corpus(2)
    tok = BPETokenizer.train(text, 256 + 120)
    got = [(tok.vocab[a], tok.vocab[b]) for a, b in tok.merges]
    assert got == naive_train(text, 120)


def test_the_first_merges_by_hand():
    # "aaab aaab": words "aaab", " aaab"; pairs (a,a) x4, (a,b) x2, (" ",a) x1 -> (a,a) first;
    # then "aa a b" / " aa a b": (aa,a) x2 and (a,b) x2 tie; GPT-2's ids: a 64, b 65, space 220, aa 256,
    # so (a,b) = (64, 65) < (256, 64) wins
    tok = BPETokenizer.train("aaab aaab", 256 + 3)
    assert (tok.id_of[b"a"], tok.id_of[b"b"], tok.id_of[b" "]) == (64, 65, 220)
    assert [(tok.vocab[a], tok.vocab[b]) for a, b in tok.merges] == [(b"a", b"a"), (b"a", b"b"), (b"aa", b"ab")]
    assert tok.encode("aaab").tolist() == [258]
    assert tok.encode(" aaab").tolist() == [220, 258]


def test_training_stops_when_no_pair_is_left():
    tok = BPETokenizer.train("ab", 1000)
    assert tok.vocab_size == 257 and tok.encode("ab").tolist() == [256]


# ---- round trips ----------------------------------------------------------------------------------------------


def random_unicode(rng, n: int) -> str:
    """Code points from every plane, surrogates excepted (they cannot be UTF-8)."""
    cps = rng.integers(0, 0x110000, size=n)
    cps = np.where((cps >= 0xD800) & (cps < 0xE000), cps - 0x800, cps)
    return "".join(chr(c) for c in cps)


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, MIXED, "", " ", "\n\n\n", "   x", "\x00\x01\x7f", "a" * 500])
def test_round_trip(trained, text):
    ids = trained.encode(text)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert trained.decode(ids) == text


def test_round_trip_of_arbitrary_code_points(trained):
    rng = np.random.default_rng(0)
    for _ in range(20):
        text = random_unicode(rng, 200)
        assert trained.decode(trained.encode(text)) == text
    bytes_only = BPETokenizer.train("x", 256)
    assert bytes_only.decode(bytes_only.encode("中🤖")) == "中🤖"
    assert [bytes_only.vocab[i] for i in bytes_only.encode("中🤖")] == [bytes([b]) for b in "中🤖".encode()]


def test_merges_shorten_the_text(trained):
    for text in (ENGLISH, CHINESE, MIXED):
        assert len(trained.encode(text)) < 0.6 * len(text.encode("utf-8"))


def test_characters_split_across_tokens_count_once():
    tok = BPETokenizer.train("x", 256)  # bytes only: "中" is three tokens
    ids = tok.encode("a中🤖")
    assert len(ids) == 1 + 3 + 4
    assert tok.n_chars(ids) == 3 and tok.n_chars(ids[1:]) == 2 and tok.n_chars(ids[2:]) == 1


def test_lone_surrogates_are_a_value_error(trained):
    with pytest.raises(ValueError, match="not valid Unicode"):
        trained.encode("ok \ud800")


def test_specials_are_whole_tokens():
    tok = BPETokenizer.train(ENGLISH, 300, specials=("[MASK]",))
    assert tok.vocab_size == 300 and tok.stoi["[MASK]"] == 299
    ids = tok.encode("the [MASK] is")
    assert 299 in ids.tolist() and tok.decode(ids) == "the [MASK] is"
    seen = BPETokenizer.train("[MASK]" * 50 + ENGLISH, 300, specials=("[MASK]",))
    assert seen.merges == tok.merges  # a special token in the training text teaches no merges


# ---- saving --------------------------------------------------------------------------------------------------


def test_to_dict_survives_json(trained):
    d = json.loads(json.dumps(trained.to_dict()))
    back = tokenizer_from_dict(d)
    assert isinstance(back, BPETokenizer) and back.vocab == trained.vocab and back.merges == trained.merges
    for text in (ENGLISH, CHINESE, MIXED):
        assert back.encode(text).tolist() == trained.encode(text).tolist()


def test_gpt2_files_round_trip(trained, tmp_path):
    trained.save_hf(tmp_path)
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    assert vocab[BYTE_TO_CHAR[ord(" ")] + "t"] == trained.id_of[b" t"] and "Ġ" == BYTE_TO_CHAR[32]
    lines = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "#version: 0.2" and len(lines) == 1 + len(trained.merges)
    back = BPETokenizer.load_hf(tmp_path)
    assert back.vocab == trained.vocab and back.merges == trained.merges


@pytest.mark.parametrize("breakage, match", [
    (lambda d: (d / "merges.txt").unlink(), "no merges.txt"),
    (lambda d: (d / "vocab.json").write_text("{"), "not JSON"),
    (lambda d: (d / "vocab.json").write_text('{"a": 0, "b": 2}'), "ids must be"),
    (lambda d: (d / "merges.txt").write_text("#version: 0.2\nĠ qq\n"), "not two tokens"),
])
def test_broken_gpt2_files_are_value_errors(trained, tmp_path, breakage, match):
    trained.save_hf(tmp_path)
    breakage(tmp_path)
    with pytest.raises(ValueError, match=match):
        BPETokenizer.load_hf(tmp_path)


def test_specials_survive_saving(tmp_path):
    tok = BPETokenizer.train(ENGLISH, 300, specials=("<|endoftext|>",))
    assert tok.stoi["<|endoftext|>"] == 299  # last, as in GPT-2's vocabulary
    text = "one<|endoftext|>two"
    tok.save_hf(tmp_path)
    for back in (tokenizer_from_dict(json.loads(json.dumps(tok.to_dict()))), BPETokenizer.load_hf(tmp_path)):
        assert back.vocab == tok.vocab and back.specials == ["<|endoftext|>"]
        assert back.encode(text).tolist() == tok.encode(text).tolist() and 299 in tok.encode(text).tolist()


def test_too_small_a_vocabulary_is_a_value_error():
    with pytest.raises(ValueError, match="vocab_size >= 256"):
        BPETokenizer.train(ENGLISH, 200)


# ---- against Hugging Face tokenizers ------------------------------------------------------------------------

TEXTS = {"english": ENGLISH, "chinese": CHINESE, "mixed": MIXED,
         "unseen": "Attention is all you need? 注意力就是一切吗？ 🚀🚀 '''quoted''' 3.14159 ｆｕｌｌｗｉｄｔｈ\n"}


def test_training_makes_the_merges_of_hugging_face(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.ByteLevelBPETokenizer()
    hf.train_from_iterator([corpus()], vocab_size=256 + 300, min_frequency=1, show_progress=False)
    hf.save_model(str(tmp_path))
    theirs = BPETokenizer.load_hf(tmp_path)
    ours = BPETokenizer.train(corpus(), 256 + 300)
    assert ours.vocab == theirs.vocab and ours.merges == theirs.merges


@pytest.mark.parametrize("kind", TEXTS)
def test_ids_equal_hugging_face_on_its_own_files(tmp_path, kind):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.ByteLevelBPETokenizer()
    hf.train_from_iterator([corpus()], vocab_size=256 + 300, min_frequency=2, show_progress=False)
    hf.save_model(str(tmp_path))
    ours = BPETokenizer.load_hf(tmp_path)
    assert ours.vocab_size == hf.get_vocab_size() and len(ours.merges) > 100
    text = TEXTS[kind]
    want = hf.encode(text).ids
    got = ours.encode(text).tolist()
    assert got == want
    assert len(set(got)) > 10 and max(got) >= 256  # learned merges are in use, not bytes only
    assert ours.decode(got) == text


def test_hugging_face_files_with_specials_before_the_bytes(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    hf = tokenizers.ByteLevelBPETokenizer()
    hf.train_from_iterator([corpus()], vocab_size=256 + 200, min_frequency=1, show_progress=False,
                           special_tokens=["<s>", "<pad>", "</s>"])
    hf.save_model(str(tmp_path))
    ours = BPETokenizer.load_hf(tmp_path)
    assert ours.specials == ["<s>", "<pad>", "</s>"] and [ours.stoi[s] for s in ours.specials] == [0, 1, 2]
    for text in TEXTS.values():
        assert ours.encode(text).tolist() == hf.encode(text).ids
    assert ours.encode("<s>hi</s>").tolist() == [0, *hf.encode("hi").ids, 2]


@pytest.mark.parametrize("kind", TEXTS)
def test_hugging_face_reads_our_files(trained, tmp_path, kind):
    tokenizers = pytest.importorskip("tokenizers")
    trained.save_hf(tmp_path)
    hf = tokenizers.ByteLevelBPETokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    text = TEXTS[kind]
    assert hf.encode(text).ids == trained.encode(text).tolist()
    assert hf.decode(trained.encode(text).tolist()) == text


# ---- a BPE model through the command line --------------------------------------------------------------------


def test_train_sample_eval_with_bpe_and_bits_per_character(tmp_path, capsys):
    pytest.importorskip("minilm.transformer")
    from minilm.cli import main
    from minilm.training import adapters, checkpoint

    data = tmp_path / "text.txt"
    data.write_text(corpus(6), encoding="utf-8")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--tokenizer", "bpe", "--vocab-size", "400",
                 "--steps", "20", "--layers", "1", "--heads", "2", "--width", "16", "--block-size", "16",
                 "--quiet"]) == 0
    ck = out / "checkpoint.npz"
    saved = checkpoint.load(ck)["meta"]["tokenizer"]
    assert saved["kind"] == "bpe" and len(saved["vocab"]) == 400
    capsys.readouterr()
    assert main(["sample", "--checkpoint", str(ck), "--prompt", "语言模型 🤖", "--tokens", "12"]) == 0
    assert capsys.readouterr().out.startswith("语言模型 🤖")

    # bits per character: all the nats of the predicted tokens over the characters they spell
    probe = tmp_path / "probe.txt"
    text = "\n" + CHINESE + MIXED.replace("\r\n", "\n")  # the first token, "\n", is never predicted
    probe.write_text(text, encoding="utf-8")
    run = adapters.load_run(ck)
    ids = run.tokenizer.encode(text)
    r = adapters.evaluate_run(run, ids)
    n_chars = len(text) - 1
    assert r["tokens"] == len(ids) - 1 and n_chars != r["tokens"]  # per token and per character differ
    assert r["bits_per_char"] == pytest.approx(r["loss"] * r["tokens"] / (n_chars * math.log(2)), rel=1e-12)
    assert main(["eval", "--checkpoint", str(ck), "--data", str(probe)]) == 0
    assert f"bits/char {r['bits_per_char']:.4f}" in capsys.readouterr().out


def test_bpe_vocab_size_below_the_bytes_is_a_one_line_error(tmp_path, capsys):
    pytest.importorskip("minilm.transformer")
    from minilm.cli import main

    code = main(["train", "--tokenizer", "bpe", "--vocab-size", "100", "--steps", "1", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--vocab-size must be an integer >= 256" in err[0]


def test_a_resumed_bpe_run_ends_where_one_run_ends(tmp_path):
    pytest.importorskip("minilm.transformer")
    from minilm.cli import main
    from minilm.training import checkpoint

    data = tmp_path / "text.txt"
    data.write_text(corpus(6), encoding="utf-8")
    common = ["--data", str(data), "--tokenizer", "bpe", "--vocab-size", "300", "--steps", "6", "--layers", "1",
              "--heads", "2", "--width", "16", "--block-size", "16", "--quiet"]
    assert main(["train", *common, "--out", str(tmp_path / "a"), "--stop-after", "3"]) == 0
    assert main(["train", "--resume", "--out", str(tmp_path / "a"), "--quiet"]) == 0  # the checkpoint's tokenizer
    assert main(["train", *common, "--out", str(tmp_path / "b")]) == 0
    a, b = (checkpoint.load(tmp_path / d / "checkpoint.npz") for d in "ab")
    assert a["meta"]["tokenizer"] == b["meta"]["tokenizer"]
    assert all(np.array_equal(a["params"][k], b["params"][k]) for k in b["params"])
