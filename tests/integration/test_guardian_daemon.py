"""The guardian through the real daemon and the real broker: what reaches the wire."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import ROOT, Broker, Client, Daemon
from tests.unit.test_guardian_pii import VALUES

pytestmark = pytest.mark.integration

OUTPUT_PACK = """
name = "wire-test"
[[rule]]
id = "out.phrase"
kind = "phrase"
action = "block"
applies_to = "output"
phrases = ["launch code", "secret"]
[[rule]]
id = "out.pii"
kind = "pii"
action = "redact"
applies_to = "output"
detectors = ["email", "phone", "payment_card", "iban", "ipv4", "ipv6", "us_ssn",
             "aws_access_key", "github_token", "private_key_block", "jwt"]
"""


def alnum(s: str) -> str:
    return "".join(c for c in s if c.isalnum())


def test_stream_filter_leaks_nothing_onto_the_broker(
    make_daemon: Callable[..., Daemon], broker: Broker, tmp_path: Path
) -> None:
    pack = tmp_path / "out.toml"
    pack.write_text(OUTPUT_PACK)
    d = make_daemon(
        EDGED_LOCAL__BACKEND="fake",
        EDGED_GUARDIAN__PACKS=json.dumps([str(pack)]),
        EDGED_INGRESS__QUEUE_LIMIT="64",
    )
    request_topic = f"edged/{d.device_id}/request"
    cases: list[tuple[str, str, list[str]]] = []  # (kind, secret, chunks)
    for values in VALUES.values():
        for value in values:
            text = f"Sure: {value} is it."
            cases += [("pii", value, [text[:i], text[i:]]) for i in range(1, len(text))]
    for phrase in ("launch code", "secret"):
        text = f"Okay, the {phrase} is 42."
        cases += [("phrase", phrase, [text[:i], text[i:]]) for i in range(1, len(text))]
    wire: list[tuple[str, bytes]] = []
    finals: dict[str, dict[str, object]] = {}
    with Client(broker.port) as tap, Client(broker.port) as app:
        tap.subscribe("#")
        app.subscribe("reply/wire")
        for n, (_, _, chunks) in enumerate(cases):
            app.publish(
                request_topic,
                json.dumps({"id": f"w{n}", "prompt": json.dumps(chunks), "max_tokens": 10}),
                response_topic="reply/wire",
            )
            if n % 50 == 49 or n == len(cases) - 1:  # keep under the queue limit
                while len(finals) < n + 1:
                    body = app.get(timeout_s=30).json()
                    if body["type"] in ("result", "error"):
                        finals[str(body["id"])] = body
        time.sleep(0.3)
        while not tap.inbox.empty():
            m = tap.get(timeout_s=1)
            wire.append((m.topic, m.payload))
    published = [p.decode() for t, p in wire if t != request_topic]
    assert len(published) > len(cases)  # chunks and finals were seen on the broker
    for n, (kind, secret, chunks) in enumerate(cases):
        final = finals[f"w{n}"]
        mine = [p for p in published if f'"id":"w{n}"' in p]
        core = alnum(secret)
        half = core[: (len(core) + 1) // 2]
        for payload in mine:
            text = json.loads(payload).get("text") or ""
            assert half not in alnum(text), (chunks, payload)
        if kind == "pii":
            assert final["type"] == "result", final
            assert "[REDACTED:" in str(final["text"])
            assert final["guardian"] == {"input": {}, "output": {"out.pii": 1}, "tools": {}}
        else:
            assert final["type"] == "error" and final["code"] == "blocked", final
            assert "out.phrase" in str(final["message"]) and secret not in str(final["message"])


DEFAULT_PACK = str(ROOT / "configs" / "guardian" / "default.toml")


def ask(d: Daemon, port: int, prompt: str, **extra: object) -> list[dict[str, object]]:
    rid = uuid.uuid4().hex[:10]
    with Client(port) as c:
        c.subscribe("reply/g")
        c.publish(
            f"edged/{d.device_id}/request",
            json.dumps({"id": rid, "prompt": prompt, "max_tokens": 8, **extra}),
            response_topic="reply/g",
        )
        return [m.json() for m in c.collect(rid)]


def test_input_rules_with_the_real_model(
    make_daemon: Callable[..., Daemon], broker: Broker
) -> None:
    d = make_daemon(EDGED_GUARDIAN__PACKS=json.dumps([DEFAULT_PACK]))
    # personal data pins the request to the device and is reported
    email = "jane.doe@example.org"
    replies = ask(d, broker.port, f"My email is {email}, write me a greeting.")
    final = replies[-1]
    assert final["type"] == "result"
    assert final["route"] == {"backend": "local", "reasons": ["private"]}
    # the model may or may not repeat the address; if it does, the output rule redacts it,
    # and says so, before anything reaches the wire
    guardian = final["guardian"]
    assert guardian["input"] == {"pii.input.local": 1}, guardian
    redacted = str(final["text"]).count("[REDACTED:")
    if redacted:
        assert list(guardian["output"]) == ["pii.output.redact"], final
        assert guardian["output"]["pii.output.redact"] >= redacted, final
    else:
        assert guardian["output"] == {}, final
    assert all(email not in json.dumps(r) for r in replies), replies
    # a secret is refused; the reply names the rule, never the value
    key = "AKIAIOSFODNN7EXAMPLE"
    final = ask(d, broker.port, f"Is this key valid: {key}?")[-1]
    assert final["type"] == "error" and final["code"] == "blocked"
    assert "secrets.block" in str(final["message"]) and key not in str(final["message"])
    # ordinary requests are untouched
    final = ask(d, broker.port, "Name a colour.")[-1]
    assert final["type"] == "result"
    assert final["guardian"] == {"input": {}, "output": {}, "tools": {}}
    assert final["route"] == {"backend": "local", "reasons": ["no_cloud"]}
    assert key not in d.logs()  # nor is the secret logged


def test_sighup_reloads_packs_and_a_bad_pack_keeps_the_old_rules(
    make_daemon: Callable[..., Daemon], broker: Broker, tmp_path: Path
) -> None:
    pack = tmp_path / "p.toml"
    pack.write_text(
        'name = "p"\n[[rule]]\nid = "no-bananas"\nkind = "phrase"\n'
        'action = "block"\napplies_to = "input"\nphrases = ["banana"]\n'
    )
    d = make_daemon(EDGED_LOCAL__BACKEND="fake", EDGED_GUARDIAN__PACKS=json.dumps([str(pack)]))
    assert ask(d, broker.port, "I like banana bread")[-1]["code"] == "blocked"
    pack.write_text(pack.read_text().replace("banana", "cherry"))
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "event=reloaded" not in d.logs():
        assert time.monotonic() < deadline, d.logs()
        time.sleep(0.05)
    assert ask(d, broker.port, "I like banana bread")[-1]["type"] == "result"
    assert ask(d, broker.port, "I like cherry pie")[-1]["code"] == "blocked"
    pack.write_text(pack.read_text().replace('kind = "phrase"', 'kind = "nonsense"'))
    d.proc.send_signal(signal.SIGHUP)
    while "event=reload_refused" not in d.logs():
        assert time.monotonic() < deadline, d.logs()
        time.sleep(0.05)
    assert "no-cherrys" in d.logs()  # the refusal names the rule (renamed above)
    assert ask(d, broker.port, "I like cherry pie")[-1]["code"] == "blocked"  # old rules run


def test_guard_check_cli(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[guardian]\npacks = ["{DEFAULT_PACK}"]\n')
    lines = [
        {"text": "Hello there", "direction": "input"},
        {"text": "mail me at bob@example.com", "direction": "input"},
        {"text": "mail me at bob@example.com", "direction": "output"},
        {"text": "key AKIAIOSFODNN7EXAMPLE", "direction": "output"},
    ]
    stdin = "\n".join(json.dumps(x) for x in lines) + "\nnot json\n"
    out = subprocess.run(
        [sys.executable, "-m", "edged.cli", "guard", "check", "--config", str(cfg)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("EDGED_")},
    )
    assert out.returncode == 1  # the bad line
    results = [json.loads(x) for x in out.stdout.splitlines()]
    assert results[0] == {"action": "allow", "rules": [], "text": "Hello there"}
    assert results[1]["action"] == "force_local" and results[1]["rules"] == ["pii.input.local"]
    assert results[2] == {
        "action": "redact",
        "rules": ["pii.output.redact"],
        "text": "mail me at [REDACTED:email]",
    }
    assert results[3]["action"] == "block" and results[3]["text"] == ""
    assert "line 5" in results[4]["error"]
