"""``edged doctor``: check this device (board profile, power source and sensors, models,
guardian packs, broker, cloud) and say how to fix what is missing."""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from edged.accel import doctor_lines, with_board_defaults
from edged.cli.common import Commands, load, with_config
from edged.config import CloudConfig, Config
from edged.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from edged.power.base import PowerSample


def cmd_doctor(args: argparse.Namespace) -> int:
    """Check this device: board profile, power source and sensors, models, guardian packs.

    Prints what was found; exits 1 with one line per problem (and how to fix it) when
    something the configuration needs is missing.
    """
    from edged import models
    from edged.guardian.rules import Pack, load_packs
    from edged.power import build as pbuild
    from edged.power import detect as pdetect
    from edged.power import profile as pprofile

    cfg = load(args)
    if args.sysfs_root:
        power = cfg.power.model_copy(update={"sysfs_root": Path(args.sysfs_root)})
        cfg = cfg.model_copy(update={"power": power})
    pc = cfg.power
    problems: list[str] = []

    print(f"sysfs root: {pc.sysfs_root}")
    profiles: dict[str, pprofile.HwProfile] = {}
    try:
        profiles = pprofile.load_profiles(pc.profiles_dir)
    except ConfigError as e:
        problems += [
            f"{line}. Fix: correct the profile, or set power.profiles_dir"
            for line in str(e).splitlines()
        ]
    found: pdetect.Detection | None = None
    try:
        found = pdetect.select_profile(pc, profiles)
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

    try:
        board_cfg = with_board_defaults(cfg, profile)
        lines, accel_problems = doctor_lines(board_cfg, profile, cfg)
        print("\n".join(lines))
        problems += accel_problems
    except ConfigError as e:
        problems.append(f"{e}. Fix: set flash_attn = true beside a quantized kv_cache_type")

    kind = pbuild.source_kind(pc, profile)
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
        source = pbuild.build_source(pc, profile, pc.sysfs_root)
    except (ConfigError, OSError, ValueError, ImportError) as e:
        print(f"  cannot build: {e}")
        if needed:
            problems.append(f"power source {kind!r} cannot be built: {e}. {fix}")
        source = None
    if source is not None:
        print(f"  sampling at {pbuild.sample_hz(pc, profile, source):g} Hz")
        for s in source.sensors():
            state = s.reading if s.problem is None else f"NOT READ: {s.problem}"
            print(f"  {s.name:<22} {s.role or '-':<10} {state}  [{s.path}]")
            if needed and s.problem is not None and s.role not in ("thermal", "nvpmodel"):
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
    problems += _check_backends(cfg)

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

    from edged.mqtt.connect import mqtt_password, tls_context

    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}{' (TLS)' if cfg.mqtt.tls else ''}"
    answers: queue.Queue[str] = queue.Queue()
    c = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=f"edged-doctor-{uuid.uuid4().hex[:6]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
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
        return (
            f"the MQTT broker at {where} does not answer ({e or 'no CONNACK'}). Fix: start "
            "it (`make broker` starts Mosquitto) or set [mqtt] host and port"
        )
    finally:
        c.loop_stop()
        with contextlib.suppress(Exception):
            c.disconnect()
    if rc != "Success":
        print(f"broker: {where}: refused: {rc}")
        return (
            f"the MQTT broker at {where} refused edged: {rc}. "
            "Fix: check [mqtt] username and the password"
        )
    print(f"broker: {where}: MQTT v5 ok")
    return None


def _check_cloud(cfg: Config, timeout_s: float = 3.0, cloud: CloudConfig | None = None) -> str:
    """GET <base_url>/models with the configured key; the answer in a few words."""
    import urllib.error
    import urllib.request

    from edged.backends.cloud import read_api_key

    cc = cloud or cfg.cloud
    auth = {"Authorization": f"Bearer {read_api_key(cc)}"}
    req = urllib.request.Request(cc.base_url.rstrip("/") + "/models", headers=auth)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return f"{cc.base_url}: reachable (HTTP {resp.status})"
    except urllib.error.HTTPError as e:
        return f"{cc.base_url}: answers HTTP {e.code}"
    except (OSError, ValueError) as e:
        why = getattr(e, "reason", e)
        return f"{cc.base_url}: unreachable ({why}); requests go to the next allowed backend"


def _check_backends(cfg: Config) -> list[str]:
    """Every ``[backends.NAME]``: an openai server is asked for its models (down is not a
    problem: the router routes around it); a llama model must be in the manifest and on
    disk. And every policy's ``order`` must name trust classes or backends there are."""
    from edged import models
    from edged.config_backends import TRUSTS, as_cloud_config, backend_table
    from edged.router.router import load_policies

    problems: list[str] = []
    for name, b in cfg.backends.items():
        if b.kind == "openai":
            print(
                f"backend {name} ({b.trust}): {_check_cloud(cfg, cloud=as_cloud_config(name, b))}"
            )
            continue
        try:
            path = models.resolve(
                models.load_manifest(cfg.models.manifest).get(b.model), cfg.models.dir
            )
            print(f"backend {name} ({b.trust}): model {b.model}: {path}")
        except (ConfigError, ModelError) as e:
            print(f"backend {name} ({b.trust}): model {b.model}: MISSING")
            problems.append(
                f"backend {name}: {e}. Fix: add the model to the manifest and fetch its "
                f"file, or correct [backends.{name}] model"
            )
    known = set(TRUSTS) | set(backend_table(cfg))
    try:
        policies = load_policies(cfg.router)
    except ConfigError as e:
        return [*problems, f"{e}. Fix: correct the policy"]
    for pname, policy in sorted(policies.items()):
        unknown = [x for x in policy.order or () if x not in known]
        if unknown:
            problems.append(
                f"policy {pname}: order names {unknown}, neither a trust class nor a backend "
                f"here. Fix: add [backends.NAME] or correct the policy's order"
            )
    return problems


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


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged doctor``."""
    d = sub.add_parser("doctor", help="check board profile, power sensors, models and packs")
    with_config(d)
    d.add_argument("--sysfs-root", help="read /sys and /proc under this directory instead")
    d.set_defaults(func=cmd_doctor)
