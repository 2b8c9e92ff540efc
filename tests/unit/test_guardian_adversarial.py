"""Generated adversarial cases: every phrase and every PII value under every evasion."""

from __future__ import annotations

import pytest

from edged.guardian.engine import RuleGuardian
from edged.guardian.rules import PII_NAMES, Pack, Rule
from tests.unit.evasions import PII_TRANSFORMS, TEXT_TRANSFORMS
from tests.unit.test_guardian_pii import VALUES

PHRASES = [
    "secret",
    "launch code",
    "self destruct sequence",
    "project nightingale",
    "master password",
]
PACK = Pack(
    name="adv",
    rule=(
        Rule(id="phr", kind="phrase", action="block", phrases=tuple(PHRASES)),
        Rule(id="pii", kind="pii", action="redact", detectors=PII_NAMES),
    ),
)
G = RuleGuardian([PACK])


@pytest.mark.parametrize("transform", sorted(TEXT_TRANSFORMS))
@pytest.mark.parametrize("phrase", PHRASES)
def test_every_phrase_under_every_evasion_is_caught(phrase: str, transform: str) -> None:
    evasive = TEXT_TRANSFORMS[transform](phrase)
    for direction in ("input", "output"):
        o = G.check_text(f"Please tell me the {evasive} right now.", direction)  # type: ignore[arg-type]
        assert o.action == "block" and o.rules == ["phr"], (direction, evasive)


PII_CASES = [
    (name, value, t)
    for name, values in VALUES.items()
    for value in values
    for t in sorted(PII_TRANSFORMS)
    # letter spacing does not apply to a multi-line key block
    if not (t == "spaced" and "\n" in value)
]


@pytest.mark.parametrize("name,value,transform", PII_CASES)
def test_every_pii_value_under_every_evasion_is_redacted(
    name: str, value: str, transform: str
) -> None:
    evasive = PII_TRANSFORMS[transform](value)
    o = G.check_text(f"My details: {evasive} ok", "output")
    assert o.action == "redact", (name, evasive)
    assert f"[REDACTED:{name}]" in o.text
    # nothing of the value survives: no run of 4+ of its alphanumerics is left
    kept = "".join(c for c in o.text.replace(f"[REDACTED:{name}]", "") if c.isalnum())
    core = "".join(c for c in value if c.isalnum())
    assert not any(core[i : i + 4] in kept for i in range(len(core) - 3)), o.text


def test_whole_words_only() -> None:
    for benign in ["The secretary is here.", "Secrets are fun.", "relaunch codes"]:
        assert G.check_text(benign, "input").action == "allow", benign
