"""Evasion transforms used to generate adversarial test cases."""

from __future__ import annotations

from collections.abc import Callable

ZW = "\u200b"
CYRILLIC = dict(zip("aceopxyisACEOPTHKMBX", "асеорхуіѕАСЕОРТНКМВХ", strict=True))
GREEK = dict(zip("oiatunkvOAETKN", "οιατυηκνΟΑΕΤΚΝ", strict=True))
LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7", "l": "1"}
DIGIT_SCRIPTS = {
    "arabic-indic": 0x0660,
    "devanagari": 0x0966,
    "fullwidth": 0xFF10,
    "bengali": 0x09E6,
    "math-bold": 0x1D7CE,
}


def fullwidth(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def math_bold(s: str) -> str:
    out = []
    for c in s:
        if "a" <= c <= "z":
            out.append(chr(0x1D41A + ord(c) - ord("a")))
        elif "A" <= c <= "Z":
            out.append(chr(0x1D400 + ord(c) - ord("A")))
        else:
            out.append(c)
    return "".join(out)


def interleave(sep: str) -> Callable[[str], str]:
    return sep.join


def spaced_words(sep: str) -> Callable[[str], str]:
    """Letter spacing inside each word; words kept apart by a wider gap."""
    return lambda s: "   ".join(sep.join(w) for w in s.split(" "))


def mapped(table: dict[str, str]) -> Callable[[str], str]:
    return lambda s: "".join(table.get(c, c) for c in s)


def accents(s: str) -> str:
    return "".join(c + "\u0301" if c.isalpha() else c for c in s)


def digits_in(script: str) -> Callable[[str], str]:
    base = DIGIT_SCRIPTS[script]
    return lambda s: "".join(chr(base + int(c)) if c.isdigit() else c for c in s)


TEXT_TRANSFORMS: dict[str, Callable[[str], str]] = {
    "identity": lambda s: s,
    "upper": str.upper,
    "title": str.title,
    "fullwidth": fullwidth,
    "math-bold": math_bold,
    "cyrillic": mapped(CYRILLIC),
    "greek": mapped(GREEK),
    "leet": mapped(LEET),
    "accents": accents,
    "zero-width": interleave(ZW),
    "soft-hyphen": interleave("\u00ad"),
    "word-joiner": interleave("\u2060"),
    "bidi": interleave("\u202e"),
    "tag-chars": interleave("\U000e0041"),
    "letter-spacing": spaced_words(" "),
    "dotted": spaced_words("."),
    "dashed": spaced_words("-"),
    "fullwidth+zero-width": lambda s: interleave(ZW)(fullwidth(s)),
    "cyrillic+leet": lambda s: mapped(CYRILLIC)(mapped(LEET)(s)),
}

PII_TRANSFORMS: dict[str, Callable[[str], str]] = {
    "identity": lambda s: s,
    "fullwidth": fullwidth,
    "zero-width": interleave(ZW),
    "soft-hyphen": interleave("\u00ad"),
    "bidi": interleave("\u202e"),
    "spaced": interleave(" "),
    **{f"digits-{k}": digits_in(k) for k in DIGIT_SCRIPTS},
}
