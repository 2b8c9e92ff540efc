"""Board detection: which profile fits the machine under a sysfs root.

:func:`detect_reason` recognises the board from the device-tree model and compatible
strings and from DMI, and says which rule matched; :func:`select_profile` takes the one
the config names instead when ``power.profile`` is not 'auto'. Every path is relative to
the sysfs root (``power.sysfs_root``), so tests point it at a fake tree under
``tests/fixtures/sysfs/<board>/``. Reading the root is cheap (a few small files) but it is
still file I/O: call these off the event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edged.config import PowerConfig
from edged.errors import ConfigError
from edged.power.profile import DetectRules, HwProfile

#: Device-tree and DMI files read by :func:`detect`, relative to the sysfs root.
DT_MODEL = ("proc/device-tree/model", "sys/firmware/devicetree/base/model")
DT_COMPATIBLE = ("proc/device-tree/compatible", "sys/firmware/devicetree/base/compatible")
DMI_DIR = "sys/class/dmi/id"


@dataclass(frozen=True, slots=True)
class BoardFacts:
    """What the sysfs root says about the machine (None: the file is absent)."""

    model: str | None
    compatible: tuple[str, ...]
    dmi_product: str | None
    dmi_vendor: str | None

    @property
    def has_dmi(self) -> bool:
        """True on machines with DMI (x86, some arm64 servers)."""
        return self.dmi_product is not None or self.dmi_vendor is not None


@dataclass(frozen=True, slots=True)
class Detection:
    """The detected profile and the rule that matched, for ``edged doctor``."""

    profile: HwProfile
    rule: str  # "compatible" | "model" | "dmi_product" | "dmi_vendor" | "dmi_any"
    value: str  # what matched: the compatible entry, the model substring, ...

    @property
    def reason(self) -> str:
        """One line: which rule matched what."""
        what = {
            "compatible": "device-tree compatible",
            "model": "device-tree model contains",
            "dmi_product": "DMI product_name contains",
            "dmi_vendor": "DMI sys_vendor contains",
            "dmi_any": "DMI present, nothing more specific matched",
            "configured": "power.profile in the config is",
        }[self.rule]
        return what if self.rule == "dmi_any" else f"{what} {self.value!r}"


def _read_text(root: Path, candidates: tuple[str, ...] | str) -> str | None:
    for rel in (candidates,) if isinstance(candidates, str) else candidates:
        try:
            return (root / rel).read_bytes().decode("utf-8", "replace")
        except OSError:
            continue
    return None


def read_board_facts(root: Path) -> BoardFacts:
    """Read the device-tree model/compatible and DMI names under ``root``."""
    model = _read_text(root, DT_MODEL)
    compat = _read_text(root, DT_COMPATIBLE)
    product = _read_text(root, f"{DMI_DIR}/product_name")
    vendor = _read_text(root, f"{DMI_DIR}/sys_vendor")
    return BoardFacts(
        model=model.replace("\x00", "").strip() if model is not None else None,
        compatible=tuple(c.strip() for c in (compat or "").split("\x00") if c.strip()),
        dmi_product=product.strip() if product is not None else None,
        dmi_vendor=vendor.strip() if vendor is not None else None,
    )


#: Rule strength: an exact compatible entry beats a model substring beats DMI names beats
#: the DMI fallback.
_RANK = {"compatible": 4, "model": 3, "dmi_product": 2, "dmi_vendor": 2, "dmi_any": 1}


def _match(rules: DetectRules, facts: BoardFacts) -> tuple[str, str] | None:
    for c in rules.compatible:
        if c in facts.compatible:
            return "compatible", c
    model = (facts.model or "").lower()
    for m in rules.model:
        if facts.model is not None and m.lower() in model:
            return "model", m
    product = (facts.dmi_product or "").lower()
    for p in rules.dmi_product:
        if facts.dmi_product is not None and p.lower() in product:
            return "dmi_product", p
    vendor = (facts.dmi_vendor or "").lower()
    for v in rules.dmi_vendor:
        if facts.dmi_vendor is not None and v.lower() in vendor:
            return "dmi_vendor", v
    if rules.dmi_any and facts.has_dmi:
        return "dmi_any", facts.dmi_product or facts.dmi_vendor or ""
    return None


def detect_reason(root: Path, profiles: Mapping[str, HwProfile]) -> Detection | None:
    """The best-matching profile for the machine under ``root``, with the rule that matched.

    The strongest rule wins (compatible > model > DMI names > DMI present); among equals,
    the first profile by name. Profiles without [detect] rules (``sim``) never match.
    """
    facts = read_board_facts(root)
    best: Detection | None = None
    for name in sorted(profiles):
        profile = profiles[name]
        if profile.detect.empty:
            continue
        hit = _match(profile.detect, facts)
        if hit is None:
            continue
        if best is None or _RANK[hit[0]] > _RANK[best.rule]:
            best = Detection(profile, hit[0], hit[1])
    return best


def detect(root: Path, profiles: Mapping[str, HwProfile]) -> HwProfile | None:
    """The profile of the machine under ``root`` (None: nothing matched)."""
    found = detect_reason(root, profiles)
    return found.profile if found else None


def select_profile(
    cfg: PowerConfig, profiles: Mapping[str, HwProfile], root: Path | None = None
) -> Detection | None:
    """The profile named by ``cfg.profile``, or the detected one when it is 'auto'.

    ``root`` defaults to ``cfg.sysfs_root``. ConfigError when a named profile is unknown.
    """
    if cfg.profile != "auto":
        try:
            return Detection(profiles[cfg.profile], "configured", cfg.profile)
        except KeyError:
            known = ", ".join(sorted(profiles)) or "none"
            raise ConfigError(
                f"power.profile: no board profile {cfg.profile!r} in {cfg.profiles_dir} "
                f"(known: {known})"
            ) from None
    return detect_reason(cfg.sysfs_root if root is None else root, profiles)
