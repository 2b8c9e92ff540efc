"""PII and secret detectors: a pattern to find candidates and, where the format has one, a
checksum to confirm them (Luhn for payment cards, ISO 7064 mod-97 for IBANs).

Patterns use the ``regex`` module, whose partial matching tells the stream filter where a
value that has only begun could start, so not even its first half is released.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

PiiName = Literal[
    "email", "phone", "payment_card", "iban", "ipv4", "ipv6", "us_ssn",
    "aws_access_key", "github_token", "private_key_block", "jwt",
]  # fmt: skip


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn check (payment card numbers)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# IBAN lengths per country (ISO 13616 registry; the common ones).
_IBAN_TABLE = """
AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BR29 CH21 CR22
CY28 CZ24 DE22 DK18 DO28 EE20 EG29 ES24 FI18 FO18 FR27 GB22
GE22 GI23 GL18 GR27 GT28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27
JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 MC27 MD24 ME22
MK19 MR27 MT31 MU30 NL18 NO15 PK24 PL28 PS29 PT25 QA29 RO24
RS22 SA24 SC31 SE24 SI19 SK24 SM27 ST25 SV28 TL23 TN24 TR26
UA29 VA22 VG24 XK20
"""
IBAN_LENGTHS = {entry[:2]: int(entry[2:]) for entry in _IBAN_TABLE.split()}


def iban_ok(candidate: str) -> bool:
    """True for a well-formed IBAN: known country length and mod-97 remainder 1."""
    s = candidate.replace(" ", "").upper()
    if IBAN_LENGTHS.get(s[:2]) != len(s) or not s.isalnum():
        return False
    rearranged = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return int(number) % 97 == 1


def _digits(s: str) -> str:
    return "".join(c for c in s if c.isdigit())


def _card_ok(s: str) -> bool:
    d = _digits(s)
    return 13 <= len(d) <= 19 and luhn_ok(d)


_SEPARATORS_RE = re.compile(r"[ .()+-]+")


def _phone_ok(s: str) -> bool:
    d = _digits(s)
    if not 10 <= len(d) <= 15:
        return False
    # Phone numbers are written in groups of 2+ digits, but for a leading country or trunk
    # code ("1-800-..."); a lone digit inside (ISBN "978-3-16-...") is something else.
    groups = [g for g in _SEPARATORS_RE.split(s) if g]
    if any(len(g) == 1 for g in groups[1:]):
        return False
    # A plain run of digits, three or more groups (415 555 0132), or +country and number;
    # two groups split by a dot or dash are a decimal or a range (3.1415926535).
    if not (len(groups) == 1 or len(groups) >= 3 or (s.startswith("+") and len(groups) == 2)):
        return False
    # A digit run that is a valid payment card is the card detector's business.
    return not (s.replace(" ", "").replace("-", "").isdigit() and len(d) >= 13 and luhn_ok(d))


def _ipv6_ok(s: str) -> bool:
    try:
        ipaddress.IPv6Address(s)
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Detector:
    """One PII kind: its candidate pattern and optional validator."""

    name: PiiName
    pattern: str
    validate: Callable[[str], bool] | None = None
    #: A pattern every value contains (C-speed ``re``): the detector is skipped on a whole
    #: text without it. On a stream it always runs: the trigger may be about to arrive.
    trigger: str | None = None
    #: Every value has an ASCII digit (in the plain view): skipped at once on a text without.
    needs_digit: bool = False
    #: ``trigger`` rewritten for the :func:`shape` of a text whose decimal digits are all
    #: ASCII (a plain view's are), where it starts with a literal (``re`` then finds it with
    #: a fast string search instead of testing a character class at every position): found
    #: in the shape exactly when ``trigger`` is in the text.
    shape_trigger: str | None = None
    #: A character class holding every character a value (or the beginning of one) can have:
    #: on a stream without the trigger only a value that has just begun can be there, and it
    #: lies in the run of these characters that ends the text.
    charset: str | None = None
    #: A character class holding every value's first character: a value that has just
    #: begun starts at one of them, in the run of ``charset`` characters ending the text.
    first: str | None = None
    #: Every value begins with one of these, and each holds the trigger: on a stream without
    #: the trigger, a value can only have begun if the text ends with a proper prefix of one.
    heads: tuple[str, ...] = ()
    #: A character every value holds, and the (ASCII) characters that may stand between a
    #: value's start and its first ``anchor``: on a whole text a value can only start in the
    #: run of ``lead`` characters just before an anchor, or at the anchor, so the pattern is
    #: tried there alone (``match`` at each place) instead of at every position.
    anchor: str | None = None
    lead: str | None = None
    #: A pattern on the :func:`shape` of a text (digits all ASCII, as above) whose matches
    #: (``re.finditer``: a maximal run of the characters values are made of) hold every
    #: value whole: on a whole text the detector runs only there, from ``before`` characters
    #: ahead of each match to its end, and sees ``after`` characters past it (more than it
    #: ever reads there).
    region: str | None = None
    before: int = 0
    after: int = 4


#: ASCII digits as ``0`` and ASCII capitals as ``A``: the view ``shape_trigger`` reads.
_SHAPE = str.maketrans(
    {**dict.fromkeys("0123456789", "0"), **dict.fromkeys("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "A")}
)
_SHAPE_BYTES = bytes.maketrans(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"0" * 10 + b"A" * 26)


def shape(text: str) -> str:
    """``text`` with ASCII digits as ``0``, ASCII capitals as ``A`` and every other
    character but ASCII as ``?`` (same length; in C: ``str.translate`` is slow on text that
    is not ASCII, so that goes through bytes)."""
    if text.isascii():
        return text.translate(_SHAPE)
    return text.encode("ascii", "replace").translate(_SHAPE_BYTES).decode("ascii")


# Order matters where values overlap: where two detectors claim the same characters, the
# one listed first keeps them (a card number is not also a phone number).
DETECTORS: tuple[Detector, ...] = (
    Detector("private_key_block",
             r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
             r"(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[\s\S]*\Z)",
             trigger="PRIVATE KEY-----", charset=r"[A-Z0-9 -]", first="-"),
    Detector("jwt", r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{8,}",
             trigger=r"eyJ", charset=r"[A-Za-z0-9_.-]", first="e", heads=("eyJ",)),
    Detector("aws_access_key",
             r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{16}\b",
             trigger=r"A(?:KIA|SIA|BIA|CCA|GPA|IDA|ROA|NPA|NVA|IPA)", charset=r"[A-Z0-9]",
             first="A",
             heads=("AKIA", "ASIA", "ABIA", "ACCA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA",
                    "AIPA")),
    Detector("github_token",
             r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
             trigger=r"gh[pousr]_|github_pat_", charset=r"[A-Za-z0-9_]", first="g",
             heads=("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_")),
    Detector("email",
             r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b",
             trigger="@", charset=r"[A-Za-z0-9._%+@-]", first=r"[A-Za-z0-9._%+-]", anchor="@",
             lead=r"[A-Za-z0-9._%+-]"),
    Detector("iban", r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b", iban_ok,
             trigger=r"[A-Z]{2}\d\d", needs_digit=True, shape_trigger="AA00",
             charset=r"[A-Z0-9\d ]", first="[A-Z]", region=r"AA00(?: ?[A0]){11,}"),
    Detector("us_ssn", r"(?<!\d)(?!000|666|9\d\d)\d{3}[- ](?!00)\d{2}[- ](?!0000)\d{4}(?!\d)",
             trigger=r"\d{3}[- ]\d\d[- ]\d", needs_digit=True, shape_trigger="000[- ]00[- ]0",
             charset=r"[\d -]", first=r"\d", region=r"0(?:[ -]?0){8,}"),
    Detector("payment_card", r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])", _card_ok,
             trigger=r"\d[ -]?\d[ -]?\d[ -]?\d", needs_digit=True,
             shape_trigger="0[ -]?0[ -]?0[ -]?0", charset=r"[\d -]", first=r"\d",
             region=r"0(?:[ -]?0){12,}"),
    Detector("ipv6", r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:|:){2,7}(?::|[0-9A-Fa-f]{1,4})(?![\w:])",
             _ipv6_ok, trigger=r":[0-9A-Fa-f:]", charset=r"[0-9A-Fa-f:]", anchor=":",
             lead=r"[0-9A-Fa-f]"),
    Detector("ipv4",
             r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
             r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\.?\d)", trigger=r"\d\.\d",
             needs_digit=True, shape_trigger=r"0\.0", charset=r"[\d.]", first=r"\d"),
    Detector("phone",
             r"(?<![\w+])(?<!\d[ .-])\+?\(?\d(?:[ .()-]{0,2}\d){9,14}(?!\w)(?![ .()-]{1,2}\d)",
             _phone_ok, trigger=r"\d[ .()-]{0,2}\d[ .()-]{0,2}\d", needs_digit=True,
             shape_trigger=r"0[ .()-]{0,2}0[ .()-]{0,2}0", charset=r"[\d +().-]", first=r"[+(\d]",
             region=r"0(?:[ .()-]{0,2}0){9,}", before=2),
)  # fmt: skip
BY_NAME: dict[str, Detector] = {d.name: d for d in DETECTORS}
