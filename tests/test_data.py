"""Tokenizers, the split, and every batch maker: each target where it belongs, exactly once."""

import json

import numpy as np
import pytest

from minilm.training import data
from minilm.training.data import CharTokenizer, WordTokenizer, tokenizer_from_dict


def test_char_tokenizer_round_trips_any_utf8():
    text = "语言模型 (language model) — 自注意力! é\n"
    tok = CharTokenizer.build(text)
    ids = tok.encode(text)
    assert ids.dtype == np.int64 and len(ids) == len(text)
    assert tok.decode(ids) == text
    assert tok.vocab_size == len(set(text))
    assert tok.itos == sorted(set(text))


def test_char_tokenizer_specials_are_single_tokens_after_the_characters():
    tok = CharTokenizer.build("abc", specials=["[MASK]"])
    assert tok.vocab_size == 4 and tok.stoi["[MASK]"] == 3
    ids = tok.encode("a[MASK]c")
    assert ids.tolist() == [0, 3, 2]
    assert tok.decode(ids) == "a[MASK]c"


def test_char_tokenizer_names_an_unknown_character():
    tok = CharTokenizer.build("abc")
    with pytest.raises(ValueError, match=r"'语'.*U\+8BED.*not in the vocabulary"):
        tok.encode("a语")


def test_word_tokenizer_caps_the_vocabulary_and_maps_the_rest_to_unk():
    text = "the cat sat on the mat . the cat ran .\nthe end"
    tok = WordTokenizer.build(text, max_vocab=4)  # <unk> + the 3 most frequent: the, cat, .
    assert tok.itos == ["<unk>", "the", "cat", "."]
    ids = tok.encode("the dog sat .")
    assert ids.tolist() == [1, 0, 0, 3]
    assert tok.decode(ids) == "the <unk> <unk> ."


def test_word_tokenizer_splits_punctuation_newlines_and_chinese_characters():
    tok = WordTokenizer.build("x", max_vocab=10)
    assert tok.pieces("Hello, world!\n语言模型 v2") == ["Hello", ",", "world", "!", "\n", "语", "言", "模", "型", "v2"]
    full = WordTokenizer.build("a b\nc", max_vocab=100)
    assert full.decode(full.encode("a b\nc a")) == "a b\nc a"


def test_tokenizers_survive_json():
    for tok in (CharTokenizer.build("héllo 世界", specials=["[MASK]"]),
                WordTokenizer.build("one two two three", max_vocab=3, specials=["[MASK]"])):
        back = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
        assert type(back) is type(tok) and back.itos == tok.itos and back.specials == tok.specials
    with pytest.raises(ValueError, match="not a saved tokenizer"):
        tokenizer_from_dict({"kind": "bytes"})


def test_build_rejects_empty_text_and_tiny_caps():
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer.build("")
    with pytest.raises(ValueError, match="max_vocab"):
        WordTokenizer.build("a b", max_vocab=1)


def test_split_holds_out_the_last_tenth():
    ids = np.arange(100)
    train, val = data.split(ids)
    assert train.tolist() == list(range(90)) and val.tolist() == list(range(90, 100))
    with pytest.raises(ValueError, match="val_fraction"):
        data.split(ids, 1.0)


def test_random_windows_are_contiguous_and_shifted(rng):
    ids = np.arange(1000) * 7 % 101
    x, y = data.random_windows(ids, 8, 16, rng)
    assert x.shape == y.shape == (8, 16)
    for xr, yr in zip(x, y, strict=True):
        start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(ids, 16) == xr, axis=1))[0])
        assert yr.tolist() == ids[start + 1 : start + 17].tolist()
    with pytest.raises(ValueError, match="block_size"):
        data.random_windows(ids[:16], 1, 16, rng)


def test_eval_windows_predict_every_token_exactly_once():
    ids = np.arange(103)
    xs, ys = zip(*data.eval_windows(ids, block_size=10, batch_size=3), strict=True)
    assert np.concatenate([y.reshape(-1) for y in ys]).tolist() == list(range(1, 103))
    assert np.concatenate([x.reshape(-1) for x in xs]).tolist() == list(range(0, 102))
    assert max(x.shape[0] for x in xs) == 3


def test_ngram_contexts_hold_the_n_previous_tokens(rng):
    ids = np.arange(50)
    ctx, y = data.ngram_contexts(ids, 3)
    assert ctx.shape == (47, 3) and ctx[0].tolist() == [0, 1, 2] and y[0] == 3
    assert np.array_equal(ctx[:, -1] + 1, y)
    c, t = data.random_contexts(ids, 4, 32, rng)
    assert c.shape == (32, 4) and np.array_equal(c[:, -1] + 1, t) and np.array_equal(c[:, 0] + 4, t)


def test_stream_windows_continue_row_by_row_and_restart():
    ids = np.arange(4 * 25)  # 4 streams of 25: (25 - 1) // 6 = 4 windows per pass
    x0, y0, fresh0 = data.stream_windows(ids, 4, 6, 0)
    x1, y1, fresh1 = data.stream_windows(ids, 4, 6, 1)
    assert fresh0 and not fresh1
    assert x0[:, 0].tolist() == [0, 25, 50, 75]
    assert np.array_equal(x1[:, 0], x0[:, -1] + 1)  # row b of batch 1 continues row b of batch 0
    assert np.array_equal(y0, x0 + 1)
    x4, _, fresh4 = data.stream_windows(ids, 4, 6, 4)
    assert fresh4 and np.array_equal(x4, x0)


def test_eval_streams_cover_the_split_once():
    ids = np.arange(1, 48)
    X, Y, tx, ty = data.eval_streams(ids, 5)
    assert np.array_equal(Y, X + 1) and np.array_equal(ty, tx + 1)
    assert sorted(np.concatenate([Y.reshape(-1), ty.reshape(-1)]).tolist()) == list(range(2, 48))
    assert tx[0, 0] == X[-1, -1] + 1  # the tail continues the last stream
