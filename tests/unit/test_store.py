"""edged/store.py and what uses it for small state: the record log, the state document,
the answered-ids file, the energy counter. Damage of every kind (invalid UTF-8, a NUL-filled
tail, a line cut in half, garbage, a changed byte) and SIGKILL at random points while writing."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from edged.ingress import service
from edged.store import RecordLog, StateDoc, decode_line, encode_line
from edged.telemetry.reporter import EnergyCounter

ROOT = Path(__file__).resolve().parents[2]


# --- the line format -----------------------------------------------------------------------------


def test_encode_decode_round_trip_and_every_damaged_line_is_refused() -> None:
    for value in ["id-1", 7, {"a": [1, 2.5, None], "ü": "ß"}, [], True]:
        line = encode_line(value)
        assert line.endswith(b"\n") and line.count(b"\n") == 1
        assert decode_line(line) == (True, value)
        assert decode_line(line.rstrip(b"\n")) == (True, value)
    line = encode_line({"seq": 15, "x": "y"})
    flipped = line.replace(b'"seq":15', b'"seq":95')  # one digit changed
    damaged = [
        flipped,
        line[: len(line) // 2],  # cut in half
        b"\x00" * 40,  # what ext4 leaves after a power cut
        line[:-1] + b"\x00\n",
        b"\xff\xfe\xfd garbage",
        b"",
        b"0000zzzz {}",
        b"[" * 100_000,  # too deep for json: RecursionError must not escape
    ]
    for bad in damaged:
        assert decode_line(bad) == (False, None), bad[:40]
    # without a legacy parser a plain JSON line is refused; with the default it is accepted
    assert decode_line(b'{"seq":1}') == (True, {"seq": 1})
    assert decode_line(b'{"seq":1}', None) == (False, None)
    with pytest.raises(ValueError):
        encode_line(float("nan"))


# --- RecordLog -----------------------------------------------------------------------------------


def test_record_log_appends_survive_reopen_in_order(tmp_path: Path) -> None:
    p = tmp_path / "log"
    a = RecordLog(p, keep=100)
    assert a.load() == []
    for i in range(30):
        a.append({"i": i})
    b = RecordLog(p, keep=100)
    assert b.load() == [{"i": i} for i in range(30)]
    assert b.damaged == 0


def test_record_log_is_bounded_whatever_keep_is(tmp_path: Path) -> None:
    for keep in (0, 1, 7):
        p = tmp_path / f"log-{keep}"
        log = RecordLog(p, keep=keep)
        for i in range(500):
            log.append("x" * 128 + str(i))
            assert len(p.read_bytes().splitlines()) < 2 * max(1, keep)
        got = RecordLog(p, keep=keep).load()
        want = ["x" * 128 + str(i) for i in range(500)][-max(1, keep) :]
        assert got == want
    assert sorted(x.name for x in tmp_path.iterdir()) == ["log-0", "log-1", "log-7"]  # no temps


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(b"\xff\xfe\xc3(\n", id="invalid-utf8-line"),
        pytest.param(b"\x00" * 4096, id="nul-tail"),
        pytest.param(encode_line("half-of-an-id")[:9], id="half-line"),
        pytest.param(b"garbage that is not a record\n", id="garbage-line"),
        pytest.param(encode_line("changed").replace(b"changed", b"chanGed"), id="changed-byte"),
    ],
)
def test_record_log_skips_counts_and_repairs_damage_so_the_next_append_survives(
    tmp_path: Path, damage: bytes
) -> None:
    p = tmp_path / "log"
    first = RecordLog(p, keep=50)
    for i in range(3):
        first.append(f"r{i}")
    with open(p, "ab") as f:
        f.write(damage)
    log = RecordLog(p, keep=50)
    assert log.load() == ["r0", "r1", "r2"]
    assert log.damaged == 1
    log.append("after")
    again = RecordLog(p, keep=50)
    assert again.load() == ["r0", "r1", "r2", "after"]
    assert again.damaged == 0  # rewritten clean


def test_record_log_appends_after_a_tail_it_could_not_repair_start_on_a_new_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = tmp_path / "log"
    RecordLog(p, keep=50).append("r0")
    with open(p, "ab") as f:
        f.write(b"\x00" * 100)  # a NUL tail, no newline
    log = RecordLog(p, keep=50)

    def refuse(path: Path, data: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("edged.store.atomic_write", refuse)
    assert log.load() == ["r0"]  # the rewrite failed (logged): the tail is still there
    assert p.read_bytes().endswith(b"\x00")
    log.append("after")
    monkeypatch.undo()
    assert RecordLog(p, keep=50).load() == ["r0", "after"]


def test_record_log_appends_before_load_do_not_merge_with_a_damaged_tail(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_bytes(encode_line("r0") + encode_line("r1")[:5])
    RecordLog(p, keep=10).append("r2")  # no load first: append loads (and repairs) itself
    assert RecordLog(p, keep=10).load() == ["r0", "r2"]


def test_record_log_a_whole_last_line_without_its_newline_is_kept(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.write_bytes(encode_line("r0") + encode_line("r1").rstrip(b"\n"))
    log = RecordLog(p, keep=10)
    assert log.load() == ["r0", "r1"]  # the checksum proves it whole
    assert log.damaged == 0
    log.append("r2")
    assert RecordLog(p, keep=10).load() == ["r0", "r1", "r2"]


def test_record_log_many_threads_appending_lose_nothing(tmp_path: Path) -> None:
    p = tmp_path / "log"
    log = RecordLog(p, keep=1024)
    ids = [f"{t:02d}-{i:04d}-" + "x" * 118 for t in range(8) for i in range(150)]  # 128 chars

    def worker(t: int) -> None:
        for i in range(150):
            log.append(f"{t:02d}-{i:04d}-" + "x" * 118)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    got = RecordLog(p, keep=1024).load()
    assert len(got) == 1024  # the newest 1,024 of 1,200, none lost
    assert set(got) <= set(ids)
    assert len(set(got)) == 1024
    # each thread's own ids are in order, and the newest of each thread is there
    for t in range(8):
        mine = [int(x[3:7]) for x in got if x.startswith(f"{t:02d}-")]
        assert mine == sorted(mine) and mine[-1] == 149
    assert [x.name for x in tmp_path.iterdir()] == ["log"]


def test_record_log_unreadable_file_reads_as_empty_never_raises(tmp_path: Path) -> None:
    p = tmp_path / "log"
    p.mkdir()  # a directory where the file should be
    log = RecordLog(p, keep=10)
    assert log.load() == []
    with pytest.raises(OSError):
        log.append("x")


# --- StateDoc ------------------------------------------------------------------------------------


def test_state_doc_round_trip_legacy_and_damage(tmp_path: Path) -> None:
    p = tmp_path / "state.json"
    doc = StateDoc(p)
    assert doc.read() is None and doc.damage is None
    doc.write({"a": 1, "b": [1, 2]})
    assert StateDoc(p).read() == {"a": 1, "b": [1, 2]}
    p.write_text('{"total_j": 12.5, "saved_unix_s": 1.0}')  # the format before checksums
    assert StateDoc(p).read() == {"total_j": 12.5, "saved_unix_s": 1.0}
    good = encode_line({"a": 1})
    for bad in [
        good[: len(good) // 2],
        b"\x00" * 512,
        b"\xff\xfe\xfd",
        good.replace(b"1", b"2"),
        b"[1,2]",
        good + good,
        b"[" * 100_000,
        b" " * (2 << 20),
    ]:
        p.write_bytes(bad)
        d = StateDoc(p)
        assert d.read() is None
        assert d.damage is not None
    (tmp_path / ".state.json.abc.tmp").write_bytes(b"left by a killed writer")
    StateDoc(p).read()
    assert not (tmp_path / ".state.json.abc.tmp").exists()


# --- SIGKILL at random points during writes ------------------------------------------------

CHILD = r"""
import sys
from pathlib import Path
from edged.store import RecordLog, StateDoc
d = Path(sys.argv[1])
log = RecordLog(d / "log", keep=int(sys.argv[2]))
doc = StateDoc(d / "state.json")
got = log.load()
i = got[-1] + 1 if got else 0
print("ready", flush=True)
while True:
    log.append(i)
    doc.write({"i": i, "pad": "p" * 2000})
    print(i, flush=True)
    i += 1
"""


def test_sigkill_at_random_points_during_appends_compaction_and_state_writes(
    tmp_path: Path,
) -> None:
    rng = random.Random(12)
    keep = 5  # compaction every 5 appends, so kills land in it often
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    newest = -1  # the newest record the last load found
    acked = -1  # the newest record a child reported written (log and state both)
    for _ in range(25):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path), str(keep)],
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
        )
        assert child.stdout is not None
        assert child.stdout.readline() == b"ready\n"
        threading.Event().wait(rng.uniform(0.0, 0.05))
        child.send_signal(signal.SIGKILL)
        out = [int(x) for x in child.stdout.read().split()]
        child.wait()
        child.stdout.close()
        # what the child reported written (fsynced) continues from what the last load found
        assert out == list(range(newest + 1, newest + 1 + len(out)))
        floor = out[-1] if out else newest
        acked = out[-1] if out else acked
        log = RecordLog(tmp_path / "log", keep=keep)
        got = log.load()  # never raises
        # only records that were written, in order, consecutive; every acknowledged one is
        # there, and at most the one being written when the kill came after it
        assert got, "nothing survived"
        assert got == list(range(got[0], got[-1] + 1))
        assert floor <= got[-1] <= floor + 1
        assert len(got) == min(keep, got[-1] + 1)
        newest = got[-1]
        state = StateDoc(tmp_path / "state.json").read()
        if acked >= 0:
            assert state is not None  # replaced atomically: never half written
            assert acked <= state["i"] <= newest
        # the next life's first append must be readable after the next load: the next round
        # checks that its records continue from ``newest``
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []  # load and read removed what killed writers left


# --- the answered-ids file -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_answered_logs() -> None:
    service._answered_logs.clear()


def _restart() -> None:
    """What a new process sees: no RecordLog objects in memory."""
    service._answered_logs.clear()


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(b"\xc3\x28\xff\xfe-bad\n", id="invalid-utf8"),
        pytest.param(b"\x00" * 3000, id="nul-tail"),
        pytest.param(encode_line("req-cut-in-half")[:14], id="half-id"),
        pytest.param(b"}}} garbage {{{\n", id="garbage-line"),
        pytest.param(b"req-legacy-cut", id="half-legacy-id"),
    ],
)
def test_answered_ids_survive_damage_and_the_next_id_is_kept(tmp_path: Path, damage: bytes) -> None:
    p = tmp_path / "answered-ids.txt"
    for rid in ("req-1", "req-2"):
        service._append_answered(p, rid, 1024)
    with open(p, "ab") as f:
        f.write(damage)
    _restart()
    assert service._read_answered(p, 1024) == ["req-1", "req-2"]  # starts, never raises
    service._append_answered(p, "req-3", 1024)
    _restart()
    assert service._read_answered(p, 1024) == ["req-1", "req-2", "req-3"]


def test_answered_ids_in_the_old_plain_format_are_kept_on_upgrade(tmp_path: Path) -> None:
    p = tmp_path / "answered-ids.txt"
    p.write_bytes(b"old-1\nold:2\n123\ntrue\n")  # ids that would parse as JSON stay strings
    assert service._read_answered(p, 1024) == ["old-1", "old:2", "123", "true"]
    service._append_answered(p, "new-1", 1024)
    _restart()
    assert service._read_answered(p, 1024) == ["old-1", "old:2", "123", "true", "new-1"]
    assert p.read_bytes().startswith(encode_line("old-1"))  # rewritten in the new format


def test_answered_ids_concurrent_appends_from_threads_lose_none(tmp_path: Path) -> None:
    # what the daemon does: appends on executor threads as requests finish in bursts
    from concurrent.futures import ThreadPoolExecutor

    p = tmp_path / "answered-ids.txt"
    ids = [f"{i:05d}-" + "a" * 122 for i in range(1100)]  # 128 characters each
    with ThreadPoolExecutor(max_workers=8) as pool:
        for burst in range(0, 1100, 8):
            list(pool.map(lambda r: service._append_answered(p, r, 1024), ids[burst : burst + 8]))
    _restart()
    got = service._read_answered(p, 1024)
    # the newest 1,024 appended, not one lost. Which are newest is decided inside the burst
    # of 8 that straddles the cut (ids 72-79): its threads append in any order
    cut = (len(ids) - 1024) // 8 * 8
    assert len(got) == len(set(got)) == 1024
    assert set(ids[cut + 8 :]) <= set(got) <= set(ids[cut:]), sorted(set(got) ^ set(ids[-1024:]))
    assert [x.name for x in tmp_path.iterdir()] == ["answered-ids.txt"]  # no .tmp left


def test_answered_ids_file_is_bounded_even_with_dedupe_window_zero(tmp_path: Path) -> None:
    p = tmp_path / "answered-ids.txt"
    for i in range(2000):
        service._append_answered(p, f"{i:06d}-" + "z" * 121, 0)
    assert p.stat().st_size < 2 * 150  # at most 2 lines (the old code grew to 660 KB)
    _restart()
    assert service._read_answered(p, 0) == []  # the window is 0: nothing is remembered


def test_answered_ids_write_failure_is_logged_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    service._append_answered(blocker / "answered-ids.txt", "r1", 10)  # no exception
    assert service._read_answered(blocker / "answered-ids.txt", 10) in ([], ["r1"])


# --- the energy counter --------------------------------------------------------------------------


def test_energy_counter_round_trip_and_legacy(tmp_path: Path) -> None:
    p = tmp_path / "energy.json"
    c = EnergyCounter(p)
    assert c.total_j == 0.0 and c.reason is None
    c.add(12.5)
    c.add(-3.0)  # ignored
    c.save()
    c2 = EnergyCounter(p)
    assert c2.total_j == 12.5 and c2.reason is None
    p.write_text(json.dumps({"total_j": 99.0, "saved_unix_s": 1.0}))  # before checksums
    assert EnergyCounter(p).total_j == 99.0


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xff\xfe\xfd\xfc", id="invalid-utf8"),
        pytest.param(b"\x00" * 64, id="nul"),
        pytest.param(encode_line({"total_j": 5.0})[:10], id="half"),
        pytest.param(b"[" * 100_000, id="deep"),
        pytest.param(b'{"total_j": "lots"}', id="wrong-type"),
        pytest.param(b'{"total_j": 1e999}', id="infinite"),
        pytest.param(b'{"total_j": NaN}', id="nan"),
        pytest.param(b"[1, 2]", id="not-an-object"),
        pytest.param(b"{}", id="missing"),
    ],
)
def test_energy_counter_damage_restarts_from_zero_with_a_reason_never_raises(
    tmp_path: Path, content: bytes
) -> None:
    p = tmp_path / "energy.json"
    p.write_bytes(content)
    c = EnergyCounter(p)
    assert c.total_j == 0.0
    assert c.reason is not None and "restarted from 0" in c.reason
    c.add(1.5)
    c.save()  # and saving works again
    assert EnergyCounter(p).total_j == 1.5


def test_energy_counter_save_failure_is_logged_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = EnergyCounter(blocker / "energy.json")
    c.add(1.0)
    c.save()  # no exception
    assert c.total_j == 1.0


def test_crc_is_crc32_of_the_json_body() -> None:
    # the format is documented; a reader in another language relies on it
    line = encode_line({"a": 1})
    head, body = line.rstrip(b"\n").split(b" ", 1)
    assert int(head, 16) == zlib.crc32(body) and json.loads(body) == {"a": 1}
