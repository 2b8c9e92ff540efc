"""The local model in a worker process: a crash in llama.cpp cannot take the daemon down.

llama.cpp aborts its whole process on some errors (a failed allocation, an assertion). Here
the model lives in a child process; the daemon talks to it over a pipe. When the child dies,
the request it was serving fails (before its first token the pipeline may still offload it),
the backend reports itself unhealthy, and the child is restarted with back-off. A decode
stuck past its deadline is ended the same way: the child is killed and restarted.

The decode itself is :class:`~edged.backends.llama.LlamaBackend`'s, run in the child
unchanged (it reports only through ``emit`` and checks a cancel flag).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import queue
import threading
import time
from collections.abc import AsyncGenerator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from edged.backends.base import register
from edged.config import LocalModelConfig
from edged.errors import BackendFailed, EdgedError, Unavailable
from edged.types import Finished, Request, Started, StreamEvent, TextDelta

log = logging.getLogger("edged.backend.llama_proc")

#: Back-off between restarts of a worker that keeps dying, seconds.
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: A decode job this long past its request's deadline counts as stuck.
STUCK_GRACE_S = 5.0
STUCK_NO_DEADLINE_S = 600.0


# --- the child -------------------------------------------------------------------------------


def worker_main(conn: Connection, name: str, model_path: str, cfg: dict[str, Any],
                log: tuple[str, str] = ("info", "logfmt")) -> None:  # fmt: skip
    """The worker process: load the model, then serve jobs from the pipe in order."""
    from edged.backends.llama import LlamaBackend
    from edged.logs import setup as setup_logging  # the child imports llama.cpp, not the parent

    setup_logging(*log)  # same stdout (the journal) as the daemon

    engine = LlamaBackend(name=name, model_path=Path(model_path),
                          cfg=LocalModelConfig.model_validate(cfg))  # fmt: skip
    # The decode thread only queues what it emits; a sender thread pickles and writes it,
    # so pipe writes never sit between two tokens.
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def sender() -> None:
        while (msg := outbox.get()) is not None:
            try:
                conn.send(msg)
            except (OSError, ValueError):
                return

    send = outbox.put

    threading.Thread(target=sender, name="worker-send", daemon=True).start()
    t0 = time.monotonic()
    try:
        engine._load()
    except BaseException as e:  # the parent reports it
        send(("load_failed", f"{type(e).__name__}: {e}"))
        send(None)
        time.sleep(0.5)  # let the sender write it
        return
    send(("ready", time.monotonic() - t0, engine.rss_before_load_mb, engine.rss_after_load_mb))
    jobs: queue.Queue[tuple[int, Request] | None] = queue.Queue()
    cancels: dict[int, threading.Event] = {}
    lock = threading.Lock()

    def reader() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                jobs.put(None)
                return
            if msg[0] == "job":
                with lock:
                    cancels[msg[1]] = threading.Event()
                jobs.put((msg[1], msg[2]))
            elif msg[0] == "cancel":
                with lock:
                    ev = cancels.get(msg[1])
                if ev is not None:
                    ev.set()
            elif msg[0] == "stop":
                jobs.put(None)
                return

    threading.Thread(target=reader, name="worker-pipe", daemon=True).start()
    while (item := jobs.get()) is not None:
        job_id, request = item
        with lock:
            cancel = cancels[job_id]

        def emit(ev: Any, job_id: int = job_id) -> None:
            send(("ev", job_id, ev))

        engine._decode(request, cancel, emit)
        send(("stats", job_id, engine.tokens_per_s, engine.ttft_s))
        with lock:
            cancels.pop(job_id, None)
    send(None)


# --- the parent ------------------------------------------------------------------------------


class _Job:
    __slots__ = ("deadline_at_s", "got_text", "loop", "queue", "started_at_s")

    def __init__(self, loop: asyncio.AbstractEventLoop, deadline_at_s: float | None) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.started_at_s: float | None = None
        self.deadline_at_s = deadline_at_s
        self.got_text = False


@register("llama_process")
class ProcessLlamaBackend:
    """A llama.cpp model in a child process."""

    def __init__(self, *, name: str, model_path: Path, cfg: LocalModelConfig,
                 log_level: str = "info", log_format: str = "logfmt") -> None:  # fmt: skip
        self.name = name
        self._log = (log_level, log_format)
        self.model_path = model_path
        self._cfg = cfg
        self._ctx = mp.get_context("spawn")  # a clean child: no inherited threads or locks
        self._proc: Any = None
        self._conn: Connection | None = None
        self._jobs: dict[int, _Job] = {}
        self._ids = itertools.count(1)
        self._ready = False
        self._closing = False
        self._restarts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self.load_s: float | None = None
        self.rss_before_load_mb = float("nan")
        self.rss_after_load_mb = float("nan")
        self.tokens_per_s: float | None = None
        self.ttft_s: float | None = None
        self.crashes = 0
        self.last_exit: str | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker and wait until its model is loaded."""
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(None, self._spawn)

    def _spawn(self) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main,
            args=(
                child,
                self.name,
                str(self.model_path),
                self._cfg.model_dump(mode="json"),
                self._log,
            ),
            name=f"edged-{self.name}-worker",
            daemon=True,
        )
        proc.start()
        child.close()
        t0 = time.monotonic()
        try:
            msg = parent.recv()
        except (EOFError, OSError):
            proc.join(1)
            raise Unavailable(f"the local model worker died while loading (exit "
                              f"{proc.exitcode})") from None  # fmt: skip
        if msg[0] != "ready":
            proc.join(5)
            raise Unavailable(f"the local model failed to load: {msg[1]}")
        self.load_s, self.rss_before_load_mb, self.rss_after_load_mb = msg[1], msg[2], msg[3]
        self._proc, self._conn, self._ready = proc, parent, True
        threading.Thread(target=self._reader, args=(parent, proc), name="worker-reader",
                         daemon=True).start()  # fmt: skip
        log.info("event=model_loaded backend=%s path=%s load_s=%.2f worker_pid=%d "
                 "spawn_s=%.2f rss_before_mb=%.1f rss_after_mb=%.1f", self.name, self.model_path,
                 self.load_s, proc.pid, time.monotonic() - t0, self.rss_before_load_mb,
                 self.rss_after_load_mb)  # fmt: skip

    def _reader(self, conn: Connection, proc: Any) -> None:
        """Reader thread: hands every message to the event loop, and the worker's death."""
        assert self._loop is not None
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                proc.join(2)
                self._loop.call_soon_threadsafe(self._on_death, proc)
                return
            self._loop.call_soon_threadsafe(self._on_message, msg)

    def _on_message(self, msg: tuple[Any, ...]) -> None:
        kind = msg[0]
        if kind == "ev":
            job = self._jobs.get(msg[1])
            if job is None:
                return
            ev = msg[2]
            if isinstance(ev, Started):
                job.started_at_s = time.monotonic()
            elif isinstance(ev, TextDelta):
                job.got_text = True
            job.queue.put_nowait(ev)
        elif kind == "stats":
            self.tokens_per_s = msg[2] if msg[2] is not None else self.tokens_per_s
            self.ttft_s = msg[3] if msg[3] is not None else self.ttft_s

    def _on_death(self, proc: Any) -> None:
        if proc is not self._proc:
            return
        self._ready = False
        self._proc = None
        self._conn = None
        code = proc.exitcode
        self.last_exit = f"exit code {code}" if code is None or code >= 0 else f"signal {-code}"
        if self._closing:
            return
        self.crashes += 1
        log.error("event=worker_died backend=%s %s in_flight=%d", self.name,
                  self.last_exit.replace(" ", "_"), len(self._jobs))  # fmt: skip
        for job in self._jobs.values():
            job.queue.put_nowait(BackendFailed(
                f"the local model worker died ({self.last_exit})",
                before_first_token=not job.got_text))  # fmt: skip
        self._schedule_restart()

    def _schedule_restart(self) -> None:
        if self._restart_task is not None and not self._restart_task.done():
            return
        delay = RESTART_BACKOFF_S[min(self._restarts, len(RESTART_BACKOFF_S) - 1)]
        self._restarts += 1

        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await self.start()
                log.info("event=worker_restarted backend=%s after_s=%.1f", self.name, delay)
            except Exception as e:
                log.error("event=worker_restart_failed backend=%s error=%r", self.name, str(e))
                self._schedule_restart()

        self._restart_task = asyncio.create_task(later(), name=f"restart-{self.name}")

    def healthy(self) -> bool:
        """The worker runs, has its model, and no job is stuck."""
        return self._ready and self.stuck() is None

    @property
    def waiting(self) -> int:
        """Generations queued or running."""
        return len(self._jobs)

    def stuck(self, grace_s: float = STUCK_GRACE_S) -> str | None:
        """Why the running job looks stuck (past its deadline plus ``grace_s``), or None."""
        now = time.monotonic()
        for job in self._jobs.values():
            if job.started_at_s is None:
                continue
            limit = (job.deadline_at_s if job.deadline_at_s is not None
                     else job.started_at_s + STUCK_NO_DEADLINE_S)  # fmt: skip
            if now > limit + grace_s:
                return f"decode job running {now - job.started_at_s:.0f} s, past its deadline"
        return None

    async def restart(self) -> None:
        """Kill the worker (a stuck llama.cpp call cannot be interrupted otherwise); the
        death path fails its jobs and starts a new worker."""
        proc = self._proc
        if proc is not None:
            proc.kill()

    async def close(self) -> None:
        """Stop the worker."""
        self._closing = True
        if self._restart_task is not None:
            self._restart_task.cancel()
        proc, conn = self._proc, self._conn
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):
                conn.send(("stop",))
        if proc is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, proc.join, 5)
            if proc.is_alive():
                proc.kill()

    # --- generation ---------------------------------------------------------------------

    async def generate(self, request: Request) -> AsyncGenerator[StreamEvent, None]:
        """Stream one generation from the worker; closing the stream cancels it."""
        conn = self._conn
        if not self._ready or conn is None:
            raise BackendFailed(f"the local model worker is restarting ({self.last_exit})",
                                before_first_token=True)  # fmt: skip
        loop = asyncio.get_running_loop()
        job_id = next(self._ids)
        job = _Job(loop, request.deadline_at_s)
        self._jobs[job_id] = job
        try:
            conn.send(("job", job_id, request))
        except (OSError, ValueError):
            self._jobs.pop(job_id, None)
            raise BackendFailed("the local model worker is gone", before_first_token=True) from None
        try:
            pending: Any = None
            while True:
                item = pending if pending is not None else await job.queue.get()
                pending = None
                if isinstance(item, TextDelta):
                    text, n = item.text, item.tokens
                    while not job.queue.empty():  # coalesce what piled up
                        nxt = job.queue.get_nowait()
                        if not isinstance(nxt, TextDelta):
                            pending = nxt
                            break
                        text += nxt.text
                        n += nxt.tokens
                    yield TextDelta(text, n)
                elif isinstance(item, EdgedError | BaseException):
                    raise item
                else:
                    yield item
                    if isinstance(item, Finished):
                        return
        finally:
            self._jobs.pop(job_id, None)
            if self._conn is conn:
                with contextlib.suppress(OSError, ValueError):
                    conn.send(("cancel", job_id))
