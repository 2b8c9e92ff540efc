"""How hard the generated-input (hypothesis) tests try.

Two hypothesis profiles, registered in tests/conftest.py:

- ``default`` (``make test``, CI): each of the big fuzz tests runs a moderate number of
  examples, enough to hit every branch of what it generates many times over, so the suite
  stays within its time budget.
- ``thorough`` (``pytest --hypothesis-profile=thorough``): the full counts, for a deep run
  before a release or after touching the parser, the router or the daemon's intake. Tests
  without a count of their own get 1,000 examples instead of hypothesis's 100.

A test says both numbers: ``@settings(max_examples=examples(default=1200, thorough=6000))``.
"""

from __future__ import annotations

from hypothesis import settings

THOROUGH = "thorough"

settings.register_profile(THOROUGH, max_examples=1000)


def profile() -> str:
    """The profile in force (hypothesis loads ``--hypothesis-profile`` before collection)."""
    get = getattr(settings, "get_current_profile_name", None)
    return str(get() if get is not None else getattr(settings, "_current_profile", "default"))


def is_thorough() -> bool:
    return profile() == THOROUGH


def examples(*, default: int, thorough: int) -> int:
    """``max_examples`` for a big fuzz test: ``thorough`` under that profile, else ``default``."""
    return thorough if is_thorough() else default
