"""``edged ask``: one question over MQTT, the answer streamed to the terminal."""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from edged.cli.common import Commands, load, with_config


def cmd_ask(args: argparse.Namespace) -> int:
    """Send one question over MQTT and stream the answer to the terminal.

    It connects to the broker as the daemon does from the same config: host and port (unless
    ``--host``/``--port``), TLS with ``ca_file`` and the optional client certificate, the
    user name and the password from ``$<password_env>`` or the systemd credential.
    """
    import ssl

    from edged.cli.client import AskAuthError, AskError, ask

    # the broker credentials and TLS exactly as the daemon uses them
    from edged.mqtt.connect import mqtt_password, tls_context
    from edged.mqtt.topics import Topics

    cfg = load(args)
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
            print(
                f"edged ask: cannot set up TLS from [mqtt] {named or 'settings'}: {e}",
                file=sys.stderr,
            )
            return 2
    req: dict[str, Any] = {
        "id": f"ask-{uuid.uuid4().hex[:12]}",
        "prompt": args.prompt,
        "stream": not args.no_stream,
    }
    try:
        req.update(tool_fields(args.tools, args.tool_choice, args.json_schema))
    except ValueError as e:
        print(f"edged ask: {e}", file=sys.stderr)
        return 2
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
                for line in tool_call_lines(msg):
                    print(line)
                _summary(msg, t0, first)
                return 0
            elif kind == "error":
                print(f"\nerror {msg.get('code')}: {msg.get('message')}", file=sys.stderr)
                return 1
    except AskAuthError as e:
        if not cfg.mqtt.username:
            hint = "no [mqtt] username is configured"
        elif password is None:
            hint = (
                f"no password: ${cfg.mqtt.password_env} is unset and there is no "
                f"{cfg.mqtt.password_credential!r} credential"
            )
        else:
            hint = (
                f"check [mqtt] username and the password in ${cfg.mqtt.password_env} "
                f"or the {cfg.mqtt.password_credential!r} credential"
            )
        print(f"edged ask: {e} ({hint})", file=sys.stderr)
        return 2
    except AskError as e:
        print(f"edged ask: {e}", file=sys.stderr)
        return 2
    return 0


def _read_json(path: Path, flag: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot read it: {e.strerror or e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{flag} {path}: not valid JSON: {e}") from None


def tool_fields(
    tools_file: Path | None, tool_choice: str | None, schema_file: Path | None
) -> dict[str, Any]:
    """The request fields ``--tools``, ``--tool-choice`` and ``--json-schema`` ask for:
    ``tools`` from a file holding a JSON list in the OpenAI shape, ``tool_choice`` (``auto``,
    ``none``, ``required``, or a tool's name), ``response_format`` json_schema from a file
    holding a JSON Schema (named after the file). The daemon checks them; ValueError (one
    line) when a file cannot be read or is not JSON of the right kind."""
    out: dict[str, Any] = {}
    if tools_file is not None:
        tools = _read_json(tools_file, "--tools")
        if not isinstance(tools, list):
            raise ValueError(
                f"--tools {tools_file}: must hold a JSON list of tools "
                '([{"type": "function", "function": {"name": ...}}, ...])'
            )
        out["tools"] = tools
    if tool_choice is not None:
        if tool_choice in ("auto", "none", "required"):
            out["tool_choice"] = tool_choice
        else:
            out["tool_choice"] = {"type": "function", "function": {"name": tool_choice}}
    if schema_file is not None:
        schema = _read_json(schema_file, "--json-schema")
        if not isinstance(schema, dict):
            raise ValueError(f"--json-schema {schema_file}: must hold a JSON Schema object")
        name = re.sub(r"[^A-Za-z0-9_-]", "_", schema_file.name.split(".")[0])[:64] or "answer"
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        }
    return out


def tool_call_lines(result: dict[str, Any]) -> list[str]:
    """One line per tool call of a result: ``tool call set_alarm {"hour": 6} (id call_1)``
    (the arguments as one line of JSON when they parse)."""
    lines = []
    for call in result.get("tool_calls") or []:
        fn = call.get("function") or {}
        args = fn.get("arguments", "")
        with contextlib.suppress(TypeError, ValueError):
            args = json.dumps(json.loads(args), ensure_ascii=False)
        lines.append(f"tool call {fn.get('name')} {args} (id {call.get('id')})")
    return lines


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


def _route(value: str) -> str:
    """A route hint as the wire takes it (the daemon says whether the backend exists)."""
    import re

    if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", value):
        raise argparse.ArgumentTypeError(f"{value!r}: auto, local, cloud or a backend's name")
    return value


def add_parser(sub: Commands[argparse.ArgumentParser]) -> None:
    """``edged ask``."""
    a = sub.add_parser("ask", help="ask a running edged something over MQTT")
    with_config(a)
    a.add_argument("prompt")
    a.add_argument("--device", help="device id (default: from the config, else the hostname)")
    a.add_argument("--host")
    a.add_argument("--port", type=int)
    a.add_argument("--max-tokens", type=int)
    a.add_argument("--temperature", type=float)
    a.add_argument(
        "--route", type=_route, default="auto", help="auto, local, cloud or a backend's name"
    )
    a.add_argument("--private", action="store_true", help="sensitivity: private")
    a.add_argument("--deadline-ms", type=int)
    a.add_argument("--no-stream", action="store_true", help="ask for the result only")
    a.add_argument(
        "--tools",
        type=Path,
        metavar="FILE",
        help="offer the tools in FILE: a JSON list in the OpenAI shape (docs/tools.md)",
    )
    a.add_argument(
        "--tool-choice",
        metavar="CHOICE",
        help="auto (the default with --tools), none, required, or the name of one tool",
    )
    a.add_argument(
        "--json-schema",
        type=Path,
        metavar="FILE",
        help="the answer must be JSON valid against the JSON Schema in FILE",
    )
    a.add_argument("--json", action="store_true", help="print every reply message as JSON")
    a.add_argument("--timeout-s", type=float, default=120.0)
    a.set_defaults(func=cmd_ask)
