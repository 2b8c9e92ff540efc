"""The telemetry spool: order, commit, crash recovery, the bound, torn lines, a full disk."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edged.telemetry import spool as spool_mod
from edged.telemetry.spool import STATE_FILE, Spool

T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return asyncio.run(main())


async def drain(s: Spool) -> list[dict[str, Any]]:
    return [r async for r in s.replay()]


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("seg-*.jsonl"))


def test_append_replay_in_order_with_seq(tmp_path: Path) -> None:
    async def main() -> list[dict[str, Any]]:
        s = Spool(tmp_path, 1 << 20)
        for i in range(100):
            assert await s.append({"i": i})
        assert s.pending == 100
        assert s.pending_bytes > 0
        return await drain(s)

    got = run(main)
    assert [r["i"] for r in got] == list(range(100))
    assert [r["seq"] for r in got] == list(range(1, 101))


def test_commit_removes_and_replay_then_yields_only_newer(tmp_path: Path) -> None:
    async def main() -> None:
        s = Spool(tmp_path, 1 << 20, segment_bytes=1024)
        for i in range(50):
            await s.append({"i": i, "pad": "x" * 80})
        n_segments = len(segments(tmp_path))
        assert n_segments > 3
        got = await drain(s)
        assert len(got) == 50
        await s.commit()
        assert s.pending == 0
        assert s.pending_bytes == 0
        assert segments(tmp_path) == []
        assert await drain(s) == []
        await s.append({"i": 50})
        assert [r["i"] for r in await drain(s)] == [50]
        assert (await drain(s))[0]["seq"] == 51  # not committed: replayed again

    run(main)


def test_partial_commit_up_to_a_seq(tmp_path: Path) -> None:
    async def main() -> None:
        s = Spool(tmp_path, 1 << 20, segment_bytes=512)
        for i in range(40):
            await s.append({"i": i})
        await s.commit(25)
        assert s.pending == 15
        assert [r["seq"] for r in await drain(s)] == list(range(26, 41))
        await s.close()
        # and after a restart, in the middle of a segment
        s2 = Spool(tmp_path, 1 << 20, segment_bytes=512)
        await s2.open()
        assert s2.pending == 15
        assert [r["seq"] for r in await drain(s2)] == list(range(26, 41))

    run(main)


def test_crash_mid_replay_replays_again(tmp_path: Path) -> None:
    async def first_life() -> list[int]:
        s = Spool(tmp_path, 1 << 20, segment_bytes=2048)
        for i in range(200):
            await s.append({"i": i})
        seen = []
        async for r in s.replay():
            seen.append(r["i"])
            if len(seen) == 120:
                await s.commit()  # 120 confirmed
            if len(seen) == 150:
                break  # ... and then the process dies: 121..150 were sent, not confirmed
        return seen

    async def second_life() -> tuple[list[dict[str, Any]], Spool]:
        s = Spool(tmp_path, 1 << 20, segment_bytes=2048)
        return await drain(s), s

    assert len(run(first_life)) == 150
    got, s = run(second_life)
    assert [r["i"] for r in got] == list(range(120, 200))
    assert [r["seq"] for r in got] == list(range(121, 201))
    assert s.pending == 80


def test_seq_keeps_growing_across_restarts_even_when_empty(tmp_path: Path) -> None:
    async def life(n: int, commit: bool) -> list[int]:
        s = Spool(tmp_path, 1 << 20)
        for i in range(n):
            await s.append({"i": i})
        got = [r["seq"] for r in await drain(s)]
        if commit:
            await s.commit()
        return got

    assert run(lambda: life(3, True)) == [1, 2, 3]
    assert segments(tmp_path) == []  # all committed: only the state file is left
    assert run(lambda: life(2, False)) == [4, 5]
    assert run(lambda: life(1, True)) == [4, 5, 6]
    assert run(lambda: life(0, False)) == []


def test_records_appended_during_replay_come_after(tmp_path: Path) -> None:
    async def main() -> list[int]:
        s = Spool(tmp_path, 1 << 20, segment_bytes=1024)
        for i in range(10):
            await s.append({"i": i})
        seen = []
        async for r in s.replay():
            seen.append(r["i"])
            if r["i"] < 10:
                await s.append({"i": r["i"] + 10})
        await s.commit()
        assert s.pending == 0
        return seen

    assert run(main) == list(range(20))


def test_a_records_own_seq_is_replaced(tmp_path: Path) -> None:
    async def main() -> list[dict[str, Any]]:
        s = Spool(tmp_path, 1 << 20)
        await s.append({"seq": 99, "x": 1})
        return await drain(s)

    assert run(main) == [{"seq": 1, "x": 1}]


def test_bound_drops_oldest_segments_and_counts_them_persistently(tmp_path: Path) -> None:
    record = {"pad": "x" * 80}  # about 100 bytes a line

    async def first() -> tuple[int, int, list[int]]:
        s = Spool(tmp_path, 4096, segment_bytes=1024)
        for i in range(200):
            assert await s.append({**record, "i": i})
            assert s.pending_bytes <= 4096
        got = [r["i"] for r in await drain(s)]
        return s.dropped, s.pending, got

    dropped, pending, got = run(first)
    assert dropped > 0
    assert dropped + pending == 200
    # the newest survive, contiguous, in order; the oldest are the ones gone
    assert got == list(range(dropped, 200))
    assert json.loads((tmp_path / STATE_FILE).read_text())["dropped"] == dropped

    async def second() -> tuple[int, int, list[int]]:
        s = Spool(tmp_path, 4096, segment_bytes=1024)
        await s.open()
        before = s.dropped
        for i in range(200, 260):
            await s.append({**record, "i": i})
        return before, s.dropped, [r["i"] for r in await drain(s)]

    before, after, got2 = run(second)
    assert before == dropped  # survived the restart
    assert after > dropped
    assert got2 == list(range(200 - (len(got2) - 60), 260))
    assert after + len(got2) == 260


def test_committed_records_are_not_counted_as_dropped(tmp_path: Path) -> None:
    async def main() -> tuple[int, int]:
        s = Spool(tmp_path, 4096, segment_bytes=1024)
        for i in range(20):
            await s.append({"pad": "x" * 80, "i": i})
        await s.commit(13)  # the second segment is now committed in part
        for i in range(20, 80):
            await s.append({"pad": "x" * 80, "i": i})
        return s.dropped, s.pending

    dropped, pending = run(main)
    assert dropped > 0
    assert dropped + pending + 13 == 80


def test_a_record_larger_than_the_bound_is_refused_and_counted(tmp_path: Path) -> None:
    async def main() -> tuple[bool, int, int, int]:
        s = Spool(tmp_path, 4096)
        await s.append({"i": 0})
        ok = await s.append({"pad": "x" * 5000})
        return ok, s.dropped, s.failed_writes, len(await drain(s))

    assert run(main) == (False, 1, 0, 1)


def test_torn_last_line_is_skipped_and_counted(tmp_path: Path) -> None:
    async def first() -> None:
        s = Spool(tmp_path, 1 << 20)
        for i in range(5):
            await s.append({"i": i})
        await s.close()

    run(first)
    [seg] = segments(tmp_path)
    with seg.open("ab") as f:
        f.write(b'{"seq":6,"i":5,"pad":"cut sho')  # the process died mid-write

    async def second() -> tuple[list[dict[str, Any]], int, int]:
        s = Spool(tmp_path, 1 << 20)
        await s.open()
        corrupt = s.corrupt
        await s.append({"i": "after"})
        return await drain(s), corrupt, s.pending

    got, corrupt, pending = run(second)
    assert corrupt == 1
    assert [r["i"] for r in got] == [0, 1, 2, 3, 4, "after"]
    # the torn record's seq is reused by the next record: it was never stored
    assert [r["seq"] for r in got] == [1, 2, 3, 4, 5, 6]
    assert pending == 6
    assert len(segments(tmp_path)) == 2  # a new process starts a new segment


def test_garbage_lines_in_the_middle_are_skipped(tmp_path: Path) -> None:
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "seg-00000001.jsonl").write_bytes(
        b'{"seq":1,"i":0}\nnot json\n[1,2]\n{"seq":"x"}\n\xff\xfe\n{"seq":2,"i":1}\n'
    )

    async def main() -> tuple[list[int], int]:
        s = Spool(tmp_path, 1 << 20)
        return [r["i"] for r in await drain(s)], s.corrupt

    got, corrupt = run(main)
    assert got == [0, 1]
    assert corrupt == 4


def test_disk_full_append_returns_false_counts_and_logs_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    full = {"on": False}
    real_write = spool_mod.Spool._write_all

    async def write_all(self: Spool, data: bytes) -> None:
        if full["on"]:
            assert self._active is not None
            await self._active.write(data[:7])  # part of the line reaches the file
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        await real_write(self, data)

    monkeypatch.setattr(spool_mod.Spool, "_write_all", write_all)

    async def main() -> tuple[list[bool], int, list[dict[str, Any]], Spool]:
        s = Spool(tmp_path, 1 << 20)
        results = [await s.append({"i": 0})]
        full["on"] = True
        for i in range(1, 6):
            results.append(await s.append({"i": i}))
        full["on"] = False
        results.append(await s.append({"i": 6}))
        return results, s.failed_writes, await drain(s), s

    with caplog.at_level(logging.INFO, logger="edged.telemetry"):
        results, failed, got, s = run(main)
    assert results == [True, False, False, False, False, False, True]
    assert failed == 5
    # no half line was left behind, and the seq has no gap
    assert [(r["seq"], r["i"]) for r in got] == [(1, 0), (2, 6)]
    assert s.corrupt == 0
    for seg in segments(tmp_path):
        assert seg.read_bytes().endswith(b"\n")
    failed_logs = [r for r in caplog.records if "spool_write_failed" in r.getMessage()]
    assert len(failed_logs) == 1  # once per episode
    assert any("spool_write_recovered" in r.getMessage() for r in caplog.records)


def test_unusable_directory_never_raises(tmp_path: Path) -> None:
    # a regular file where the spool directory should be: fails even for root
    blocker = tmp_path / "file"
    blocker.write_text("")

    async def main() -> tuple[list[bool], int, list[dict[str, Any]]]:
        s = Spool(blocker / "spool", 1 << 20)
        oks = [await s.append({"i": i}) for i in range(3)]
        got = await drain(s)
        await s.commit()
        await s.close()
        return oks, s.failed_writes, got

    assert run(main) == ([False, False, False], 3, [])


def test_a_state_file_that_cannot_be_read_is_not_fatal(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")

    async def main() -> list[int]:
        s = Spool(tmp_path, 1 << 20)
        await s.append({"i": 0})
        return [r["seq"] for r in await drain(s)]

    assert run(main) == [1]


def test_one_replay_at_a_time(tmp_path: Path) -> None:
    async def main() -> None:
        s = Spool(tmp_path, 1 << 20)
        await s.append({"i": 0})
        it = s.replay()
        await it.__anext__()
        with pytest.raises(RuntimeError):
            await s.replay().__anext__()
        await it.aclose()
        assert len(await drain(s)) == 1  # closed: another may start

    run(main)
