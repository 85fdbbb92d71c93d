"""English number words <-> Chinese numerals: a translation task (§6.1 机器翻译, machine translation).

    3042    "three thousand and forty-two"   <->   "三千零四十二"
    10010   "ten thousand and ten"           <->   "一万零一十"

Both sides are generated from the integer, so the data are exact, unlimited
and free.  The task needs attention: English groups digits by thousands,
Chinese by ten-thousands (万, 亿), so "forty-five thousand" becomes 四万五千 —
the 万 the decoder writes second comes from the word "thousand" that the
encoder read third.

English (British usage, the same everywhere in minilm):
  * "and" after "hundred" when something follows: 342 -> "three hundred and forty-two";
  * "and" before a last group below one hundred that follows a larger group:
    3042 -> "three thousand and forty-two", but 3142 -> "three thousand one hundred and forty-two";
  * tens and units joined by a hyphen ("forty-two"); "one hundred", never "a hundred";
  * short scale: thousand, million (10^6), billion (10^9).

Chinese (the standard written form with the lower-case digits 一二三…):
  * sections of four digits, closed by 万 (10^4) and 亿 (10^8);
  * 零 rule: one 零 for any run of zeros between two non-zero digits (1001 -> 一千零一,
    100005 -> 十万零五), none at the end (1100 -> 一千一百);
  * 十/一十 rule: a number whose leading part is 10–19 starts with bare 十
    (10 -> 十, 15 -> 十五, 150000 -> 十五万); everywhere else it is 一十
    (110 -> 一百一十, 10010 -> 一万零一十);
  * 2 is always 二 (二千, 二万): the colloquial 两 is accepted by the parser but
    never generated, so every number has exactly one spelling.

The converters cover 0 <= n < 10^12; the translation task uses 0 .. 99,999 by
default, split once into training and held-out numbers that never meet.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from minilm.tasks.vocab import PAD, Vocab, pad_batch

LIMIT = 10**12  # the converters take 0 <= n < LIMIT

ONES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
SCALES = [(10**9, "billion"), (10**6, "million"), (10**3, "thousand")]
SCALE_OF = {name: s for s, name in SCALES}

DIGITS = "零一二三四五六七八九"
UNITS = {"十": 10, "百": 100, "千": 1000}
SECTIONS = {"万": 10**4, "亿": 10**8}


def _check_int(n) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer):
        raise ValueError(f"expected an integer, got {type(n).__name__}")
    if not 0 <= n < LIMIT:
        raise ValueError(f"number {n} is outside the range 0 .. {LIMIT - 1:,}")
    return int(n)


# ---- English ---------------------------------------------------------------------------------------------

def _english_below_100(n: int) -> str:
    return ONES[n] if n < 20 else TENS[n // 10] + (f"-{ONES[n % 10]}" if n % 10 else "")


@lru_cache(maxsize=1000)  # a group of three digits is spelled the same wherever it stands
def _english_below_1000(n: int) -> str:
    h, r = divmod(n, 100)
    if not h:
        return _english_below_100(r)
    return f"{ONES[h]} hundred" + (f" and {_english_below_100(r)}" if r else "")


def int_to_english(n: int) -> str:
    """3042 -> "three thousand and forty-two" (British "and"; see the module docstring)."""
    n = _check_int(n)
    if n == 0:
        return "zero"
    words = []
    for scale, name in SCALES:
        group = n // scale % 1000
        if group:
            words.append(f"{_english_below_1000(group)} {name}")
    last = n % 1000
    if last:
        if words and last < 100:
            words.append("and")
        words.append(_english_below_1000(last))
    return " ".join(words)


def english_tokens(text: str) -> list[str]:
    """Words and hyphens: "forty-two thousand" -> ["forty", "-", "two", "thousand"]."""
    text = text.strip().lower()
    bad = re.sub(r"[a-z\- ]", "", text)
    if bad:
        raise ValueError(f"English number words may hold only letters, spaces and '-', got {bad[0]!r} in {text!r}")
    return re.findall(r"[a-z]+|-", text)


def english_join(tokens: Sequence[str]) -> str:
    """The inverse of english_tokens on canonical text: spaces between words, none around '-'."""
    return " ".join(tokens).replace(" - ", "-")


_SMALL = {w: i for i, w in enumerate(ONES)} | {w: 10 * i for i, w in enumerate(TENS) if w}


def english_to_int(text: str) -> int:
    """Parse English number words: "three thousand and forty-two" -> 3042.

    Accepts the canonical spelling of int_to_english (and omits no check that
    would let a different number through): scales must decrease, "hundred"
    needs one to nine before it, a hyphen joins a tens word to a units word.
    """
    tokens = english_tokens(text)
    if not tokens:
        raise ValueError("empty English number")
    total, group, last_scale, prev = 0, 0, LIMIT, None
    for i, w in enumerate(tokens):
        if w in _SMALL:
            v = _SMALL[w]
            if v == 0 and len(tokens) > 1:
                raise ValueError(f"'zero' can only stand alone, got {text!r}")
            if prev == "-" and not (tokens[i - 2] in TENS and 1 <= v <= 9):
                raise ValueError(f"'-' must join a tens word to one..nine in {text!r}")
            if group % 100 and prev != "-":
                raise ValueError(f"two number words in a row ({prev!r} {w!r}) in {text!r}")
            group += v
        elif w == "-":
            if prev not in TENS[2:]:
                raise ValueError(f"'-' must follow a tens word (twenty .. ninety) in {text!r}")
        elif w == "hundred":
            if not 1 <= group <= 9:
                raise ValueError(f"'hundred' needs one .. nine before it in {text!r}")
            group *= 100
        elif w == "and":
            if prev is None or i == len(tokens) - 1:
                raise ValueError(f"'and' cannot start or end a number: {text!r}")
        elif w in SCALE_OF:
            scale = SCALE_OF[w]
            if not group or scale >= last_scale:
                raise ValueError(f"misplaced {w!r} in {text!r}")
            total += group * scale
            group, last_scale = 0, scale
        else:
            raise ValueError(f"unknown English number word {w!r} in {text!r}")
        prev = w
    if prev == "-":
        raise ValueError(f"a number cannot end with '-': {text!r}")
    return total + group


# ---- Chinese ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=10_000)  # a section of four digits is written the same wherever it stands
def _chinese_section(n: int) -> str:
    """0 < n < 10^4 -> 一千零一十 (1010): one 零 per inner run of zeros, none at the end."""
    out, zero_pending, started = "", False, False
    for d, unit in zip(f"{n:04d}", ["千", "百", "十", ""], strict=True):
        if d == "0":
            zero_pending = started  # a zero after the first digit may need a 零 later
            continue
        if zero_pending:
            out += "零"
        out += DIGITS[int(d)] + unit
        zero_pending, started = False, True
    return out


def int_to_chinese(n: int) -> str:
    """3042 -> "三千零四十二", 10 -> "十", 10010 -> "一万零一十" (rules in the module docstring)."""
    n = _check_int(n)
    if n == 0:
        return "零"
    out, need_zero = "", False
    for sec, name in [(n // 10**8, "亿"), (n // 10**4 % 10**4, "万"), (n % 10**4, "")]:
        if sec == 0:
            need_zero = need_zero or bool(out)  # a whole section of zeros inside the number
            continue
        if out and (need_zero or sec < 1000):  # zeros between this section and the one before
            out += "零"
        out += _chinese_section(sec) + name
        need_zero = False
    return out[1:] if out.startswith("一十") else out  # 一十五万 -> 十五万


def chinese_to_int(text: str) -> int:
    """Parse Chinese numerals: "三千零四十二" -> 3042 (also accepts 两 for 2)."""
    text = text.strip()
    if not text:
        raise ValueError("empty Chinese number")
    high, mid, section, digit = 0, 0, 0, None  # high: >= 亿, mid: 万 part, section: < 10^4
    last_unit = 10**4  # units inside a section must decrease: 千 > 百 > 十
    for ch in text:
        if ch in DIGITS or ch == "两":
            if digit:
                raise ValueError(f"two digits in a row in {text!r}")
            digit = 2 if ch == "两" else DIGITS.index(ch)
        elif ch in UNITS:
            if digit == 0 or (digit is None and (ch != "十" or section)):
                raise ValueError(f"{ch!r} needs a digit before it in {text!r}")
            if UNITS[ch] >= last_unit:
                raise ValueError(f"{ch!r} out of order in {text!r}")
            section += (1 if digit is None else digit) * UNITS[ch]
            digit, last_unit = None, UNITS[ch]
        elif ch in SECTIONS:
            section += digit or 0
            if ch == "万":
                if not section or mid:
                    raise ValueError(f"misplaced 万 in {text!r}")
                mid = section * 10**4
            else:
                if not (section or mid) or high:
                    raise ValueError(f"misplaced 亿 in {text!r}")
                high = (mid + section) * 10**8
                mid = 0
            section, digit, last_unit = 0, None, 10**4
        else:
            raise ValueError(f"unknown Chinese numeral {ch!r} in {text!r}")
    return high + mid + section + (digit or 0)


def chinese_tokens(text: str) -> list[str]:
    """One token per character: "三千零四十二" -> ["三", "千", "零", "四", "十", "二"]."""
    return list(text.strip())


# ---- the translation task ----------------------------------------------------------------------------------

BOS, EOS = 1, 2  # every vocabulary below starts <pad> <bos> <eos>
SPECIALS = ["<pad>", "<bos>", "<eos>"]
ENGLISH_WORDS = sorted(set(ONES + [t for t in TENS if t] + ["hundred", "and", "-"] + [n for _, n in SCALES]))
CHINESE_CHARS = list(DIGITS + "十百千万亿")
DIRECTIONS = ("en-zh", "zh-en")


def vocabularies(direction: str = "en-zh", shared: bool = False) -> tuple[Vocab, Vocab]:
    """(source, target) vocabularies; with ``shared`` both are the same joint list of tokens."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    en, zh = Vocab(SPECIALS + ENGLISH_WORDS), Vocab(SPECIALS + CHINESE_CHARS)
    if shared:
        joint = Vocab(SPECIALS + ENGLISH_WORDS + CHINESE_CHARS)
        return joint, joint
    return (en, zh) if direction == "en-zh" else (zh, en)


def split_numbers(max_number: int = 99_999, held_out: float = 0.1, seed: int = 0):
    """Split 0 .. max_number once, by a seeded permutation, into (train, held_out) sorted int arrays.

    No held-out number is ever a training number: the model is judged on numbers it never saw.
    """
    _check_int(max_number)
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1), got {held_out}")
    perm = np.random.default_rng(seed).permutation(max_number + 1)  # (max_number + 1,)
    k = max(1, round(held_out * (max_number + 1)))
    return np.sort(perm[k:]), np.sort(perm[:k])


def source_text(n: int, direction: str = "en-zh") -> str:
    return int_to_english(n) if direction == "en-zh" else int_to_chinese(n)


def target_text(n: int, direction: str = "en-zh") -> str:
    return int_to_chinese(n) if direction == "en-zh" else int_to_english(n)


def tokenize(text: str, language: str) -> list[str]:
    """Tokens of English ("en") or Chinese ("zh") text."""
    return english_tokens(text) if language == "en" else chinese_tokens(text)


def detokenize(tokens: Sequence[str], language: str) -> str:
    return english_join(tokens) if language == "en" else "".join(tokens)


def encode_numbers(numbers, src_vocab: Vocab, tgt_vocab: Vocab, direction: str = "en-zh"):
    """Numbers -> (src (B, S), tgt (B, T)) int64 id arrays, right-padded with PAD = 0.

    src holds the source tokens; tgt is <bos> target tokens <eos>, from which
    the model takes tgt[:, :-1] as decoder input and tgt[:, 1:] as the
    targets (teacher forcing).
    """
    src_lang, tgt_lang = direction.split("-")
    src = [src_vocab.encode(tokenize(source_text(int(n), direction), src_lang)) for n in numbers]
    tgt = [[BOS, *tgt_vocab.encode(tokenize(target_text(int(n), direction), tgt_lang)), EOS] for n in numbers]
    return pad_batch(src), pad_batch(tgt)


def decode_target(ids, vocab: Vocab, language: str) -> str:
    """Generated target ids -> text: stop at the first <eos>, drop <bos> and padding."""
    tokens = []
    for t in vocab.decode(ids):
        if t == "<eos>":
            break
        if t not in ("<bos>", "<pad>"):
            tokens.append(t)
    return detokenize(tokens, language)


assert PAD == 0 and SPECIALS.index("<bos>") == BOS and SPECIALS.index("<eos>") == EOS
