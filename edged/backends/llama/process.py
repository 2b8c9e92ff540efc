"""The local model in a worker process: a crash in llama.cpp cannot take the daemon down.

llama.cpp aborts its whole process on some errors (a failed allocation, an assertion). Here
the model lives in a child process; the daemon talks to it over a pipe. When the child dies,
the request it was serving fails (before its first token the pipeline may still offload it),
the backend reports itself unhealthy, and the child is restarted with back-off
(``RESTART_BACKOFF_S``; a worker that had run ``HEALTHY_RESET_S`` before it died starts the
back-off from its first step again). Requests queued behind the one being served had not
started: they are sent again to the restarted worker, in their order, when the restart can
be expected to finish within their deadlines; otherwise they fail before their first token,
so the router's fallback rules apply to them. A decode stuck past its deadline is ended the
same way: the child is killed and restarted.

The decode itself is :class:`~.engine.LlamaEngine`'s, the same the thread variant runs, in
the child unchanged (it reports only through ``emit`` and checks a cancel flag); the child's
side of the pipe is :mod:`.worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing as mp
import time
from collections.abc import AsyncGenerator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar

from edged.aio import take_cancel
from edged.backends.base import BackendSpec, register
from edged.backends.llama.backoff import Backoff
from edged.backends.llama.engine import STUCK_GRACE_S, Merged, finish_cancelled, stuck_reason
from edged.backends.llama.pipe import FrameReader
from edged.backends.llama.worker import worker_main
from edged.config import LocalModelConfig
from edged.errors import BackendFailed, Unavailable
from edged.types import BackendStats, Finished, Request, Started, StreamEvent, TextDelta

log = logging.getLogger("edged.backend.llama_proc")

#: Back-off between restarts of a worker that keeps dying, seconds.
RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: A worker that ran this long before it died counts as healthy: the back-off starts again
#: from its first step, seconds.
HEALTHY_RESET_S = 60.0
#: How often one queued request is sent again to a restarted worker.
MAX_REPLAYS = 2


# --- the parent ------------------------------------------------------------------------------


class _Job:
    __slots__ = (
        "conn",
        "deadline_at_s",
        "got_text",
        "loop",
        "queue",
        "replays",
        "request",
        "started_at_s",
        "waiting_restart",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, request: Request) -> None:
        self.loop = loop
        self.request = request
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.started_at_s: float | None = None
        self.deadline_at_s = request.deadline_at_s
        self.got_text = False
        self.conn: Connection | None = None  # where it was last sent
        self.replays = 0
        self.waiting_restart = False


@register("llama_process")
class ProcessLlamaBackend:
    """A llama.cpp model in a child process."""

    needs_model_file: ClassVar[bool] = True
    #: Tools, tool_choice and response_format are honoured (docs/tools.md).
    supports_tools: ClassVar[bool] = True

    @classmethod
    def from_spec(cls, spec: BackendSpec) -> ProcessLlamaBackend:
        """The model file in ``spec``, run as ``[local]`` says; the worker logs as ``[log]``."""
        assert spec.model_path is not None
        return cls(
            name=spec.name,
            model_path=spec.model_path,
            cfg=spec.cfg.local,
            log_level=spec.cfg.log.level,
            log_format=spec.cfg.log.format,
        )

    def __init__(
        self,
        *,
        name: str,
        model_path: Path,
        cfg: LocalModelConfig,
        log_level: str = "info",
        log_format: str = "logfmt",
    ) -> None:
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
        self._backoff = Backoff(RESTART_BACKOFF_S, HEALTHY_RESET_S)
        #: Seconds the last scheduled restart waited (None before any).
        self.last_restart_delay_s: float | None = None
        self.replayed = 0  # queued requests sent again to a restarted worker
        #: Seconds the last start took (process spawn, imports, model load).
        self.start_s: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._watched: int | None = None  # the pipe the event loop reads
        self._restart_pending_s: float | None = None
        self.load_s: float | None = None
        self.rss_before_load_mb = float("nan")
        self.rss_after_load_mb = float("nan")
        self.tokens_per_s: float | None = None
        self.ttft_s: float | None = None
        self.sessions: dict[str, float | int | None] | None = None  # the worker's cache
        self.crashes = 0
        self.last_exit: str | None = None

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start the worker and wait until its model is loaded."""
        self._loop = asyncio.get_running_loop()
        await self._loop.run_in_executor(None, self._spawn)
        self._watch()

    def _spawn(self) -> None:
        t_spawn = time.monotonic()
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
            raise Unavailable(
                f"the local model worker died while loading (exit {proc.exitcode})"
            ) from None
        if msg[0] != "ready":
            proc.join(5)
            raise Unavailable(f"the local model failed to load: {msg[1]}")
        self.load_s, self.rss_before_load_mb, self.rss_after_load_mb = msg[1], msg[2], msg[3]
        self._backoff.up(time.monotonic())
        self.start_s = time.monotonic() - t_spawn
        self._proc, self._conn, self._ready = proc, parent, True
        log.info(
            "event=model_loaded backend=%s path=%s load_s=%.2f worker_pid=%d "
            "spawn_s=%.2f rss_before_mb=%.1f rss_after_mb=%.1f",
            self.name,
            self.model_path,
            self.load_s,
            proc.pid,
            time.monotonic() - t0,
            self.rss_before_load_mb,
            self.rss_after_load_mb,
        )

    def _watch(self) -> None:
        """Read the new worker's pipe on the event loop (:mod:`.pipe`: one wake-up per
        message, no reader thread); its end of file is the worker's death."""
        loop, conn, proc = self._loop, self._conn, self._proc
        assert loop is not None
        if conn is None or proc is None:
            return
        reader = FrameReader(conn.fileno())

        def readable() -> None:
            try:
                msgs = reader.read()
            except Exception as e:  # a broken pipe or message: as if the worker died
                log.error("event=worker_pipe_failed backend=%s error=%r", self.name, str(e))
                msgs = None
            if msgs is None:  # the worker is gone: reap it off the loop, then the death path
                loop.remove_reader(reader.fd)
                if self._watched == reader.fd:
                    self._watched = None
                reaped = loop.run_in_executor(None, proc.join, 2)
                reaped.add_done_callback(lambda _: self._on_death(proc))
                return
            for msg in msgs:
                self._on_message(msg)

        loop.add_reader(reader.fd, readable)
        self._watched = reader.fd

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
            if len(msg) > 4 and msg[4] is not None:
                self.sessions = msg[4]

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
        delay = self._backoff.died(time.monotonic())
        # Ready again in about the back-off plus a load; a queued request that has that long
        # left waits for it, the others fail now (the pipeline may serve them elsewhere).
        ready_at_s = time.monotonic() + delay + (self.start_s or 0.0)
        kept = 0
        for job in self._jobs.values():
            if job.waiting_restart:
                kept += 1
            elif (
                job.started_at_s is None
                and job.replays < MAX_REPLAYS
                and (job.deadline_at_s is None or ready_at_s < job.deadline_at_s)
            ):
                job.waiting_restart = True
                kept += 1
            else:
                job.queue.put_nowait(
                    BackendFailed(
                        f"the local model worker died ({self.last_exit})",
                        before_first_token=not job.got_text,
                    )
                )
        log.error(
            "event=worker_died backend=%s %s in_flight=%d requeued=%d restart_in_s=%.1f",
            self.name,
            self.last_exit.replace(" ", "_"),
            len(self._jobs) - kept,
            kept,
            delay,
        )
        self._schedule_restart(delay)

    def _schedule_restart(self, delay: float) -> None:
        if self._restart_task is not None and not self._restart_task.done():
            # the new worker died before its restart task ended: that task schedules again
            self._restart_pending_s = delay
            return
        self.last_restart_delay_s = delay

        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await self.start()
            except Exception as e:
                log.error("event=worker_restart_failed backend=%s error=%r", self.name, str(e))
                self._fail_waiting(f"the local model worker could not be restarted: {e}")
                self._restart_pending_s = self._backoff.died(time.monotonic())
            else:
                log.info("event=worker_restarted backend=%s after_s=%.1f", self.name, delay)
                self._replay()
            self._restart_task = None
            pending, self._restart_pending_s = self._restart_pending_s, None
            if pending is not None and not self._closing:
                self._schedule_restart(pending)

        self._restart_task = asyncio.create_task(later(), name=f"restart-{self.name}")

    def _replay(self) -> None:
        """Send the requests that were queued when the worker died to the new one, in order."""
        conn = self._conn
        if conn is None:  # the new worker died already: they wait for the next one
            return
        for job_id in sorted(self._jobs):
            job = self._jobs[job_id]
            if not job.waiting_restart:
                continue
            job.waiting_restart = False
            job.replays += 1
            try:
                conn.send(("job", job_id, job.request))
            except (OSError, ValueError):  # it is dying: the death path decides again
                continue
            job.conn = conn
            self.replayed += 1
            log.info(
                "event=request_replayed backend=%s id=%s replays=%d",
                self.name,
                job.request.id,
                job.replays,
            )

    def _fail_waiting(self, why: str) -> None:
        for job in self._jobs.values():
            if job.waiting_restart:
                job.waiting_restart = False
                job.queue.put_nowait(BackendFailed(why, before_first_token=True))

    def healthy(self) -> bool:
        """The worker runs, has its model, and no job is stuck."""
        return self._ready and self.stuck() is None

    @property
    def resident(self) -> bool:
        """Loaded at start and kept (:class:`~edged.backends.resident.Resident` loads on demand)."""
        return True

    def stats(self) -> BackendStats:
        """Queue depth, measured speeds, and whether a decode is stuck."""
        return BackendStats(
            queue_depth=self.waiting,
            tokens_per_s=self.tokens_per_s,
            ttft_s=self.ttft_s,
            stuck=self.stuck(),
            sessions=self.sessions,
        )

    @property
    def waiting(self) -> int:
        """Generations queued or running."""
        return len(self._jobs)

    def stuck(self, grace_s: float = STUCK_GRACE_S) -> str | None:
        """Why the running job looks stuck (past its deadline plus ``grace_s``), or None."""
        now = time.monotonic()
        for job in self._jobs.values():
            if job.started_at_s is not None:
                why = stuck_reason(job.started_at_s, job.deadline_at_s, now, grace_s)
                if why is not None:
                    return why
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
        self._fail_waiting("edged is stopping")
        if self._watched is not None and self._loop is not None:
            self._loop.remove_reader(self._watched)
            self._watched = None
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
            raise BackendFailed(
                f"the local model worker is restarting ({self.last_exit})", before_first_token=True
            )
        loop = asyncio.get_running_loop()
        job_id = next(self._ids)
        job = _Job(loop, request)
        self._jobs[job_id] = job
        try:
            conn.send(("job", job_id, request))
        except (OSError, ValueError):
            self._jobs.pop(job_id, None)
            raise BackendFailed("the local model worker is gone", before_first_token=True) from None
        job.conn = conn
        try:
            events = Merged(job.queue)
            produced = 0
            while True:
                try:
                    ev = await events.next()
                except asyncio.CancelledError:
                    if not take_cancel():
                        raise
                    # barge-in: stop the decode, end with its own usage (within a token)
                    with contextlib.suppress(OSError, ValueError):
                        conn.send(("cancel", job_id))
                    running = job.started_at_s is not None
                    ev = await finish_cancelled(events, running, produced)
                if isinstance(ev, TextDelta):
                    produced += ev.tokens
                yield ev
                if isinstance(ev, Finished):
                    return
        finally:
            self._jobs.pop(job_id, None)
            sent = job.conn
            if sent is not None and sent is self._conn:  # the worker it was sent to still runs
                with contextlib.suppress(OSError, ValueError):
                    sent.send(("cancel", job_id))
