"""The worker process's side of :mod:`.process`: load the model, then serve jobs from the
pipe in order.

Messages from the parent: ``("job", id, Request)``, ``("cancel", id)``, ``("stop",)``. To
the parent: ``("ready", load_s, rss_before_mb, rss_after_mb)`` or ``("load_failed", why)``,
then per job ``("ev", id, event-or-error)`` (its text gathered on the decode thread,
``[local] emit_flush_ms``: :mod:`.gather`) ... and ``("stats", id, tokens_per_s, ttft_s,
sessions)`` (the conversation cache's figures);
``None`` ends the stream. The decode is :class:`~.engine.LlamaEngine`'s, unchanged.
"""

from __future__ import annotations

import queue
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from edged.backends.llama.engine import LlamaEngine
from edged.backends.llama.gather import gathering
from edged.config import LocalModelConfig
from edged.types import Request


def worker_main(
    conn: Connection,
    name: str,
    model_path: str,
    cfg: dict[str, Any],
    log: tuple[str, str] = ("info", "logfmt"),
) -> None:
    """The worker process: load the model, then serve jobs from the pipe in order."""
    from edged.logs import setup as setup_logging  # the child imports llama.cpp, not the parent

    setup_logging(*log)  # same stdout (the journal) as the daemon

    engine = LlamaEngine(
        name=name, model_path=Path(model_path), cfg=LocalModelConfig.model_validate(cfg)
    )
    # The decode thread only queues what it emits; a sender thread pickles and writes it,
    # so pipe writes never sit between two tokens.
    outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()

    def sender() -> None:
        try:
            while (msg := outbox.get()) is not None:
                conn.send(msg)
        except (OSError, ValueError):
            return

    send = outbox.put

    threading.Thread(target=sender, name="worker-send", daemon=True).start()
    t0 = time.monotonic()
    try:
        engine.load()
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

        engine.decode(request, cancel, gathering(emit, engine.cfg.emit_flush_ms))
        sessions = None if engine.sessions is None else engine.sessions.stats()
        send(("stats", job_id, engine.tokens_per_s, engine.ttft_s, sessions))
        with lock:
            cancels.pop(job_id, None)
    send(None)
