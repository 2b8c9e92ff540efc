"""The local model in a worker process: llama.cpp dying does not take the daemon down."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import pytest

from edged.backends.llama import process as llama_proc
from edged.backends.llama.process import ProcessLlamaBackend
from edged.config import LocalModelConfig
from edged.errors import BackendFailed
from edged.types import ChatMessage, Finished, ReplyAddress, Request, StreamEvent, TextDelta
from tests.helpers import Broker, Client, CloudServer, Daemon

pytestmark = pytest.mark.integration


def worker_pid(daemon_pid: int) -> int:
    """The model worker: the daemon's child running multiprocessing's spawn_main."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == daemon_pid and "spawn_main" in cmd and "resource_tracker" not in cmd:
            return int(entry.name)
    raise AssertionError("no model worker process found")


def ask(c: Client, d: Daemon, body: dict[str, object]) -> list[dict[str, object]]:
    rid = str(body.setdefault("id", uuid.uuid4().hex[:8]))
    c.publish(f"edged/{d.device_id}/request", json.dumps(body), response_topic="reply/w")
    return [m.json() for m in c.collect(rid, timeout_s=60)]


def test_worker_killed_mid_answer_then_restarted(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_LOCAL__ISOLATION="process")
    assert d.proc is not None
    with Client(broker.port) as c:
        c.subscribe("reply/w")
        rid = "crash-1"
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps(
                {"id": rid, "prompt": "Write a long story about a dragon.", "max_tokens": 400}
            ),
            response_topic="reply/w",
        )
        assert c.get(timeout_s=30).json()["type"] == "chunk"
        os.kill(worker_pid(d.proc.pid), signal.SIGKILL)  # llama.cpp "aborts"
        final = [m.json() for m in c.collect(rid, timeout_s=30)][-1]
        # text had been sent: no fallback (it would repeat), a clean error instead
        assert final["type"] == "error" and final["code"] == "unavailable"
        assert "worker died" in str(final["message"])
        assert d.proc.poll() is None  # the daemon lives
        # the worker comes back (with back-off) and serves again
        deadline = time.monotonic() + 60
        while True:
            final = ask(c, d, {"prompt": "Say hi.", "max_tokens": 4})[-1]
            if final["type"] == "result":
                break
            assert final["code"] == "unavailable", final
            assert time.monotonic() < deadline, d.logs()
            time.sleep(0.5)
    assert "event=worker_died" in d.logs() and "event=worker_restarted" in d.logs()


def test_while_the_worker_restarts_requests_go_to_the_cloud_but_private_ones_do_not(
    make_daemon: Callable[..., Daemon], broker: Broker, cloud_server: CloudServer
) -> None:
    d = make_daemon(
        EDGED_LOCAL__ISOLATION="process",
        EDGED_CLOUD__ENABLED="true",
        EDGED_CLOUD__BASE_URL=cloud_server.base_url,
    )
    assert d.proc is not None
    with Client(broker.port) as c:
        c.subscribe("reply/w")
        os.kill(worker_pid(d.proc.pid), signal.SIGKILL)
        # the death is noticed at once (the pipe closes); on a loaded machine "at once" took
        # longer than the 0.1 s this slept, and the request then waited for the restarted
        # worker instead of going to the cloud
        deadline = time.monotonic() + 10
        while "event=worker_died" not in d.logs():
            assert time.monotonic() < deadline, d.logs()[-3000:]
            time.sleep(0.02)
        final = ask(c, d, {"prompt": "Say hi.", "max_tokens": 4})[-1]
        assert final["type"] == "result"
        assert final["route"]["backend"] == "cloud"  # type: ignore[index]
        assert {"local_down", "local_failed"} & set(final["route"]["reasons"])  # type: ignore[index]
        secret = f"pangolin-{uuid.uuid4().hex[:6]}"
        private = ask(c, d, {"prompt": f"Say {secret}.", "max_tokens": 4, "sensitivity": "private"})
        assert private[-1]["type"] in ("error", "result")
        if private[-1]["type"] == "result":  # the worker was already back
            assert private[-1]["route"]["backend"] == "local"  # type: ignore[index]
        else:
            assert private[-1]["code"] == "unavailable"
    assert not cloud_server.cloud_saw(secret)  # a private request never reaches the cloud


def test_requests_queued_behind_the_dying_one_are_served_by_the_restarted_worker(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    """No cloud: the requests waiting behind the answer being decoded never started, so they
    are sent again to the restarted worker and answered, once each; the interrupted one ends
    with ``unavailable`` (its text had been sent)."""
    d = make_daemon(EDGED_LOCAL__ISOLATION="process")
    assert d.proc is not None
    with Client(broker.port) as c:
        c.subscribe("reply/q")
        topic = f"edged/{d.device_id}/request"
        c.publish(
            topic,
            json.dumps(
                {"id": "long", "prompt": "Write a long story about a dragon.", "max_tokens": 400}
            ),
            response_topic="reply/q",
        )
        first = c.get(timeout_s=30).json()
        assert first["type"] == "chunk" and first["id"] == "long"
        queued = {"q1": 60_000, "q2": 60_000, "q3": None}  # deadline_ms
        for rid, deadline_ms in queued.items():
            body: dict[str, object] = {"id": rid, "prompt": "Say hi.", "max_tokens": 6}
            if deadline_ms is not None:
                body["deadline_ms"] = deadline_ms
            c.publish(topic, json.dumps(body), response_topic="reply/q")
        time.sleep(0.3)  # admitted, routed and sent to the worker, behind "long"
        os.kill(worker_pid(d.proc.pid), signal.SIGKILL)
        finals: dict[str, dict[str, object]] = {}
        seen: list[tuple[str, str]] = []
        deadline = time.monotonic() + 90
        while len(finals) < 4:
            assert time.monotonic() < deadline, (finals, d.logs()[-3000:])
            try:
                msg = c.get(timeout_s=5).json()
            except queue.Empty:
                continue
            seen.append((str(msg["id"]), str(msg["type"])))
            if msg["type"] in ("result", "error"):
                assert msg["id"] not in finals, msg  # one final reply each
                finals[str(msg["id"])] = msg
        assert finals["long"]["type"] == "error" and finals["long"]["code"] == "unavailable"
        for rid in queued:
            assert finals[rid]["type"] == "result", finals[rid]
            assert finals[rid]["route"]["backend"] == "local"  # type: ignore[index]
        time.sleep(0.5)
        with pytest.raises(queue.Empty):  # nothing more for any of them
            c.get(timeout_s=0.5)
    logs = d.logs()
    assert "requeued=3" in logs and logs.count("event=request_replayed") == 3
    assert d.proc.poll() is None


def request(prompt: str, max_tokens: int, deadline_at_s: float | None = None) -> Request:
    return Request(
        id=uuid.uuid4().hex[:6],
        messages=(ChatMessage("user", prompt),),
        max_tokens=max_tokens,
        temperature=0.0,
        stream=True,
        route="auto",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
        deadline_at_s=deadline_at_s,
    )


async def drain(events: AsyncGenerator[StreamEvent, None]) -> list[StreamEvent]:
    return [ev async for ev in events]


async def until_healthy(b: ProcessLlamaBackend, timeout_s: float = 60.0) -> None:
    t_end = time.monotonic() + timeout_s
    while not b.healthy():
        assert time.monotonic() < t_end, "the worker did not come back"
        await asyncio.sleep(0.05)


def test_a_queued_request_whose_deadline_the_restart_cannot_meet_fails_at_once(
    model_file: Path,
) -> None:
    """The backend itself (a real worker process): a queued request with time to wait is
    replayed and finishes; one whose deadline comes before the restart can finish fails at
    once, before its first token, so the pipeline may serve it elsewhere."""

    async def main() -> None:
        b = ProcessLlamaBackend(
            name="local", model_path=model_file, cfg=LocalModelConfig(n_threads=1, n_ctx=1024)
        )
        await b.start()
        try:
            long = b.generate(request("Write a long story about a dragon.", 400))
            while not isinstance(await long.__anext__(), TextDelta):
                pass
            patient = asyncio.create_task(drain(b.generate(request("Say hi.", 4))))
            hurried = asyncio.create_task(
                drain(b.generate(request("Say hi.", 4, time.monotonic() + 0.3)))
            )
            await asyncio.sleep(0.1)  # both sent to the worker, behind "long"
            assert b.waiting == 3
            os.kill(b._proc.pid, signal.SIGKILL)
            with pytest.raises(BackendFailed) as failed:
                async for _ in long:  # what was decoded before the kill, then the failure
                    pass
            assert not failed.value.before_first_token  # text was sent: no fallback
            with pytest.raises(BackendFailed) as failed:
                await hurried
            assert failed.value.before_first_token
            assert not b.healthy()  # it failed before the restart, not at its deadline
            events = await asyncio.wait_for(patient, 60)
            assert isinstance(events[-1], Finished) and events[-1].usage.completion_tokens > 0
            assert b.replayed == 1 and b.waiting == 0
        finally:
            await b.close()

    asyncio.run(main())


def test_the_restart_back_off_resets_after_a_healthy_run(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Crashes in quick succession climb the back-off; a worker that then ran
    ``HEALTHY_RESET_S`` (3 s here, 60 s in service) is restarted after the first step again."""
    # two steps are enough to see it climb and reset; a second step of 1 s, not 4, saves 6 s
    monkeypatch.setattr(llama_proc, "RESTART_BACKOFF_S", (0.1, 1.0))
    monkeypatch.setattr(llama_proc, "HEALTHY_RESET_S", 3.0)

    async def main() -> None:
        b = ProcessLlamaBackend(
            name="local", model_path=model_file, cfg=LocalModelConfig(n_threads=1, n_ctx=256)
        )
        await b.start()

        async def crash() -> float | None:
            crashes = b.crashes
            os.kill(b._proc.pid, signal.SIGKILL)
            t_end = time.monotonic() + 10
            while b.crashes == crashes:
                assert time.monotonic() < t_end, "the death was not noticed"
                await asyncio.sleep(0.02)
            await until_healthy(b)
            return b.last_restart_delay_s

        try:
            assert await crash() == 0.1
            assert await crash() == 1.0  # died young again: the next step
            assert await crash() == 1.0  # and stays there
            await asyncio.sleep(3.2)  # a healthy run
            assert await crash() == 0.1
            events = await drain(b.generate(request("Say hi.", 4)))
            assert isinstance(events[-1], Finished)
        finally:
            await b.close()

    asyncio.run(main())


def test_a_failed_restart_is_tried_again(
    model_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model file vanishes while the worker is down: the restart fails (and a request
    waiting for it fails before its first token), then is tried again with back-off until
    the file is back."""
    monkeypatch.setattr(llama_proc, "RESTART_BACKOFF_S", (0.1, 0.3))
    link = tmp_path / "model.gguf"
    link.symlink_to(model_file)

    async def main() -> None:
        b = ProcessLlamaBackend(
            name="local", model_path=link, cfg=LocalModelConfig(n_threads=1, n_ctx=256)
        )
        await b.start()
        try:
            long = b.generate(request("Write a long story about a dragon.", 400))
            while not isinstance(await long.__anext__(), TextDelta):
                pass
            waiting = asyncio.create_task(drain(b.generate(request("Say hi.", 4))))
            await asyncio.sleep(0.1)
            link.unlink()
            os.kill(b._proc.pid, signal.SIGKILL)
            with pytest.raises(BackendFailed):
                async for _ in long:
                    pass
            with pytest.raises(BackendFailed) as failed:
                await asyncio.wait_for(waiting, 60)
            assert failed.value.before_first_token
            assert "could not be restarted" in failed.value.message
            await asyncio.sleep(1.0)  # a few more failed tries
            assert not b.healthy()
            link.symlink_to(model_file)
            await until_healthy(b)
            events = await drain(b.generate(request("Say hi.", 4)))
            assert isinstance(events[-1], Finished)
        finally:
            await b.close()

    asyncio.run(main())
