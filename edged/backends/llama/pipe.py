"""The worker's messages, read on the daemon's event loop (no reader thread).

A reader thread costs a wake-up of its own per message, and then a second one to hand the
message to the event loop; reading the pipe where it is used costs one. The worker writes
with ``multiprocessing.connection.Connection.send`` (a 4-byte big-endian signed length, or
-1 and an 8-byte length for a payload over 2 GiB, then the pickle); the event loop calls
:meth:`FrameReader.read` when the pipe is readable, which reads what is there (never
blocking: the loop said there is something) and returns every message that is complete.
``tests/unit/test_pipe.py`` holds this framing to the running Python's ``Connection``.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

_LEN = struct.Struct("!i")
_LONG = struct.Struct("!Q")
#: Bytes read at most per readable event.
READ_BYTES = 1 << 16


class FrameReader:
    """Whole messages from the read side of a ``multiprocessing`` pipe."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._buf = bytearray()

    def read(self) -> list[Any] | None:
        """The messages completed by what can be read now; None at end of file (the
        writer is gone; a message it left unfinished is dropped)."""
        data = os.read(self.fd, READ_BYTES)
        if not data:
            return None
        buf = self._buf
        buf += data
        out: list[Any] = []
        at = 0
        while len(buf) - at >= _LEN.size:
            (n,) = _LEN.unpack_from(buf, at)
            start = at + _LEN.size
            if n == -1:
                if len(buf) - start < _LONG.size:
                    break
                (n,) = _LONG.unpack_from(buf, start)
                start += _LONG.size
            if len(buf) - start < n:
                break
            out.append(pickle.loads(memoryview(buf)[start : start + n]))
            at = start + n
        if at:
            del buf[:at]
        return out
