"""How long a server asked us to wait: ``retry-after-ms`` or ``Retry-After`` (HTTP 429/503)."""

from __future__ import annotations

import math
from collections.abc import Mapping

#: The longest a ``Retry-After`` keeps requests away from the cloud, seconds (a server that
#: asks for an hour would otherwise silence the cloud on a misconfiguration).
MAX_RETRY_AFTER_S = 300.0


def parse_retry_after(headers: Mapping[str, str], now_epoch_s: float) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (milliseconds; OpenAI's) or ``Retry-After``
    (delta-seconds or an HTTP date), capped at :data:`MAX_RETRY_AFTER_S`; None when absent
    or unreadable. Header names are matched without regard to case."""
    lower = {k.lower(): v for k, v in headers.items()}
    seconds: float | None = None
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            seconds = float(ms) / 1000.0
        except ValueError:
            seconds = None
    raw = lower.get("retry-after")
    if seconds is None and raw is not None:
        raw = raw.strip()
        try:
            seconds = float(raw)
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                seconds = parsedate_to_datetime(raw).timestamp() - now_epoch_s
            except (TypeError, ValueError, IndexError, OverflowError):
                seconds = None
    if seconds is None or math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)
