"""What every benchmark shares, so that each bench is about what it measures.

The real parts come from tests.helpers (the tests use the same ones): Mosquitto on a free
loopback port, ``edged run`` as a subprocess configured through environment overrides, the
loopback test cloud (llama.cpp's OpenAI-compatible server behind a recording proxy), and an
MQTT v5 client that stamps each message's arrival in paho's network thread. On top of those:
a :class:`Stack` that starts and stops them, :func:`ask` (one request, timed at the client),
summary statistics, the local model as a baseline loads it, /proc readings, and the figures
file: every bench takes ``--json PATH`` (default ``bench/results/<bench>.json``, gitignored)
and writes its figures there with the machine they were measured on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/x.py`

import numpy as np

from tests import helpers as _t

# the real parts, shared with the tests
Broker, Client, CloudServer, Daemon, Msg = _t.Broker, _t.Client, _t.CloudServer, _t.Daemon, _t.Msg
DEFAULT_MODEL_FILE, ROOT = _t.DEFAULT_MODEL_FILE, _t.ROOT

RESULTS = ROOT / "bench" / "results"
SYSTEM = "You are a helpful assistant. Answer briefly."
SEED = 20261125
#: story topics the benches build their prompts from (one fresh prompt a round)
TOPICS = ["dragons", "the sea", "a lighthouse keeper", "a robot gardener", "mountains"]
TOPICS += ["a train journey", "a lost cat", "the moon", "a bakery", "winter", "a violin"]
TOPICS += ["a desert town"]


def story(i: int, ask: str = "Write a long, detailed story about") -> str:
    """A fresh prompt for round ``i``."""
    return f"{ask} {TOPICS[i % len(TOPICS)]}. Story {i}."


def chat(text: str, system: str = SYSTEM) -> list[dict[str, str]]:
    return [{"role": "system", "content": system}, {"role": "user", "content": text}]


# --- statistics ------------------------------------------------------------------------------


def pct(xs: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), None for no samples."""
    return float(np.percentile(np.asarray(xs, dtype=np.float64), q)) if len(xs) else None


def summary(xs: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """n, p50, p90, p99, min, max and mean of ``xs`` (None where there are no samples)."""
    keys = ("p50", "p90", "p99", "min", "max", "mean")
    if not xs:
        return {"n": 0, **dict.fromkeys(keys)}
    a = np.asarray(xs, dtype=np.float64)
    vals = [*np.percentile(a, [50, 90, 99]), a.min(), a.max(), a.mean()]
    return {"n": len(xs), **{k: round(float(v), digits) for k, v in zip(keys, vals, strict=True)}}


def goal(value: float | None, limit: float) -> str:
    """'met' or 'MISSED, 1.3x' for a figure that should be at most ``limit``."""
    if value is None or math.isnan(value):
        return "unknown"
    return "met" if value <= limit else f"MISSED, {value / limit:.1f}x"


# --- the real parts --------------------------------------------------------------------------


class Stack:
    """A temporary directory, a broker, optionally the test cloud, and daemons; ``with`` stops
    everything in reverse order and removes the directory (kept after a failure)."""

    def __init__(self, name: str, *, cloud: bool = False, tmp_dir: Path | None = None) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix=f"edged-bench-{name}-", dir=tmp_dir))
        self.broker = Broker(self.tmp / "mosquitto")
        self.cloud = CloudServer(DEFAULT_MODEL_FILE, self.tmp) if cloud else None
        self.daemons: list[Daemon] = []
        self._stops: list[Callable[[], object]] = []

    def __enter__(self) -> Stack:
        try:
            self._stops.append(self.broker.stop)
            self.broker.start()
            if self.cloud is not None:
                self._stops.append(self.cloud.stop)
                self.cloud.start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def daemon(
        self, env: dict[str, str] | None = None, start: bool = True, name: str = "edged"
    ) -> Daemon:
        """A daemon on this stack's broker (and cloud), ``env`` on top of the test settings."""
        cloud = (
            {"EDGED_CLOUD__ENABLED": "true", "EDGED_CLOUD__BASE_URL": self.cloud.base_url}
            if self.cloud is not None
            else {}
        )
        d = Daemon(
            self.broker.port,
            f"{name[:6]}{uuid.uuid4().hex[:8]}",
            self.tmp / f"{name}-{len(self.daemons)}.log",
            extra_env={"EDGED_LOG__LEVEL": "warning", **cloud, **(env or {})},
        )
        self.daemons.append(d)
        self._stops.append(lambda: stop_daemon(d))
        if start:
            d.start()
        return d

    def __exit__(self, *exc: object) -> None:
        for fn in reversed(self._stops):
            try:
                fn()
            except Exception as e:
                print(f"cleanup: {fn!r} failed: {e!r}", file=sys.stderr)
        self._stops.clear()
        if exc[0] is not None:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def stop_daemon(d: Daemon) -> int | None:
    """Stop ``d`` if it runs; its exit code, or None when it was not running."""
    if d.proc is None or d.proc.poll() is not None:
        return None if d.proc is None else d.proc.returncode
    return d.stop()


def ask(
    c: Client, device_id: str, body: dict[str, Any], reply: str, timeout_s: float = 120.0
) -> dict[str, Any]:
    """Publish one request (``c`` subscribed to ``reply``) and wait for its final reply.

    Returns ``t0`` (perf_counter at the publish), ``first_s``/``last_s`` (arrival of the first
    and last chunk, None without chunks), ``final_s`` (arrival of the final reply),
    ``chunks`` (their texts) and ``final`` (the body)."""
    rid = str(body.setdefault("id", f"b-{uuid.uuid4().hex[:10]}"))
    payload = json.dumps(body)
    t0 = time.perf_counter()
    c.publish(f"edged/{device_id}/request", payload, response_topic=reply, wait=False)
    chunks: list[Msg] = []
    deadline = time.monotonic() + timeout_s
    while True:
        m = c.get(timeout_s=max(0.01, deadline - time.monotonic()))
        b = m.json()
        if b.get("id") != rid:
            continue
        if b.get("type") == "chunk":
            chunks.append(m)
        elif b.get("type") in ("result", "error"):
            return {
                "t0": t0,
                "first_s": chunks[0].at_s if chunks else None,
                "last_s": chunks[-1].at_s if chunks else None,
                "final_s": m.at_s,
                "chunks": [x.json()["text"] for x in chunks],
                "final": b,
            }


# --- the local model, as a baseline loads it --------------------------------------------------


def load_llama(threads: int, **kw: Any) -> Any:
    """The default model with the daemon's ``[local]`` context settings and ``threads``."""
    from llama_cpp import Llama

    from edged.config import LocalModelConfig

    cfg = LocalModelConfig(n_threads=threads)
    kw = {"n_ctx": cfg.n_ctx, "n_batch": cfg.n_batch, **kw}
    kw.update(n_threads=threads, n_threads_batch=threads, verbose=False)
    return Llama(model_path=str(DEFAULT_MODEL_FILE), **kw)


def chat_formatter(llm: Any) -> Any:
    """The model's own chat template, as llama-cpp-python renders it."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    m = llm._model
    return Jinja2ChatFormatter(
        llm.metadata["tokenizer.chat_template"],
        eos_token=m.token_get_text(llm.token_eos()),
        bos_token=m.token_get_text(llm.token_bos()),
        add_generation_prompt=True,
    )


def local_request(
    prompt: str,
    max_tokens: int,
    temperature: float = 0.0,
    *,
    route: str = "local",
    rid: str = "bench",
    **fields: Any,
) -> Any:
    """An edged Request for a backend called directly (no ingress); ``fields`` set or
    override any other of its fields."""
    from edged.types import ChatMessage, ReplyAddress, Request

    base: dict[str, Any] = {
        "id": rid,
        "messages": (ChatMessage("user", prompt),),
        "max_tokens": max_tokens,
        "temperature": temperature,
        "stream": True,
        "route": route,
        "sensitivity": "normal",
        "reply": ReplyAddress("reply/bench"),
        "received_at_s": time.monotonic(),
    }
    return Request(**(base | fields))


# --- /proc -----------------------------------------------------------------------------------


def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def proc_mb(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of ``pid``, MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(rest.split()[0]) / 1024
    return out


def cpu_s(pid: int, reaped: bool = False) -> float:
    """user + system CPU seconds of ``pid`` (every thread; to the nanosecond, from its CPU
    clock, where /proc would count 10 ms ticks); ``reaped``: of its children it has waited
    for (/proc)."""
    if not reaped:
        with contextlib.suppress(OSError):
            return time.clock_gettime((~pid << 3) | 2)  # clock_getcpuclockid(pid)
    f = _stat(pid)
    i = 13 if reaped else 11
    return (int(f[i]) + int(f[i + 1])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (the model worker, multiprocessing's resource tracker)."""
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                kids.setdefault(int(_stat(int(name))[1]), []).append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], list(kids.get(pid, []))
    while todo:
        out.append(p := todo.pop())
        todo.extend(kids.get(p, []))
    return sorted(out)


# --- arguments and the figures file ------------------------------------------------------------


def parser(doc: str | None, name: str) -> argparse.ArgumentParser:
    """An argument parser with the bench's first docstring paragraph and ``--json``."""
    ap = argparse.ArgumentParser(prog=f"bench/{name}.py", description=(doc or "").split("\n\n")[0])
    out = RESULTS / f"{name}.json"
    ap.add_argument("--json", type=Path, default=out, help="where the figures go (%(default)s)")
    return ap


def git_commit() -> str | None:
    """The checkout's commit, ``+dirty`` with uncommitted changes to tracked files."""

    def git(*argv: str) -> str:
        run = subprocess.run(["git", *argv], cwd=ROOT, text=True, capture_output=True, check=False)
        return run.stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        return (head + ("+dirty" if git("status", "--porcelain", "-uno") else "")) or None
    except OSError:
        return None


def machine(model: Path | str | None = None, n_threads: int | None = None) -> dict[str, Any]:
    """Where and on what the figures were measured."""
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "git_commit": git_commit(),
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "cores": os.cpu_count(),
        "load_avg_1_5_15m": [round(x, 2) for x in os.getloadavg()],
        "model": None if model is None else Path(model).name,
        "n_threads": n_threads,
    }


def write(
    args: argparse.Namespace,
    figures: dict[str, Any],
    *,
    model: Path | str | None = None,
    n_threads: int | None = None,
    started: float | None = None,
) -> Path:
    """Write ``figures`` with the machine and the arguments to ``args.json``; say where."""
    meta = machine(model, n_threads)
    if started is not None:
        meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    argv = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "json"}
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"bench": Path(sys.argv[0]).stem, "machine": meta, "args": argv, **figures}
    path.write_text(json.dumps(doc, indent=1, default=float, ensure_ascii=False) + "\n")
    print(f"figures: {path}")
    return path
