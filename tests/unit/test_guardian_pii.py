from __future__ import annotations

import pytest

from edged.guardian.matcher import Matcher
from edged.guardian.pii import iban_ok, luhn_ok
from edged.guardian.rules import PII_NAMES, Rule

ALL = Matcher([Rule(id="pii", kind="pii", action="redact", detectors=PII_NAMES)], "input")

VALUES = {
    "email": ["john.smith@example.com", "a+b@sub.example.co.uk"],
    "phone": ["+1 415 555 0132", "(415) 555-0132", "+44 20 7946 0958"],
    "payment_card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005"],
    "iban": ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432"],
    "ipv4": ["192.168.10.24", "8.8.8.8"],
    "ipv6": ["2001:db8:85a3::8a2e:370:7334", "fe80::1"],
    "us_ssn": ["123-45-6789"],
    "aws_access_key": ["AKIAIOSFODNN7EXAMPLE"],
    "github_token": ["ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"],
    "private_key_block": [
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\nabc==\n-----END RSA PRIVATE KEY-----"
    ],
    "jwt": ["eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"],
}


def labels(text: str) -> list[tuple[str, str]]:
    return [(f.label, text[f.start : f.end]) for f in ALL.scan(text)[0]]


@pytest.mark.parametrize("name,value", [(k, v) for k, vs in VALUES.items() for v in vs])
def test_each_detector_finds_its_values_in_a_sentence(name: str, value: str) -> None:
    assert labels(f"Here it is: {value} - thanks.") == [(name, value)]


def test_luhn_and_mod97() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("378282246310005")
    assert not luhn_ok("4111111111111112")
    assert iban_ok("DE89 3704 0044 0532 0130 00") and iban_ok("GB82WEST12345698765432")
    assert not iban_ok("DE89 3704 0044 0532 0130 01")
    assert not iban_ok("DE89 3704 0044 0532 0130 0")  # wrong length for DE
    assert not iban_ok("ZZ89 3704 0044 0532 0130 00")  # no such country


@pytest.mark.parametrize(
    "good",
    ["4111 1111 1111 1111", "5500-0000-0000-0004", "6011 1111 1111 1117", "3530111333300000"],
)
def test_near_miss_card_numbers_are_not_cards(good: str) -> None:
    for i, ch in enumerate(good):
        if not ch.isdigit():
            continue
        for d in "0123456789":
            if d == ch:
                continue
            bad = good[:i] + d + good[i + 1 :]
            if luhn_ok("".join(c for c in bad if c.isdigit())):
                continue  # a different valid number, not a near miss
            found = labels(f"pay with {bad} today")
            assert all(label != "payment_card" for label, _ in found), bad


def test_near_miss_ibans_are_not_ibans() -> None:
    good = "GB82WEST12345698765432"
    misses = 0
    for i in range(4, len(good)):
        if not good[i].isdigit():
            continue
        bad = good[:i] + str((int(good[i]) + 1) % 10) + good[i + 1 :]
        assert not iban_ok(bad)
        assert all(label != "iban" for label, _ in labels(f"send to {bad} please")), bad
        misses += 1
    assert misses >= 10


@pytest.mark.parametrize(
    "text",
    [
        "Version 1.2.3 shipped in 2024; see section 4.5.6.",
        "The meeting is at 12:30:45.",
        "I have 3 cats and 12 dogs.",
        "Call me maybe, 555 is a nice number.",
        "Invalid SSN 000-12-3456 and 666-12-3456 and 123-00-4567.",
        "The total was 1,234,567.89 dollars.",
        "ISBN 978-3-16-148410-0",
    ],
)
def test_ordinary_numbers_are_not_pii(text: str) -> None:
    assert labels(text) == []


def test_decimals_and_ranges_are_not_phone_numbers() -> None:
    for text in ["pi is 3.1415926535 roughly", "0.0000000013% of it", "pages 1234567-1234590"]:
        assert labels(text) == [], text
