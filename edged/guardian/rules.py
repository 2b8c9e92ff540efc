"""Rule packs: TOML files of rules, validated at load with the file, rule id and reason.

A pack::

    name = "example"
    [[rule]]
    id = "no-secrets-talk"
    kind = "phrase"            # phrase | regex | pii | semantic (| tool: tool_rules.py)
    action = "block"           # block | redact | force_local | flag
    applies_to = "both"        # input | output | both
    phrases = ["the launch code", "master password"]
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import regex
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edged.config import read_toml
from edged.errors import ConfigError
from edged.guardian.tool_rules import ToolRule

Action = Literal["block", "redact", "force_local", "flag"]
Kind = Literal["phrase", "regex", "pii", "semantic"]
Direction = Literal["input", "output"]
#: Every rule kind (the tag pydantic puts in an error's location).
_KINDS = ("phrase", "regex", "pii", "semantic", "tool")
PII_NAMES = (
    "email",
    "phone",
    "payment_card",
    "iban",
    "ipv4",
    "ipv6",
    "us_ssn",
    "aws_access_key",
    "github_token",
    "private_key_block",
    "jwt",
)
#: The strongest action wins: block > force_local > redact > flag > allow.
STRENGTH = {"allow": 0, "flag": 1, "redact": 2, "force_local": 3, "block": 4}


class Rule(BaseModel):
    """One rule. Which fields it needs depends on ``kind``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")
    kind: Kind
    action: Action
    applies_to: Literal["input", "output", "both"] = "both"
    description: str | None = None
    phrases: tuple[str, ...] | None = None
    pattern: str | None = None
    detectors: tuple[str, ...] | None = None
    examples: tuple[str, ...] | None = None
    threshold: float | None = Field(None, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Rule:
        needs = {
            "phrase": {"phrases"},
            "regex": {"pattern"},
            "pii": {"detectors"},
            "semantic": {"examples", "threshold"},
        }[self.kind]
        kind_fields = {"phrases", "pattern", "detectors", "examples", "threshold"}
        for name in kind_fields:
            present = getattr(self, name) is not None
            if name in needs and not present:
                raise ValueError(f"kind '{self.kind}' needs '{name}'")
            if name not in needs and present:
                raise ValueError(f"'{name}' does not belong to kind '{self.kind}'")
        if self.phrases is not None and not all(p.strip() for p in self.phrases):
            raise ValueError("phrases must be non-empty")
        if self.phrases is not None and not self.phrases:
            raise ValueError("phrases is empty")
        if self.detectors is not None:
            if not self.detectors:
                raise ValueError("detectors is empty")
            unknown = [d for d in self.detectors if d not in PII_NAMES]
            if unknown:
                raise ValueError(f"unknown detectors {unknown}; known: {list(PII_NAMES)}")
        if self.pattern is not None:
            try:
                compiled = regex.compile(self.pattern)
            except regex.error as e:
                raise ValueError(f"pattern does not compile: {e}") from e
            if compiled.search(""):
                raise ValueError("pattern matches the empty string")
        if self.examples is not None and not self.examples:
            raise ValueError("examples is empty")
        if self.kind == "semantic" and self.applies_to != "input" and self.action != "flag":
            raise ValueError(
                "semantic rules judge meaning, which a stream cannot show before it is "
                "released: on output they may only 'flag' (set applies_to = \"input\")"
            )
        return self

    def applies(self, direction: Direction) -> bool:
        """Whether this rule runs on input or on output."""
        return self.applies_to in (direction, "both")


class Pack(BaseModel):
    """A rule pack file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    description: str | None = None
    #: What a tool call no rule allows gets (tool_rules.py).
    tool_default: Literal["allow", "block"] = "allow"
    rule: tuple[Annotated[Rule | ToolRule, Field(discriminator="kind")], ...] = ()

    @property
    def text_rules(self) -> list[Rule]:
        """The rules that judge text (input and output)."""
        return [r for r in self.rule if isinstance(r, Rule)]

    @property
    def tool_rules(self) -> list[ToolRule]:
        """The rules that decide tool calls."""
        return [r for r in self.rule if isinstance(r, ToolRule)]


def load_pack(path: Path) -> Pack:
    """Read one pack; ConfigError names the file, the rule id and the reason."""
    data = read_toml(path, "guardian pack")
    try:
        return Pack.model_validate(data)
    except ValidationError as e:
        lines = []
        rules = data.get("rule") if isinstance(data, dict) else None
        for err in e.errors():
            loc = err["loc"]
            where = ".".join(str(p) for p in loc)
            if len(loc) >= 2 and loc[0] == "rule" and isinstance(loc[1], int):
                rid = None
                if (
                    isinstance(rules, list)
                    and loc[1] < len(rules)
                    and isinstance(rules[loc[1]], dict)
                ):
                    rid = rules[loc[1]].get("id")
                rest = loc[3:] if len(loc) >= 3 and loc[2] in _KINDS else loc[2:]
                field = ".".join(str(p) for p in rest)
                where = f"rule {rid!r} (#{loc[1] + 1})" + (f" {field}" if field else "")
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"{path}: {where}: {msg}")
        raise ConfigError("\n".join(lines)) from e


def load_packs(paths: Sequence[Path]) -> list[Pack]:
    """Read every pack; rule ids must be unique across them."""
    packs = [load_pack(p) for p in paths]
    seen: dict[str, Path] = {}
    for path, pack in zip(paths, packs, strict=True):
        for r in pack.rule:
            if r.id in seen:
                raise ConfigError(f"{path}: rule {r.id!r}: id already used in {seen[r.id]}")
            seen[r.id] = path
    return packs
