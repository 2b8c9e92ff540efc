"""``[local]`` keys of the conversation KV cache (split out of config.py; LocalModelConfig
inherits them, so they are read and written as ``[local] session_cache_mb`` etc.).

A base module like :mod:`edged.config`: it imports nothing of edged.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field


class SessionCacheKeys(BaseModel):
    """The local backend's cache of recent conversations' KV state (docs/conversations.md)."""

    session_cache_mb: float = Field(
        64.0,
        ge=0,
        description="RAM for the KV state of recent conversations (requests with a "
        "'conversation' key), MiB; least recently used dropped first; 0: off.",
    )
    session_cache_dir: Path | None = Field(
        None,
        description="Where a conversation's state goes when it leaves the RAM cache (read "
        "back on its next turn); at most session_cache_disk_mb there. None: dropped.",
    )
    session_cache_disk_mb: float = Field(
        512.0, ge=0, description="Disk for session_cache_dir, MiB; oldest files removed first."
    )


class StreamKeys(BaseModel):
    """How the local model's worker hands text to the daemon."""

    emit_flush_ms: float = Field(
        100.0,
        ge=0,
        le=1000,
        description="The decode hands a job's first three pieces of text on at once, then "
        "gathers its text into one piece per this many milliseconds (each hand-off wakes "
        "the daemon, which costs far more than the Python it runs); 0: one per token.",
    )
