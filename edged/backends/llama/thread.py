"""The local backend on a decode thread: the :class:`~.engine.LlamaEngine` in the daemon.

The model is loaded once. Decoding runs on one dedicated thread, so requests are served
one at a time in arrival order; the event loop only moves finished text pieces. The decode
job speaks to the event loop only through ``call_soon_threadsafe``; the same job runs in a
worker process in :mod:`.process`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncGenerator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar

from edged.aio import take_cancel
from edged.backends.base import BackendSpec, register
from edged.backends.llama.engine import (
    STUCK_GRACE_S,
    Item,
    LlamaEngine,
    Merged,
    finish_cancelled,
    stuck_reason,
)
from edged.backends.llama.gather import gathering
from edged.config import LocalModelConfig
from edged.errors import Unavailable
from edged.types import BackendStats, Finished, Request, Started, StreamEvent, TextDelta

log = logging.getLogger("edged.backend.llama")


@register("llama")
class LlamaBackend:
    """A llama.cpp model on this device, decoded on a thread of the daemon."""

    needs_model_file: ClassVar[bool] = True
    #: Tools, tool_choice and response_format are honoured (docs/tools.md).
    supports_tools: ClassVar[bool] = True

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> LlamaBackend:
        """The model file in ``spec``, run as ``[local]`` says."""
        assert spec.model_path is not None
        return cls(name=spec.name, model_path=spec.model_path, cfg=spec.cfg.local)

    def __init__(self, *, name: str, model_path: Path, cfg: LocalModelConfig) -> None:
        self.name = name
        self.model_path = model_path
        self.engine = LlamaEngine(name=name, model_path=model_path, cfg=cfg)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{name}")
        self._waiting = 0
        self._cancels: set[threading.Event] = set()
        self._restarting = False
        self.load_s: float | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model on the decode thread (it can take seconds for large models)."""
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        await loop.run_in_executor(self._executor, self.engine.load)
        self.load_s = time.monotonic() - t0
        log.info(
            "event=model_loaded backend=%s path=%s load_s=%.2f "
            "rss_before_mb=%.1f rss_after_mb=%.1f",
            self.name,
            self.model_path,
            self.load_s,
            self.engine.rss_before_load_mb,
            self.engine.rss_after_load_mb,
        )

    def healthy(self) -> bool:
        """True once the model is loaded, and while no decode is stuck or restarting."""
        return self.engine.llm is not None and not self._restarting and self.stuck() is None

    def stuck(self, grace_s: float = STUCK_GRACE_S) -> str | None:
        """Why the decode thread looks stuck (:func:`~.engine.stuck_reason`), or None."""
        job = self.engine.job
        if job is None:
            return None
        return stuck_reason(job[0], job[1], time.monotonic(), grace_s)

    async def restart(self) -> None:
        """Abandon the decode thread (a stuck llama.cpp call cannot be interrupted; its
        cancel flag is set, so it stops if it ever returns) and load the model afresh on a
        new one. Unhealthy until loaded."""
        self._restarting = True
        old, self._executor = (
            self._executor,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"decode-{self.name}"),
        )
        for cancel in list(self._cancels):
            cancel.set()
        old.shutdown(wait=False, cancel_futures=True)
        self.engine.job = None
        self.engine.llm = None
        try:
            await self.start()
        finally:
            self._restarting = False

    @property
    def resident(self) -> bool:
        """Loaded at start and kept (:class:`~edged.backends.resident.Resident` loads on demand)."""
        return True

    def stats(self) -> BackendStats:
        """Queue depth, measured speeds, and whether a decode is stuck."""
        return BackendStats(
            queue_depth=self.waiting,
            tokens_per_s=self.engine.tokens_per_s,
            ttft_s=self.engine.ttft_s,
            stuck=self.stuck(),
            sessions=None if self.engine.sessions is None else self.engine.sessions.stats(),
        )

    @property
    def waiting(self) -> int:
        """Generations queued or running on this backend."""
        return self._waiting

    async def close(self) -> None:
        """Stop the decode thread after the current job; free the model."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self._executor.shutdown, True)
        if self.engine.llm is not None:
            with contextlib.suppress(Exception):
                self.engine.llm.close()
            self.engine.llm = None

    # --- generation -------------------------------------------------------------------------------

    def prompt_tokens(self, request: Request) -> list[int]:
        """The chat prompt's token ids (:meth:`~.engine.LlamaEngine.prompt_tokens`)."""
        return self.engine.prompt_tokens(request)

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """Stream one generation; closing the iterator cancels it."""
        if self.engine.llm is None:
            raise Unavailable(f"backend {self.name} has no model loaded")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Item] = asyncio.Queue()
        cancel = threading.Event()

        def emit(item: Item) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        self._waiting += 1
        self._cancels.add(cancel)
        decode_emit = gathering(emit, self.engine.cfg.emit_flush_ms)
        job = loop.run_in_executor(self._executor, self.engine.decode, request, cancel, decode_emit)
        try:
            events = Merged(queue)
            produced, running = 0, False
            while True:
                try:
                    ev = await events.next()
                except asyncio.CancelledError:
                    if not take_cancel():
                        raise
                    cancel.set()  # barge-in: the decode stops within a token
                    ev = await finish_cancelled(events, running, produced)
                if isinstance(ev, TextDelta):
                    produced += ev.tokens
                running = running or isinstance(ev, Started)
                yield ev
                if isinstance(ev, Finished):
                    return
        finally:
            cancel.set()
            self._cancels.discard(cancel)
            self._waiting -= 1
            job.add_done_callback(_log_job_failure)


def _log_job_failure(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("event=decode_job_crashed error=%r", fut.exception())
