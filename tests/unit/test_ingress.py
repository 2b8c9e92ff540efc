"""Ingress admission, de-duplication and acknowledgement, on the event loop, without a broker."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from edged.config import Config
from edged.ingress.responder import Responder
from edged.ingress.service import Ingress
from edged.mqtt.link import Incoming, MqttLink
from edged.mqtt.topics import Topics
from edged.types import Request

TOPICS = Topics("edged", "dev1")


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any], bytes | None]] = []

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
        expiry_s: int | None = None,
    ) -> object:
        self.sent.append((topic, json.loads(payload), correlation_data))
        return None


def incoming(body: dict[str, Any], mid: int, dup: bool = False) -> Incoming:
    return Incoming(
        topic=TOPICS.request,
        payload=json.dumps(body).encode(),
        qos=1,
        mid=mid,
        dup=dup,
        retain=False,
        received_at_s=0.0,
        response_topic="reply/t",
        correlation_data=None,
        expiry_s=None,
    )


class Harness:
    def __init__(self, queue_limit: int = 1) -> None:
        self.pub = Recorder()
        self.acked: list[int] = []
        self.release = asyncio.Event()
        cfg = Config(device_id="dev1", ingress={"queue_limit": queue_limit})
        self.ingress = Ingress(cfg, TOPICS, self.pub, self.ack, self.handle)

    def ack(self, msg: Incoming) -> Any:
        return lambda: self.acked.append(msg.mid)

    async def handle(self, req: Request, reply: Responder) -> None:
        await self.release.wait()
        reply.chunk("ok")
        reply.error(__import__("edged.errors").errors.Internal("done"))

    def finals(self) -> list[dict[str, Any]]:
        return [b for _, b, _ in self.pub.sent if b["type"] in ("result", "error")]


def test_busy_then_retry_with_the_same_id_is_admitted() -> None:
    async def main() -> None:
        h = Harness(queue_limit=1)
        h.ingress.on_message(incoming({"id": "a", "prompt": "x"}, 1))
        h.ingress.on_message(incoming({"id": "b", "prompt": "x"}, 2))
        assert h.finals() == [
            {"id": "b", "type": "error", "code": "busy", "message": h.finals()[0]["message"]}
        ]
        assert h.acked == [2]  # rejected at once; acked since nothing more will happen
        h.release.set()
        await asyncio.sleep(0.01)
        assert h.acked == [2, 1] and h.ingress.in_flight == 0
        h.release.clear()
        h.ingress.on_message(incoming({"id": "b", "prompt": "x"}, 3))
        assert h.ingress.in_flight == 1  # the retry of b was admitted, not refused as reused
        h.release.set()
        await asyncio.sleep(0.01)

    asyncio.run(main())


def test_redelivery_is_ignored_and_reuse_gets_an_error_without_the_id() -> None:
    async def main() -> None:
        h = Harness(queue_limit=4)
        h.ingress.on_message(incoming({"id": "a", "prompt": "x"}, 1))
        h.ingress.on_message(incoming({"id": "a", "prompt": "x"}, 1, dup=True))
        assert h.finals() == [] and h.ingress.counts["duplicates"] == 1
        h.ingress.on_message(incoming({"id": "a", "prompt": "other"}, 2))
        err = h.finals()[0]
        assert err["id"] is None and err["code"] == "bad_request" and "'a'" in err["message"]
        h.release.set()
        await asyncio.sleep(0.01)
        assert [f["id"] for f in h.finals()] == [None, "a"]

    asyncio.run(main())


def test_while_closing_requests_are_left_unacked_for_redelivery() -> None:
    async def main() -> None:
        h = Harness()
        await h.ingress.drain(0.1)
        h.ingress.on_message(incoming({"id": "z", "prompt": "x"}, 9))
        assert h.acked == [] and h.pub.sent == []

    asyncio.run(main())


def test_link_acks_a_redelivered_in_flight_message_only_once_and_only_when_done() -> None:
    async def main() -> None:
        link = MqttLink(host="127.0.0.1", port=1, client_id="t")
        sent: list[int] = []
        link.acks._send_ack = sent.append
        first = link.ack_when_done(incoming({"prompt": "x"}, 5))
        again = link.ack_when_done(incoming({"prompt": "x"}, 5, dup=True))
        again()  # the redelivered copy is dropped as a duplicate
        assert sent == []
        first()
        assert sent == [5]

    asyncio.run(main())
