from __future__ import annotations

from pathlib import Path

import pytest

from edged.errors import ConfigError
from edged.guardian.rules import load_pack, load_packs

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, body: str, name: str = "p.toml") -> Path:
    p = tmp_path / name
    p.write_text(body)
    return p


def test_shipped_packs_load() -> None:
    packs = load_packs(sorted((ROOT / "configs" / "guardian").rglob("*.toml")))
    kinds = {r.kind for p in packs for r in p.rule}
    assert kinds == {"phrase", "regex", "pii", "semantic", "tool"}


@pytest.mark.parametrize(
    "rule,reason",
    [
        ('id = "r1"\nkind = "phrase"\naction = "block"', "needs 'phrases'"),
        (
            'id = "r1"\nkind = "phrase"\naction = "block"\nphrases = ["x"]\npattern = "y"',
            "'pattern' does not belong",
        ),
        ('id = "r1"\nkind = "regex"\naction = "block"\npattern = "(unclosed"', "does not compile"),
        ('id = "r1"\nkind = "regex"\naction = "block"\npattern = "a*"', "empty string"),
        (
            'id = "r1"\nkind = "pii"\naction = "redact"\ndetectors = ["passport"]',
            "unknown detectors",
        ),
        ('id = "r1"\nkind = "pii"\naction = "explode"\ndetectors = ["email"]', "action"),
        (
            'id = "r1"\nkind = "semantic"\naction = "block"\nexamples = ["x"]\nthreshold = 0.5',
            "may only 'flag'",
        ),
        (
            'id = "r1"\nkind = "phrase"\naction = "block"\nphrases = ["x"]\ncolour = 1',
            "unknown key",
        ),
    ],
)
def test_bad_rules_fail_with_file_rule_id_and_reason(
    tmp_path: Path, rule: str, reason: str
) -> None:
    p = write(tmp_path, f'name = "t"\n[[rule]]\n{rule}\n')
    with pytest.raises(ConfigError) as e:
        load_pack(p)
    msg = str(e.value)
    assert str(p) in msg and "'r1'" in msg and reason in msg


def test_duplicate_ids_across_packs(tmp_path: Path) -> None:
    body = 'name = "t"\n[[rule]]\nid = "same"\nkind = "phrase"\naction = "flag"\nphrases = ["x"]\n'
    a, b = write(tmp_path, body, "a.toml"), write(tmp_path, body, "b.toml")
    with pytest.raises(ConfigError, match=r"'same': id already used in .*a\.toml"):
        load_packs([a, b])


def test_missing_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_pack(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_pack(write(tmp_path, "[[rule]\n"))
