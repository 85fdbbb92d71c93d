"""The number converters against hand-derived spellings, their parsers, and the translation data."""

import numpy as np
import pytest

from minilm.tasks.numbers import (
    BOS,
    EOS,
    LIMIT,
    chinese_to_int,
    decode_target,
    encode_numbers,
    english_join,
    english_to_int,
    english_tokens,
    int_to_chinese,
    int_to_english,
    split_numbers,
    vocabularies,
)
from minilm.tasks.vocab import PAD, Vocab, pad_batch

# Each spelling written out by hand from the rules in the module docstring.
HAND = [
    (0, "zero", "零"),
    (7, "seven", "七"),
    (10, "ten", "十"),  # bare 十 at the start
    (11, "eleven", "十一"),
    (15, "fifteen", "十五"),
    (19, "nineteen", "十九"),
    (20, "twenty", "二十"),
    (21, "twenty-one", "二十一"),
    (42, "forty-two", "四十二"),
    (99, "ninety-nine", "九十九"),
    (100, "one hundred", "一百"),
    (101, "one hundred and one", "一百零一"),  # one 零 for the zero tens
    (110, "one hundred and ten", "一百一十"),  # 一十 inside a number
    (115, "one hundred and fifteen", "一百一十五"),
    (200, "two hundred", "二百"),  # 二, never 两
    (342, "three hundred and forty-two", "三百四十二"),
    (1000, "one thousand", "一千"),
    (1001, "one thousand and one", "一千零一"),  # one 零 for a run of two zeros
    (1010, "one thousand and ten", "一千零一十"),
    (1100, "one thousand one hundred", "一千一百"),  # no 零 at the end
    (2002, "two thousand and two", "二千零二"),
    (3042, "three thousand and forty-two", "三千零四十二"),
    (3142, "three thousand one hundred and forty-two", "三千一百四十二"),
    (3402, "three thousand four hundred and two", "三千四百零二"),
    (10000, "ten thousand", "一万"),
    (10010, "ten thousand and ten", "一万零一十"),  # 零 across the 万 boundary, then 一十
    (10200, "ten thousand two hundred", "一万零二百"),
    (11000, "eleven thousand", "一万一千"),
    (12345, "twelve thousand three hundred and forty-five", "一万二千三百四十五"),
    (40050, "forty thousand and fifty", "四万零五十"),
    (45600, "forty-five thousand six hundred", "四万五千六百"),
    (99999, "ninety-nine thousand nine hundred and ninety-nine", "九万九千九百九十九"),
    (100000, "one hundred thousand", "十万"),  # leading 一十 -> 十 also before 万
    (100005, "one hundred thousand and five", "十万零五"),
    (110000, "one hundred and ten thousand", "十一万"),
    (150000, "one hundred and fifty thousand", "十五万"),
    (210000, "two hundred and ten thousand", "二十一万"),
    (1000100, "one million one hundred", "一百万零一百"),
    (1001000, "one million one thousand", "一百万一千"),
    (1100000, "one million one hundred thousand", "一百一十万"),  # 一十 not at the start
    (20000000, "twenty million", "二千万"),
    (100000005, "one hundred million and five", "一亿零五"),  # a whole zero section: one 零
    (100010000, "one hundred million ten thousand", "一亿零一万"),
    (1000000000, "one billion", "十亿"),
    (999999999999, "nine hundred and ninety-nine billion nine hundred and ninety-nine million "
     "nine hundred and ninety-nine thousand nine hundred and ninety-nine",
     "九千九百九十九亿九千九百九十九万九千九百九十九"),
]


@pytest.mark.parametrize("n, english, chinese", HAND)
def test_converters_match_hand_derived_spellings(n, english, chinese):
    assert int_to_english(n) == english
    assert int_to_chinese(n) == chinese
    assert english_to_int(english) == n
    assert chinese_to_int(chinese) == n


def test_parsers_invert_converters_for_every_number_of_the_task():
    """Chinese: exhaustive on the task's range 0 .. 99,999; English: 0 .. 9,999 and every 7th number
    above; both on a seeded sample of the converters' full range.

    Along the way: 零 never doubles and never ends a number, and bare 十 starts exactly 10..19.
    """
    sample = [int(n) for n in np.random.default_rng(0).integers(0, LIMIT, 2000)]
    numbers = list(range(100_000)) + sample
    chinese = [int_to_chinese(n) for n in numbers]
    assert [chinese_to_int(c) for c in chinese] == numbers
    numbers = list(range(10_000)) + list(range(10_000, 100_000, 7)) + sample
    assert [english_to_int(int_to_english(n)) for n in numbers] == numbers
    for n, c in zip(range(1, 100_000), chinese[1:100_000], strict=True):
        assert "零零" not in c and not c.endswith("零"), (n, c)
        assert c.startswith("十") == (10 <= n <= 19), (n, c)


def test_chinese_parser_accepts_liang_and_rejects_malformed_text():
    assert chinese_to_int("两千") == 2000 and chinese_to_int("两万零五") == 20005
    for bad, what in [("", "empty"), ("一二", "two digits"), ("百", "needs a digit"), ("一十一百", "out of order"),
                      ("三千x", "unknown Chinese numeral 'x'"), ("万", "misplaced 万"), ("一万一万", "misplaced 万")]:
        with pytest.raises(ValueError, match=what):
            chinese_to_int(bad)


def test_english_parser_rejects_malformed_text():
    for bad, what in [("", "empty"), ("twenty one", "two number words"), ("twelve hundred", "hundred"),
                      ("nineteen-five", "'-' must follow"), ("thousand", "misplaced"),
                      ("one thousand one million", "misplaced"), ("three fourty", "unknown English number word"),
                      ("one hundred and", "'and' cannot"), ("forty-", "cannot end"), ("42", "only letters"),
                      ("one zero", "'zero' can only stand alone")]:
        with pytest.raises(ValueError, match=what):
            english_to_int(bad)


def test_converters_reject_out_of_range_and_non_integers():
    for bad in [-1, LIMIT, 3.0, True, "7"]:
        with pytest.raises(ValueError):
            int_to_chinese(bad)
        with pytest.raises(ValueError):
            int_to_english(bad)


def test_english_tokens_round_trip():
    text = "forty-two thousand and seven"
    assert english_tokens(text) == ["forty", "-", "two", "thousand", "and", "seven"]
    assert english_join(english_tokens(text)) == text


def test_split_is_deterministic_disjoint_and_complete():
    train, held = split_numbers(9_999, held_out=0.1, seed=3)
    assert len(held) == 1000 and len(train) == 9000
    assert not set(train.tolist()) & set(held.tolist())
    assert sorted(train.tolist() + held.tolist()) == list(range(10_000))
    train2, held2 = split_numbers(9_999, held_out=0.1, seed=3)
    np.testing.assert_array_equal(held, held2)
    assert not np.array_equal(held, split_numbers(9_999, held_out=0.1, seed=4)[1])
    with pytest.raises(ValueError, match="held_out"):
        split_numbers(99, held_out=1.0)


def test_encode_numbers_pads_and_frames_the_target():
    src_v, tgt_v = vocabularies("en-zh")
    src, tgt = encode_numbers([3042, 10], src_v, tgt_v, "en-zh")
    assert src.dtype == np.int64 and tgt.dtype == np.int64
    assert src_v.decode(src[0]) == ["three", "thousand", "and", "forty", "-", "two"]
    assert src_v.decode(src[1][:1]) == ["ten"] and (src[1][1:] == PAD).all()
    assert tgt[0, 0] == BOS and tgt[0, 7] == EOS and tgt_v.decode(tgt[0, 1:7]) == list("三千零四十二")
    assert tgt[1].tolist() == [BOS, tgt_v.ids["十"], EOS] + [PAD] * 5
    assert decode_target(tgt[0, 1:], tgt_v, "zh") == "三千零四十二"
    src, tgt = encode_numbers([3042], *vocabularies("zh-en"), "zh-en")
    assert decode_target(tgt[0], vocabularies("zh-en")[1], "en") == "three thousand and forty-two"


def test_shared_vocabulary_holds_both_languages():
    src_v, tgt_v = vocabularies("en-zh", shared=True)
    assert src_v is tgt_v and "thousand" in src_v.ids and "万" in src_v.ids
    with pytest.raises(ValueError, match="direction"):
        vocabularies("fr-zh")


def test_vocab_errors_name_the_problem():
    v = Vocab(["<pad>", "a", "b"])
    with pytest.raises(ValueError, match="unknown token 'c'"):
        v.encode(["a", "c"])
    with pytest.raises(ValueError, match="token id 3 is outside"):
        v.decode([3])
    with pytest.raises(ValueError, match="repeated"):
        Vocab(["a", "a"])
    with pytest.raises(ValueError, match="more than the padded length"):
        pad_batch([[1, 2, 3]], length=2)
