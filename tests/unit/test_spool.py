"""The telemetry spool: order, commit, crash recovery, the bound, torn lines, a full disk."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edged.store import StateDoc, encode_line
from edged.telemetry import spool as spool_mod
from edged.telemetry.spool import Spool
from edged.telemetry.spool_files import STATE_BACKUP, STATE_FILE

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
    state = StateDoc(tmp_path / STATE_FILE).read()
    assert state is not None and state["dropped"] == dropped

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
    before_ms = int(time.time() * 1000)

    async def main() -> list[int]:
        s = Spool(tmp_path, 1 << 20)
        await s.append({"i": 0})
        await s.append({"i": 1})
        return [r["seq"] for r in await drain(s)]

    got = run(main)
    # the last number is unknown: numbering resumes above any it can have used, consecutive
    assert got[0] >= before_ms
    assert got == [got[0], got[0] + 1]


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


# --- integrity and sequence recovery (issue 12) ---------------------------------------------------


def _life(path: Path, n: int, *, commit: bool, start: int = 0) -> list[int]:
    async def main() -> list[int]:
        s = Spool(path, 1 << 20, segment_bytes=1024)
        for i in range(start, start + n):
            assert await s.append({"i": i})
        got = [r["seq"] for r in await drain(s)]
        if commit:
            await s.commit()
        await s.close()
        return got

    return run(main)


def _cut_in_half(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


def test_state_cut_in_half_after_a_full_drain_never_reuses_a_seq(tmp_path: Path) -> None:
    assert _life(tmp_path, 40, commit=True) == list(range(1, 41))
    assert segments(tmp_path) == []  # fully drained: only the state copies are left
    _cut_in_half(tmp_path / STATE_FILE)
    # the backup copy still holds the high-water mark: numbering simply continues
    assert _life(tmp_path, 38, commit=True, start=40) == list(range(41, 79))
    state = StateDoc(tmp_path / STATE_FILE).read()
    assert state is not None and state["last_seq"] == 78  # and the damaged copy was rewritten


def test_both_state_copies_damaged_after_a_full_drain_numbers_resume_above(
    tmp_path: Path,
) -> None:
    assert _life(tmp_path, 40, commit=True) == list(range(1, 41))
    _cut_in_half(tmp_path / STATE_FILE)
    (tmp_path / STATE_BACKUP).write_bytes(b"\x00" * 64)
    got = _life(tmp_path, 38, commit=False, start=40)
    assert got[0] > 40  # never a number already delivered
    assert got == list(range(got[0], got[0] + 38))
    # and the new high-water mark was saved: a restart continues from it
    assert _life(tmp_path, 1, commit=False, start=78) == [*got, got[-1] + 1]


def test_state_damaged_with_segments_left_replays_them_and_continues_above(
    tmp_path: Path,
) -> None:
    _life(tmp_path, 30, commit=False)
    (tmp_path / STATE_FILE).write_bytes(b"\xff\xfe garbage")

    async def main() -> tuple[list[int], list[int]]:
        s = Spool(tmp_path, 1 << 20, segment_bytes=1024)
        await s.open()
        old = [r["i"] for r in await drain(s)]
        await s.append({"i": "new"})
        seqs = [r["seq"] for r in await drain(s)]
        return old, seqs

    old, seqs = run(main)
    assert old == list(range(30))  # nothing intact is lost (replayed again: at least once)
    assert seqs[:30] == list(range(1, 31))
    assert seqs[30] > 30


def test_a_record_with_a_changed_seq_digit_is_skipped_alone(tmp_path: Path) -> None:
    _life(tmp_path, 100, commit=False)
    changed = 0
    for seg in segments(tmp_path):
        data = seg.read_bytes()
        if b'"seq":10,' in data:
            seg.write_bytes(data.replace(b'"seq":10,', b'"seq":90,'))  # same length
            changed += 1
    assert changed == 1

    async def main() -> tuple[list[int], int, int]:
        s = Spool(tmp_path, 1 << 20, segment_bytes=1024)
        await s.open()
        return [r["seq"] for r in await drain(s)], s.corrupt, s.pending

    got, corrupt, pending = run(main)
    assert got == [q for q in range(1, 101) if q != 10]  # the 48+ after it are all there
    assert corrupt == 1
    assert pending == 99


def test_old_format_segments_and_state_are_read_and_a_changed_seq_skips_only_itself(
    tmp_path: Path,
) -> None:
    # written by edged before checksums: plain JSON lines, plain state.json
    lines = [json.dumps({"seq": q, "i": q}, separators=(",", ":")) for q in range(1, 61)]
    lines[4] = lines[4].replace('"seq":5,', '"seq":55,')  # one digit added: jumps ahead
    lines[20] = lines[20].replace('"seq":21,', '"seq":2,')  # one digit lost: falls back
    (tmp_path / "seg-00000007.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / STATE_FILE).write_text('{"acked_seq":0,"last_seq":0,"dropped":3}')

    async def main() -> tuple[list[int], int, int, Spool]:
        s = Spool(tmp_path, 1 << 20, segment_bytes=1024)
        await s.open()
        got = [r["i"] for r in await drain(s)]
        await s.append({"i": "new"})
        last = (await drain(s))[-1]["seq"]
        return got, s.corrupt, last, s

    got, corrupt, last, s = run(main)
    assert got == [q for q in range(1, 61) if q not in (5, 21)]
    assert corrupt == 2
    assert last == 61  # numbering continues after the old records
    assert s.dropped == 3  # the old state was kept
    assert [p.name for p in segments(tmp_path)][-1] == "seg-00000008.jsonl"


def test_a_segment_overwritten_with_garbage_is_deleted_and_counted(tmp_path: Path) -> None:
    _life(tmp_path, 150, commit=False)
    segs = segments(tmp_path)
    assert len(segs) >= 3
    victim = segs[1]
    victim.write_bytes(os.urandom(victim.stat().st_size).replace(b"\n", b"#"))

    async def main() -> tuple[list[int], int]:
        s = Spool(tmp_path, 1 << 20, segment_bytes=1024)
        await s.open()
        return [r["i"] for r in await drain(s)], s.corrupt

    got, corrupt = run(main)
    assert corrupt >= 1  # counted (and put in telemetry as spool_corrupt by the app)
    assert not victim.exists()
    assert got == sorted(got) and len(got) < 150
    assert got[0] == 0 and got[-1] == 149  # the segments around it are whole


def test_lines_are_checksummed_on_disk(tmp_path: Path) -> None:
    _life(tmp_path, 3, commit=False)
    [seg] = segments(tmp_path)
    lines = seg.read_bytes().splitlines(keepends=True)
    assert lines == [encode_line({"seq": q, "i": q - 1}) for q in (1, 2, 3)]


def test_sigkill_while_appending_and_committing_never_reuses_a_seq(tmp_path: Path) -> None:
    import random
    import signal
    import subprocess
    import sys
    import threading

    child = r"""
import asyncio, sys
from pathlib import Path
from edged.telemetry.spool import Spool
async def main():
    s = Spool(Path(sys.argv[1]), 1 << 16, segment_bytes=2048)
    await s.open()
    print("ready", flush=True)
    while True:
        for _ in range(7):
            await s.append({"pad": "p" * 50})
        got = [r["seq"] async for r in s.replay()]
        await s.commit()
        print(got[-1], flush=True)
asyncio.run(main())
"""
    root = Path(__file__).resolve().parents[2]
    rng = random.Random(7)
    newest = 0  # the highest seq reported committed
    for _ in range(15):
        p = subprocess.Popen(
            [sys.executable, "-c", child, str(tmp_path)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(root)},
            cwd=root,
        )
        assert p.stdout is not None
        assert p.stdout.readline() == b"ready\n"
        threading.Event().wait(rng.uniform(0.0, 0.1))
        p.send_signal(signal.SIGKILL)
        out = [int(x) for x in p.stdout.read().split()]
        p.wait()
        p.stdout.close()
        if out:
            assert out[0] > newest and out == sorted(out)
            newest = out[-1]

        async def check() -> list[int]:
            s = Spool(tmp_path, 1 << 16, segment_bytes=2048)
            await s.open()  # never raises
            seqs = [r["seq"] async for r in s.replay()]
            await s.append({"probe": True})
            return [*seqs, s.last_seq]

        seqs = run(check)
        # what is still pending is above what was committed, in order, and the next number
        # is above everything ever reported
        assert seqs == sorted(set(seqs))
        assert seqs[-1] > newest
        newest = seqs[-1]  # the probe's number: the next life must go above it too
