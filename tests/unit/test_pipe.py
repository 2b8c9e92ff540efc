"""The daemon's side of the worker pipe (:mod:`edged.backends.llama.pipe`) reads exactly
what ``multiprocessing``'s ``Connection.send`` writes: small and large messages, several in
one read, one split over many reads, and the end of the file."""

from __future__ import annotations

import multiprocessing as mp
import os
import threading

from edged.backends.llama.pipe import FrameReader
from edged.types import Finished, TextDelta, Usage


def test_messages_of_any_size_and_split_anywhere_arrive_whole_and_in_order() -> None:
    parent, child = mp.get_context("spawn").Pipe(duplex=True)
    msgs = [
        ("ev", 1, TextDelta("Hello", 1)),
        ("ev", 1, TextDelta("x" * 100_000, 7)),  # over 16 KiB: written in two parts
        ("stats", 1, 12.5, None, {"hits": 3}),
        ("ev", 1, Finished("stop", Usage(3, 8))),
    ]
    writer = threading.Thread(target=lambda: [child.send(m) for m in msgs])
    writer.start()
    reader = FrameReader(parent.fileno())
    got: list[object] = []
    while len(got) < len(msgs):
        batch = reader.read()
        assert batch is not None
        got.extend(batch)
    writer.join()
    assert got == msgs
    child.close()
    assert reader.read() is None  # the writer is gone
    parent.close()


def test_a_message_split_byte_by_byte_is_returned_once_complete() -> None:
    r, w = os.pipe()
    parent, child = mp.get_context("spawn").Pipe(duplex=True)
    child.send(("ev", 2, TextDelta("é!", 1)))
    child.send(("ev", 2, TextDelta("more", 1)))
    raw = parent.recv_bytes(), parent.recv_bytes()
    framed = b"".join(len(p).to_bytes(4, "big") + p for p in raw)
    reader = FrameReader(r)
    got: list[object] = []
    for i in range(len(framed)):
        os.write(w, framed[i : i + 1])
        batch = reader.read()
        assert batch is not None
        got.extend(batch)
        if i < len(framed) - 1 and len(got) < 2:
            assert len(got) == (1 if i >= 4 + len(raw[0]) - 1 else 0)
    assert got == [("ev", 2, TextDelta("é!", 1)), ("ev", 2, TextDelta("more", 1))]
    os.close(w)
    assert reader.read() is None
    os.close(r)
    for c in (parent, child):
        c.close()
