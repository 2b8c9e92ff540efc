"""Conversations on the real default model: each conversation's KV state is kept and reused
only where the new prompt's tokens truly extend it, never by another model setup, within
the RAM budget, spilled to disk and read back, and kept across a cancel.

The engine is driven directly (its decode is what the worker process runs); one test goes
through the daemon for ``usage.cached_tokens`` on the wire. How much sooner the first token
comes is measured by bench/conversations.py, not asserted here.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from edged.backends.llama.engine import LlamaEngine
from edged.backends.llama.sessions import common_prefix
from edged.config import LocalModelConfig
from edged.types import ChatMessage, Finished, ReplyAddress, Request, TextDelta
from tests.helpers import TEST_N_THREADS, Broker, Client, Daemon

pytestmark = pytest.mark.integration


def note(subject: str, lines: int = 8) -> str:
    body = "\n".join(f"Entry {i}: at {subject} we counted {i * 7} items." for i in range(lines))
    return f"My note about {subject}.\n{body}\nRemember it."


def engine(model_file: Path, **cfg: Any) -> LlamaEngine:
    e = LlamaEngine(
        name="local",
        model_path=model_file,
        cfg=LocalModelConfig(n_threads=TEST_N_THREADS, n_ctx=1024, **cfg),
    )
    e.load()
    return e


def turn(
    e: LlamaEngine,
    messages: list[ChatMessage],
    conversation: str | None,
    stop_after: int | None = None,
) -> tuple[str, Finished]:
    """One decode; ``stop_after``: cancel once that many text pieces came."""
    req = Request(
        id=uuid.uuid4().hex[:8],
        messages=tuple(messages),
        max_tokens=8 if stop_after is None else 200,
        temperature=0.0,
        stream=True,
        route="local",
        sensitivity="normal",
        reply=ReplyAddress("reply/x"),
        received_at_s=time.monotonic(),
        conversation=conversation,
    )
    cancel = threading.Event()
    out: list[Any] = []

    def emit(ev: Any) -> None:
        out.append(ev)
        n = sum(isinstance(x, TextDelta) for x in out)
        if stop_after is not None and n >= stop_after:
            cancel.set()

    e.decode(req, cancel, emit)
    fin = out[-1]
    assert isinstance(fin, Finished), out
    return "".join(x.text for x in out if isinstance(x, TextDelta)), fin


def prompt(fin: Finished) -> int:
    assert fin.usage.prompt_tokens is not None
    return fin.usage.prompt_tokens


def cached(fin: Finished) -> int:
    assert fin.usage.cached_tokens is not None
    return fin.usage.cached_tokens


def test_interleaved_conversations_each_reuse_their_own_state(model_file: Path) -> None:
    e = engine(model_file)
    a = [ChatMessage("user", note("the lighthouse"))]
    b = [ChatMessage("user", note("the orchard"))]
    ta, fa = turn(e, a, "conv-a")
    tb, fb = turn(e, b, "conv-b")  # the context now holds b
    a2 = [*a, ChatMessage("assistant", ta), ChatMessage("user", "And entry 3?")]
    b2 = [*b, ChatMessage("assistant", tb), ChatMessage("user", "And entry 3?")]
    _, fa2 = turn(e, a2, "conv-a")
    _, fb2 = turn(e, b2, "conv-b")
    for first, later in ((fa, fa2), (fb, fb2)):
        # at least the whole first prompt came from the cache (its answer too, as far as
        # the history re-tokenizes the same)
        assert cached(later) >= prompt(first)
        assert cached(later) < prompt(later)
    assert e.sessions is not None
    assert e.sessions.restores == 2 and e.sessions.lookups == 4
    # the same turn without the key: only the prefix shared with the previous request (b2)
    _, fn = turn(e, a2, None)
    assert cached(fn) < prompt(fa) // 2
    assert e.sessions.lookups == 4  # a request without a key is no lookup


def test_an_edited_history_reuses_only_the_tokens_before_the_edit(model_file: Path) -> None:
    e = engine(model_file)
    a = [ChatMessage("user", note("the lighthouse"))]
    _, f1 = turn(e, a, "conv-e")
    assert e.sessions is not None
    held = list(e.sessions._ram["conv-e"].tokens)
    edited = [ChatMessage("user", note("the lighthouse").replace("Entry 6", "Entry six"))]
    edited += [ChatMessage("assistant", "ok"), ChatMessage("user", "And entry 3?")]
    turn(e, [ChatMessage("user", "Something else entirely.")], None)  # the context moves on
    _, f2 = turn(e, edited, "conv-e")
    assert e.llm is not None
    new_prompt = e.prompt_tokens(
        Request(
            id="p",
            messages=tuple(edited),
            max_tokens=8,
            temperature=0.0,
            stream=True,
            route="local",
            sensitivity="normal",
            reply=ReplyAddress("reply/x"),
            received_at_s=0.0,
        )
    )
    shared = common_prefix(held, new_prompt)
    assert 0 < shared < prompt(f1)
    assert cached(f2) == shared  # exactly the tokens before the edit


def test_budget_spill_and_no_reuse_under_another_system_prompt(
    model_file: Path, tmp_path: Path
) -> None:
    spill = tmp_path / "sessions"
    # one conversation's state (about 4 MB here) fits, two do not
    e = engine(model_file, session_cache_mb=6, session_cache_dir=spill)
    a = [ChatMessage("user", note("the lighthouse"))]
    b = [ChatMessage("user", note("the orchard"))]
    ta, fa = turn(e, a, "conv-a")
    turn(e, b, "conv-b")
    assert e.sessions is not None
    assert e.sessions.evictions == 1 and len(list(spill.glob("*.kv"))) == 1
    assert e.sessions.ram_bytes <= e.sessions.budget_bytes
    a2 = [*a, ChatMessage("assistant", ta), ChatMessage("user", "And entry 3?")]
    _, fa2 = turn(e, a2, "conv-a")
    assert e.sessions.disk_reads == 1
    assert cached(fa2) >= prompt(fa)
    assert e.sessions.ram_bytes <= e.sessions.budget_bytes
    e.llm.close()

    # the same directory, another system prompt: what is there is never restored
    other = engine(
        model_file, session_cache_mb=6, session_cache_dir=spill, system_prompt="Be terse."
    )
    _, fo = turn(other, a2, "conv-a")
    assert other.sessions is not None
    assert other.sessions.disk_reads == 0 and other.sessions.restores == 0
    assert cached(fo) == 0


def test_a_cancelled_turn_keeps_what_it_generated(model_file: Path) -> None:
    e = engine(model_file)
    a = [ChatMessage("user", note("the lighthouse") + " Now tell a long story about it.")]
    released, fin = turn(e, a, "conv-c", stop_after=4)
    assert fin.finish_reason == "cancelled"
    assert e.sessions is not None
    held = e.sessions._ram["conv-c"].tokens
    assert len(held) > prompt(fin)
    a2 = [*a, ChatMessage("assistant", released), ChatMessage("user", "Go on.")]
    turn(e, [ChatMessage("user", "Something else.")], None)
    _, f2 = turn(e, a2, "conv-c")
    assert cached(f2) > prompt(fin)


def test_cached_tokens_on_the_wire(shared_daemon: Daemon, broker: Broker) -> None:
    d = shared_daemon
    msgs: list[dict[str, str]] = [{"role": "user", "content": note("the observatory")}]
    key = f"wire-{uuid.uuid4().hex[:6]}"
    finals = []
    with Client(broker.port) as c:
        c.subscribe("reply/conv")
        for q in ("And entry 2?", "And entry 4?"):
            rid = uuid.uuid4().hex[:10]
            body = {"id": rid, "messages": msgs, "max_tokens": 8, "conversation": key}
            c.publish(f"edged/{d.device_id}/request", json.dumps(body), response_topic="reply/conv")
            final = c.collect(rid)[-1].json()
            assert final["type"] == "result", final
            finals.append(final)
            msgs = [
                *msgs,
                {"role": "assistant", "content": final["text"]},
                {"role": "user", "content": q},
            ]
    first, second = (f["usage"] for f in finals)
    assert isinstance(first["cached_tokens"], int)
    assert second["cached_tokens"] >= first["prompt_tokens"]
