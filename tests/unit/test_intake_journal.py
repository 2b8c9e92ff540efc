"""The in-flight journal (edged/ingress/journal.py) and how Ingress uses it: acknowledged once
journalled, served again at start, bounded on disk, tolerant of damage."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edged.config import Config
from edged.errors import Internal
from edged.ingress.journal import Journal, request_from_record, request_record
from edged.ingress.responder import Responder
from edged.ingress.service import Ingress
from edged.mqtt.link import Incoming
from edged.mqtt.topics import Topics
from edged.types import ChatMessage, ReplyAddress, Request

TOPICS = Topics("edged", "dev1")


def req(rid: str, content: str = "hi", deadline_at_s: float | None = None) -> Request:
    msgs = (ChatMessage("system", "be brief"), ChatMessage("user", content))
    return Request(
        id=rid,
        messages=msgs,
        max_tokens=7,
        temperature=0.2,
        stream=False,
        route="local",
        sensitivity="private",
        reply=ReplyAddress("reply/x", b"\x00\xffcorr"),
        received_at_s=100.0,
        deadline_at_s=deadline_at_s,
        policy="p1",
    )


def test_a_record_carries_the_request_and_its_reply_address_across_clocks() -> None:
    r = req("a", deadline_at_s=105.0)
    rec = request_record(r, now_s=101.0, now_unix_s=1_000_000.0)
    json.dumps(rec)  # plain JSON
    # after a restart: another monotonic clock, 60 s later
    back = request_from_record(json.loads(json.dumps(rec)), now_s=5.0, now_unix_s=1_000_060.0)
    assert back.reply == r.reply and back.messages == r.messages
    assert (
        back.max_tokens,
        back.temperature,
        back.stream,
        back.route,
        back.sensitivity,
        back.policy,
    ) == (7, 0.2, False, "local", "private", "p1")
    assert back.deadline_at_s is not None
    assert abs(back.deadline_at_s - (5.0 - 56.0)) < 1e-6  # 4 s after the record, 60 s ago
    assert abs(back.received_at_s - (5.0 - 61.0)) < 1e-6


def test_load_returns_what_was_admitted_and_not_done(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j")
    assert j.load() == []
    for rid in ("a", "b", "c"):
        j.admit(request_record(req(rid), 100.0, 1e6))
    j.done("b")
    j2 = Journal(tmp_path / "j")
    assert [e.id for e in j2.load()] == ["a", "c"]
    assert j2.load()[0].request(0.0, 1e6).reply.correlation_data == b"\x00\xffcorr"


def test_damaged_lines_are_skipped_and_counted_and_the_rest_is_served(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = Journal(path)
    j.load()
    j.admit(request_record(req("a"), 100.0, 1e6))
    with open(path, "ab") as f:
        f.write(b"\xff\xfe not utf-8\n")
        f.write(b'00000000 {"op":"admit","id":"bad-crc"}\n')
        f.write(b'{"op":"admit","id":"wrong-shape"}\n')  # intact JSON, not a request
    j2 = Journal(path)
    assert [e.id for e in j2.load()] == ["a"]
    assert j2.damaged == 3
    j2.admit(request_record(req("b"), 100.0, 1e6))
    with open(path, "ab") as f:
        f.write(b"\x00" * 300)  # a NUL-filled tail after a power cut
    j3 = Journal(path)
    assert [e.id for e in j3.load()] == ["a", "b"]
    assert j3.damaged == 1  # the NUL tail; the lines damaged before were compacted away


def test_the_file_stays_bounded_and_live_requests_survive_compaction(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = Journal(path, compact_bytes=2048)
    j.load()
    j.admit(request_record(req("old", "x" * 1000), 100.0, 1e6))  # a long request, live
    biggest = 0
    for i in range(120):
        j.admit(request_record(req(f"r{i}", "y" * 500), 100.0, 1e6))
        j.done(f"r{i}")
        biggest = max(biggest, path.stat().st_size)
    assert j.compactions > 10
    assert biggest < 2048 + 2000  # the bound plus one record
    assert [e.id for e in Journal(path).load()] == ["old"]


def incoming(body: dict[str, Any], mid: int, qos: int = 1) -> Incoming:
    return Incoming(
        topic=TOPICS.request,
        payload=json.dumps(body).encode(),
        qos=qos,
        mid=mid,
        dup=False,
        retain=False,
        received_at_s=time.monotonic(),
        response_topic="reply/t",
        correlation_data=b"c",
        expiry_s=None,
    )


class Harness:
    def __init__(self, path: Path, queue_limit: int = 2) -> None:
        self.sent: list[dict[str, Any]] = []
        self.acked: list[int] = []
        self.release = asyncio.Event()
        self.served: list[str] = []
        cfg = Config(device_id="dev1", ingress={"queue_limit": queue_limit})
        self.journal = Journal(path)
        self.ingress = Ingress(cfg, TOPICS, self, self.ack, self.handle, journal=self.journal)

    def publish(self, topic: str, payload: bytes, **kw: Any) -> object:
        self.sent.append(json.loads(payload))
        return None

    def ack(self, msg: Incoming) -> Any:
        return lambda: self.acked.append(msg.mid)

    async def handle(self, r: Request, reply: Responder) -> None:
        self.served.append(r.id)
        await self.release.wait()
        reply.error(Internal("done"))

    def finals(self) -> list[dict[str, Any]]:
        return [b for b in self.sent if b["type"] in ("result", "error")]


async def settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0.01)


def test_admitted_is_acknowledged_once_journalled_before_its_final_reply(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path / "j")
        h.ingress.on_message(incoming({"id": "a", "prompt": "x"}, 1))
        h.ingress.on_message(incoming({"id": "b", "prompt": "x"}, 2))
        h.ingress.on_message(incoming({"id": "c", "prompt": "x"}, 3))  # busy
        await settle()
        assert sorted(h.acked) == [1, 2, 3] and h.finals()[0]["code"] == "busy"
        assert h.ingress.in_flight == 2  # still serving, already acknowledged
        assert h.journal.live == 2
        h.release.set()
        await settle()
        assert sorted(h.acked) == [1, 2, 3]  # never a second PUBACK for the same message
        await h.ingress.drain(1.0)
        assert Journal(tmp_path / "j").load() == []

    asyncio.run(main())


def test_qos0_requests_are_not_journalled(tmp_path: Path) -> None:
    async def main() -> None:
        h = Harness(tmp_path / "j")
        h.ingress.on_message(incoming({"id": "z", "prompt": "x"}, 0, qos=0))
        await settle()
        assert h.journal.live == 0 and h.ingress.in_flight == 1
        h.release.set()
        await h.ingress.drain(1.0)

    asyncio.run(main())


def test_at_start_journalled_requests_are_served_once_and_their_redelivery_dropped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j"

    async def first_life() -> None:
        h = Harness(path)
        h.ingress.on_message(incoming({"id": "a", "prompt": "x"}, 1))
        await settle()  # journalled; the process "dies" before it is answered:
        h.journal.done = lambda request_id: None  # type: ignore[method-assign]
        # (asyncio.run cancels the task, which then sends shutting_down: nothing reaches
        # the disk after a SIGKILL)

    asyncio.run(first_life())

    async def second_life() -> None:
        h = Harness(path)
        h.ingress.resume()
        await settle()
        assert h.served == ["a"] and h.ingress.in_flight == 1
        # the broker had not seen the PUBACK: it delivers the message again (DUP)
        h.ingress.on_message(replace(incoming({"id": "a", "prompt": "x"}, 1), dup=True))
        assert h.ingress.counts["duplicates"] == 1 and h.acked == [1]
        h.release.set()
        await h.ingress.drain(1.0)
        assert [f["id"] for f in h.finals()] == ["a"]

    asyncio.run(second_life())

    async def third_life() -> None:
        h = Harness(path)
        h.ingress.resume()
        await settle()
        assert h.served == []

    asyncio.run(third_life())


def test_a_journalled_request_older_than_the_session_expiry_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "j"
    j = Journal(path)
    j.load()
    # received (monotonic 100.0) two hours before now: older than session_expiry_s (1 h)
    j.admit(request_record(req("stale"), 100.0 + 7200, time.time()))

    async def main() -> None:
        h = Harness(path)
        h.ingress.resume()
        await settle()
        assert h.served == []
        await h.ingress.drain(1.0)

    asyncio.run(main())
    assert Journal(path).load() == []


def test_when_the_journal_cannot_be_written_the_ack_waits_for_the_final_reply(
    tmp_path: Path,
) -> None:
    (tmp_path / "not-a-dir").write_text("")

    async def main() -> None:
        h = Harness(tmp_path / "not-a-dir" / "j")  # every write fails (ENOTDIR)
        h.ingress.on_message(incoming({"id": "a", "prompt": "x"}, 1))
        await settle()
        assert h.acked == [] and h.ingress.in_flight == 1  # the broker keeps it meanwhile
        assert h.journal.failed_writes >= 1
        h.release.set()
        await settle()
        assert h.acked == [1] and [f["id"] for f in h.finals()] == ["a"]
        await h.ingress.drain(1.0)

    asyncio.run(main())
