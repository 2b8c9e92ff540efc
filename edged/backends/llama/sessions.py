"""The conversation KV cache: the llama.cpp state of recent conversations, kept so a later
turn evaluates only what is new, even when conversations interleave.

llama-cpp-python reuses only the longest common prefix with the *previous* request (its
``generate`` compares tokens with what the context holds). This keeps, per conversation
key, the KV state of sequence 0 (``llama_state_seq_get_data``: the KV cells only, no
logits, a few MB for a few hundred tokens of the default model) and the tokens it holds.
Before a turn, the entry is restored (``llama_state_seq_set_data``) when it shares a longer
token prefix with the new prompt than what the context holds now; ``generate`` then
evaluates only the rest. Correctness rests on tokens: a state is reused only up to the
prompt's longest common token prefix with it (never strings), and only under the same
fingerprint (model file, chat template, system prompt, context settings), so a different
model, template or system prompt never reuses it.

Entries live in RAM within ``session_cache_mb`` (least recently used dropped first), and,
with ``session_cache_dir``, spill there when they leave RAM (within
``session_cache_disk_mb``, oldest files first) and are read back on their conversation's
next turn. Everything here runs on the decode thread (blocking).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import struct
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("edged.backend.llama.sessions")

_MAGIC = b"EDKV1\n"


@dataclass(slots=True)
class _Entry:
    tokens: list[int]
    data: bytearray

    @property
    def nbytes(self) -> int:
        return len(self.data) + 4 * len(self.tokens)


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def reused(held: Sequence[int], prompt: Sequence[int]) -> int:
    """Prompt tokens ``Llama.generate`` will not evaluate again when the context holds
    ``held`` (its rule: the common prefix, less one when it is the whole prompt, whose last
    token is evaluated again for fresh logits)."""
    n = common_prefix(held, prompt)
    return n - 1 if n == len(prompt) and n > 0 else n


def fingerprint(*parts: object) -> str:
    """A short digest of what a cached state depends on besides its tokens."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


class SessionCache:
    """Per-conversation KV states of one loaded model (see the module doc)."""

    def __init__(
        self,
        budget_mb: float,
        fingerprint: str,
        spill_dir: Path | None = None,
        disk_mb: float = 0.0,
    ) -> None:
        self.budget_bytes = int(budget_mb * 1024 * 1024)
        self.fingerprint = fingerprint
        self.spill_dir = spill_dir
        self.disk_bytes = int(disk_mb * 1024 * 1024)
        self._ram: OrderedDict[str, _Entry] = OrderedDict()
        self.lookups = 0  # turns with a conversation key
        self.hits = 0  # of which some prompt tokens came from a cache (state or context)
        self.restores = 0  # of which the state was restored (RAM or disk)
        self.disk_reads = 0
        self.evictions = 0

    @property
    def enabled(self) -> bool:
        return self.budget_bytes > 0

    @property
    def ram_bytes(self) -> int:
        """Bytes held in RAM now."""
        return sum(e.nbytes for e in self._ram.values())

    def stats(self) -> dict[str, float | int | None]:
        """Figures for telemetry: entries, RAM held, lookups, hit rate (None before any)."""
        return {
            "entries": len(self._ram),
            "ram_mb": round(self.ram_bytes / 1048576, 3),
            "budget_mb": round(self.budget_bytes / 1048576, 3),
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": None if not self.lookups else round(self.hits / self.lookups, 4),
            "restores": self.restores,
            "evictions": self.evictions,
        }

    # --- a turn ------------------------------------------------------------------------------

    def prepare(self, llm: Any, conversation: str, prompt: list[int]) -> int:
        """Before a turn: restore ``conversation``'s state when it serves more of ``prompt``
        than the context holds now. Returns the prompt tokens that will not be evaluated."""
        self.lookups += 1
        held = list(llm.input_ids[: llm.n_tokens])
        best = reused(held, prompt)
        entry = self._get(conversation)
        gain = -1 if entry is None else reused(entry.tokens, prompt)
        if entry is not None and gain > best and self._restore(llm, entry):
            self.restores += 1
            best = gain
        if best > 0:
            self.hits += 1
        return best

    def store(self, llm: Any, conversation: str) -> None:
        """After a turn (finished or cancelled): keep the context's state as the
        conversation's (what it generated included), dropping the oldest past the budget."""
        n = int(llm.n_tokens)
        if not self.enabled or n == 0:
            return
        ctx = llm._ctx.ctx
        import llama_cpp

        size = int(llama_cpp.llama_state_seq_get_size(ctx, 0))
        if size <= 0 or size > self.budget_bytes:
            self._ram.pop(conversation, None)
            return
        data = bytearray(size)  # written in place: one copy of the state, no more
        buf = (ctypes.c_uint8 * size).from_buffer(data)
        got = int(llama_cpp.llama_state_seq_get_data(ctx, buf, size, 0))
        del buf
        if got <= 0:
            return
        del data[got:]
        self._ram.pop(conversation, None)
        self._ram[conversation] = _Entry([int(t) for t in llm.input_ids[:n]], data)
        while self.ram_bytes > self.budget_bytes and len(self._ram) > 1:
            old_key, old = self._ram.popitem(last=False)
            self.evictions += 1
            self._spill(old_key, old)

    # --- inside --------------------------------------------------------------------------------

    def _get(self, conversation: str) -> _Entry | None:
        entry = self._ram.get(conversation)
        if entry is not None:
            self._ram.move_to_end(conversation)
            return entry
        return self._read_spilled(conversation)

    def _restore(self, llm: Any, entry: _Entry) -> bool:
        import llama_cpp

        ctx = llm._ctx.ctx
        llm._ctx.kv_cache_clear()
        buf = (ctypes.c_uint8 * len(entry.data)).from_buffer(entry.data)  # no copy
        ok = int(llama_cpp.llama_state_seq_set_data(ctx, buf, len(entry.data), 0)) > 0
        del buf
        if not ok:
            log.warning("event=session_restore_failed tokens=%d", len(entry.tokens))
            llm._ctx.kv_cache_clear()
            llm.n_tokens = 0
            return False
        n = len(entry.tokens)
        llm.input_ids[:n] = entry.tokens
        llm.n_tokens = n
        if hasattr(llm, "_requires_eval"):
            llm._requires_eval = True  # the logits are not the restored state's
        return True

    def _path(self, conversation: str) -> Path:
        assert self.spill_dir is not None
        digest = hashlib.sha256(f"{self.fingerprint}\0{conversation}".encode()).hexdigest()
        return self.spill_dir / f"{digest[:32]}.kv"

    def _spill(self, conversation: str, entry: _Entry) -> None:
        if self.spill_dir is None or self.disk_bytes <= 0:
            return
        try:
            self.spill_dir.mkdir(parents=True, exist_ok=True)
            path = self._path(conversation)
            tmp = path.with_suffix(".tmp")
            head = struct.pack("<II", len(entry.tokens), len(entry.data))
            toks = struct.pack(f"<{len(entry.tokens)}i", *entry.tokens)
            tmp.write_bytes(_MAGIC + self.fingerprint.encode() + head + toks + entry.data)
            os.replace(tmp, path)
            self._trim_disk()
        except OSError as e:
            log.warning("event=session_spill_failed error=%r", str(e))

    def _read_spilled(self, conversation: str) -> _Entry | None:
        if self.spill_dir is None:
            return None
        path = self._path(conversation)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        fp = self.fingerprint.encode()
        head_at = len(_MAGIC) + len(fp)
        if not raw.startswith(_MAGIC + fp) or len(raw) < head_at + 8:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        n_tok, n_data = struct.unpack_from("<II", raw, head_at)
        at = head_at + 8
        if len(raw) != at + 4 * n_tok + n_data:
            with contextlib.suppress(OSError):
                path.unlink()
            return None
        tokens = list(struct.unpack_from(f"<{n_tok}i", raw, at))
        self.disk_reads += 1
        return _Entry(tokens, bytearray(raw[at + 4 * n_tok :]))

    def _trim_disk(self) -> None:
        assert self.spill_dir is not None
        files = sorted(self.spill_dir.glob("*.kv"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        while files and total > self.disk_bytes:
            p = files.pop(0)
            total -= p.stat().st_size
            with contextlib.suppress(OSError):
                p.unlink()
