"""The OpenAI-compatible HTTP front door (docs/http.md) against the real daemon: the openai
SDK as the client; the scripted OpenAI-compatible server as the routed cloud where the
output must be known; the fake local backend for the error paths; the real local model for
one streamed and one whole completion. Raw sockets for what no SDK sends."""

from __future__ import annotations

import json
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from tests.helpers import Broker, Daemon, free_port
from tests.scripted_cloud import (
    Call,
    ScriptedCloud,
    call_fragments,
    cloud_env,
    finish,
    stream,
    text,
)

pytestmark = pytest.mark.integration

TOKEN = "ghp_" + "A" * 36  # a GitHub token: configs/guardian/default.toml blocks it
ALARM = {
    "type": "function",
    "function": {
        "name": "set_alarm",
        "description": "Set an alarm",
        "parameters": {
            "type": "object",
            "properties": {"hour": {"type": "integer"}, "minute": {"type": "integer"}},
            "required": ["hour", "minute"],
        },
    },
}


def _start(broker: Broker, log_dir: Path, **env: str) -> tuple[Daemon, int]:
    port = free_port()
    d = Daemon(
        broker_port=broker.port,
        device_id=f"h{uuid.uuid4().hex[:10]}",
        log_path=log_dir / "edged.log",
        extra_env={"EDGED_HTTP__ENABLED": "true", "EDGED_HTTP__PORT": str(port), **env},
    )
    d.start()
    return d, port


@pytest.fixture(scope="module")
def fake(
    broker: Broker, cloud: ScriptedCloud, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Daemon, int]]:
    """A daemon with the echoing fake local backend and the scripted cloud."""
    d, port = _start(
        broker,
        tmp_path_factory.mktemp("http-fake"),
        **cloud_env(
            cloud,
            EDGED_CLOUD__READ_TIMEOUT_S="30",
            EDGED_HTTP__BODY_TIMEOUT_S="2",
            EDGED_INGRESS__MAX_PAYLOAD_BYTES="4096",
        ),
    )
    yield d, port
    d.stop()


def sdk(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)


def test_real_model_streams_and_answers_whole(
    broker: Broker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    d, port = _start(broker, tmp_path_factory.mktemp("http-real"))
    try:
        client = sdk(port)
        msgs = [{"role": "user", "content": "Name a colour."}]
        whole = client.chat.completions.create(model="local", messages=msgs, max_tokens=16)
        assert whole.object == "chat.completion"
        assert whole.choices[0].finish_reason in ("stop", "length")
        assert whole.choices[0].message.content
        ext = whole.model_extra["edged"]
        assert ext["route"]["backend"] == "local" and "energy" in ext and "guardian" in ext
        parts, finishes, extras = [], [], []
        for c in client.chat.completions.create(
            model="auto", messages=msgs, max_tokens=16, stream=True
        ):
            if c.choices:
                parts.append(c.choices[0].delta.content or "")
                finishes.append(c.choices[0].finish_reason)
            if c.model_extra and "edged" in c.model_extra:
                extras.append(c.model_extra["edged"])
        assert "".join(parts), parts
        assert finishes[-1] in ("stop", "length") and all(f is None for f in finishes[:-1])
        assert len(extras) == 1 and extras[0]["usage"]["completion_tokens"] >= 1
        models = [m.id for m in client.models.list()]
        assert models == ["auto", "local"]
    finally:
        d.stop()


def test_whole_and_streamed_text_from_the_routed_cloud(
    fake: tuple[Daemon, int], cloud: ScriptedCloud
) -> None:
    cloud.clear()
    cloud.script(stream(text("Hel", "lo."), finish("stop")), stream(text("a", "b", "c"), finish()))
    client = sdk(fake[1])
    msgs = [{"role": "user", "content": "hi"}]
    r = client.chat.completions.create(model="cloud", messages=msgs)
    assert r.choices[0].message.content == "Hello."
    chunks = list(
        client.chat.completions.create(
            model="cloud", messages=msgs, stream=True, stream_options={"include_usage": True}
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "abc"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert [m.id for m in client.models.list()] == ["auto", "local", "cloud"]


def test_a_tool_call_reaches_the_sdk_whole(fake: tuple[Daemon, int], cloud: ScriptedCloud) -> None:
    args = '{"hour": 6, "minute": 30}'
    cloud.clear()
    answer = stream(
        call_fragments([Call("set_alarm", args, id="call_1")], size=1), finish("tool_calls")
    )
    cloud.script(answer, answer)
    client = sdk(fake[1])
    msgs = [{"role": "user", "content": "wake me at 6:30"}]
    r = client.chat.completions.create(model="cloud", messages=msgs, tools=[ALARM])
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, call.function.arguments) == ("call_1", "set_alarm", args)
    assert cloud.last["tools"] == [ALARM]
    deltas = [
        c.choices[0].delta
        for c in client.chat.completions.create(
            model="cloud",
            messages=msgs,
            tools=[ALARM],
            stream=True,
        )
        if c.choices
    ]
    calls = [tc for dl in deltas for tc in (dl.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.arguments == args and calls[0].index == 0


def test_a_guardian_refusal_is_403_blocked(fake: tuple[Daemon, int]) -> None:
    client = sdk(fake[1])
    msgs = [{"role": "user", "content": f"my token is {TOKEN}"}]
    for streamed in (False, True):
        with pytest.raises(openai.PermissionDeniedError) as e:
            r = client.chat.completions.create(model="local", messages=msgs, stream=streamed)
            if streamed:
                list(r)
        assert e.value.status_code == 403 and e.value.code == "blocked"
        assert TOKEN not in str(e.value.body)


def test_errors_map_to_openai_statuses(fake: tuple[Daemon, int]) -> None:
    client = sdk(fake[1])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "bad_request" and "model" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:  # the MQTT limits: max_tokens
        client.chat.completions.create(
            model="local", messages=[{"role": "user", "content": "x"}], max_tokens=10**6
        )
    assert "max_tokens" in e.value.message
    with pytest.raises(openai.BadRequestError):  # last turn must be the user's
        client.chat.completions.create(model="local", messages=[{"role": "system", "content": "x"}])
    url = f"http://127.0.0.1:{fake[1]}/v1/chat/completions"
    bad = httpx.post(url, content=b'{"model": "local", "messages": [', timeout=10)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_request"
    big = httpx.post(url, content=b"{" + b" " * 8000 + b"}", timeout=10)
    assert big.status_code == 413 and big.json()["error"]["code"] == "too_large"
    assert httpx.get(f"http://127.0.0.1:{fake[1]}/healthz", timeout=10).json()["status"] == "ok"


def _raw(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def test_a_trickled_body_gets_408_and_frees_nothing_it_held(fake: tuple[Daemon, int]) -> None:
    s = _raw(fake[1])
    s.sendall(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200\r\n\r\n"
    )
    t0 = time.monotonic()
    reply = b""
    for _ in range(10):  # one byte a second; the body timeout is 2 s
        try:
            s.sendall(b" ")
        except OSError:
            break
        s.settimeout(1.0)
        try:
            reply += s.recv(4096)
        except TimeoutError:
            continue
        if reply:
            break
    assert reply.startswith(b"HTTP/1.1 408"), reply
    assert time.monotonic() - t0 < 5
    s.close()


def test_many_idle_connections_do_not_block_a_request(fake: tuple[Daemon, int]) -> None:
    idle = [_raw(fake[1]) for _ in range(200)]
    try:
        r = sdk(fake[1]).chat.completions.create(
            model="local", messages=[{"role": "user", "content": "still here?"}]
        )
        assert r.choices[0].message.content
    finally:
        for s in idle:
            s.close()


def test_a_disconnecting_client_cancels_its_generation(
    fake: tuple[Daemon, int], cloud: ScriptedCloud
) -> None:
    cloud.clear()
    cloud.script(stream(text(*(["word "] * 300)), finish(), pace_s=0.05))  # 15 s if let run
    body = {"model": "cloud", "stream": True, "messages": [{"role": "user", "content": "long"}]}
    with httpx.stream(
        "POST", f"http://127.0.0.1:{fake[1]}/v1/chat/completions", json=body, timeout=10
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and "word" in line:
                break  # got text; now hang up
    deadline = time.monotonic() + 5
    while cloud._live and time.monotonic() < deadline:  # the upstream stream was closed
        time.sleep(0.1)
    assert not cloud._live, "the scripted server is still streaming to edged"
    # and the daemon is free at once for the next request
    cloud.script(stream(text("next"), finish()))
    r2 = sdk(fake[1]).chat.completions.create(
        model="cloud", messages=[{"role": "user", "content": "x"}], timeout=5
    )
    assert r2.choices[0].message.content == "next"


def test_a_non_loopback_bind_without_a_key_refuses_to_start(broker: Broker, tmp_path: Path) -> None:
    d = Daemon(
        broker_port=broker.port,
        device_id=f"h{uuid.uuid4().hex[:10]}",
        log_path=tmp_path / "edged.log",
        extra_env={
            "EDGED_LOCAL__BACKEND": "fake",
            "EDGED_HTTP__ENABLED": "true",
            "EDGED_HTTP__HOST": "0.0.0.0",
            "EDGED_HTTP__PORT": str(free_port()),
        },
    )
    d.start(wait_online=False)
    assert d.proc is not None and d.proc.wait(timeout=60) == 2
    d.stop()
    assert "not loopback" in d.logs()


def test_a_key_is_required_when_set(broker: Broker, tmp_path: Path) -> None:
    d, port = _start(broker, tmp_path, EDGED_LOCAL__BACKEND="fake", EDGED_HTTP_API_KEY="s3cret")
    try:
        with pytest.raises(openai.AuthenticationError):
            sdk(port).models.list()
        good = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret")
        assert [m.id for m in good.models.list()] == ["auto", "local"]
        assert "s3cret" not in d.logs()
        assert json.loads(httpx.get(f"http://127.0.0.1:{port}/healthz").text)["status"] == "ok"
    finally:
        d.stop()


def test_a_secret_in_the_cloud_answer_never_reaches_the_client(
    fake: tuple[Daemon, int], cloud: ScriptedCloud
) -> None:
    cloud.clear()
    cloud.script(stream(text("Sure, it is ", TOKEN[:10], TOKEN[10:], " there."), finish()))
    body = {"model": "cloud", "stream": True, "messages": [{"role": "user", "content": "token?"}]}
    r = httpx.post(f"http://127.0.0.1:{fake[1]}/v1/chat/completions", json=body, timeout=30)
    assert TOKEN not in r.text and TOKEN[:10] not in r.text
    if r.status_code == 200:  # text went out first: one error event, then [DONE]
        events = [ln[6:] for ln in r.text.splitlines() if ln.startswith("data: ")]
        assert events[-1] == "[DONE]"
        assert json.loads(events[-2])["error"]["code"] == "blocked"
    else:
        assert r.status_code == 403 and r.json()["error"]["code"] == "blocked"
