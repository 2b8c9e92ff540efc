"""PUBACKs in arrival order (MQTT requires it), split out of edged.mqtt.link, which
re-exports :class:`AckTracker`."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable


class AckTracker:
    """Sends PUBACKs in the order the PUBLISHes arrived, each once its work is done.

    MQTT requires acknowledgements in arrival order; a request that finishes early waits
    for the ones that arrived before it.

    Packet ids belong to one session. After :meth:`reset` (a new session: the broker lost
    the old one) the broker numbers messages from 1 again, so a request of the old session
    that finishes later must not acknowledge the new message that got its number: ``done``
    takes the ``generation`` its message arrived in and ignores an older one.
    """

    def __init__(self, send_ack: Callable[[int], None]) -> None:
        self._send_ack = send_ack
        self._pending: OrderedDict[int, bool] = OrderedDict()
        #: Incremented by every :meth:`reset`.
        self.generation = 0

    def track(self, mid: int) -> bool:
        """Start tracking ``mid``; False when it is already tracked (a redelivery)."""
        if mid in self._pending:
            return False
        self._pending[mid] = False
        return True

    def done(self, mid: int, generation: int | None = None) -> None:
        """Mark ``mid`` finished and send every PUBACK that is now due. ``generation``: the
        one ``mid`` was tracked in; a message of an earlier session is not acknowledged."""
        if mid not in self._pending or (generation is not None and generation != self.generation):
            return
        self._pending[mid] = True
        while self._pending:
            head, finished = next(iter(self._pending.items()))
            if not finished:
                break
            del self._pending[head]
            self._send_ack(head)

    def reset(self) -> None:
        """Forget everything and start a new generation (a new session: what the broker
        still holds unacknowledged it redelivers; what it lost is gone)."""
        self._pending.clear()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._pending)
