"""Dependencies point one way: types/errors/config <- stages <- pipeline <- app.

A stage never imports another stage; this test reads every stage module's imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[2] / "edged"
BASE = {
    "edged.types",
    "edged.errors",
    "edged.config",
    "edged.config_ingress",  # [ingress] models, split out of config.py (which re-exports them)
    "edged.config_accel",  # the [local] offload keys, split out of config.py likewise
    "edged.config_sessions",  # [local] session cache keys, split out of config.py
    "edged.config_http",  # [http], the same way
    "edged.config_backends",  # [backends.NAME] and the policies' tier keys, likewise
    "edged.config_agent",  # [agent] and [tools.NAME] (device tools), split out likewise
    "edged.config_env",  # EDGED_* environment overrides, split out of config.py
    "edged.aio",
    "edged.logs",
    "edged.store",
    "edged.secrets",  # the one secret reader (environment, then systemd credential)
    "edged.report",  # a result's fields, shared by the reply and the per-request event
}
# Pure libraries a stage may use (no I/O, import only BASE and themselves): tool-call schemas,
# formats and validation; the grammar engine for constrained decoding.
TOOLS = "edged.tools"
GRAMMAR = "edged.grammar"
# stage package -> what else it may import from edged (a package name here also allows its
# submodules)
STAGES = {
    "tools": BASE,
    # tool rules check their argument schemas with the pure tool-schema library
    "guardian": BASE | {TOOLS},
    "router": BASE | {"edged.figures"},  # the device figures `edged bench` stored
    "backends": BASE | {TOOLS, GRAMMAR},
    # the cache key of a compiled grammar is edged.tools.validate.canonical
    "grammar": BASE | {TOOLS},
    "energy": BASE | {"edged.power.base"},  # the power-source interface, not a source
    "power": BASE,
    "telemetry": BASE
    | {"edged.energy.meter", "edged.energy.sampler", "edged.mqtt.link", "edged.mqtt.topics"},
    "embeddings": BASE | {"edged.models"},
    "ingress": BASE | {"edged.mqtt.link", "edged.mqtt.topics", TOOLS},
    "mqtt": BASE,
    # the agent loop: device tools' topics, validation of their calls (edged.tools)
    "agent": BASE | {TOOLS},
}


def edged_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edged"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("edged"))
    return out


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_imports_only_base_modules_and_itself(stage: str) -> None:
    files = sorted((PKG / stage).rglob("*.py"))  # subpackages too (backends/llama/)
    assert files, stage
    for f in files:
        for mod in edged_imports(f):
            if mod == f"edged.{stage}" or mod.startswith(f"edged.{stage}."):
                continue
            allowed = STAGES[stage]
            ok = mod in allowed or any(mod.startswith(f"{a}.") for a in allowed & {TOOLS, GRAMMAR})
            assert ok, f"{f.relative_to(PKG.parent)} imports {mod}"


# outer packages: what they may import from edged beyond themselves (None: anything)
OUTER = {
    "cli": None,  # the command line: the outermost layer
    "service": BASE | {"edged.models"},  # systemd protocol and installation
}


def test_nothing_imports_the_command_line() -> None:
    for f in sorted(PKG.rglob("*.py")):
        if f.relative_to(PKG).parts[0] == "cli":
            continue
        for mod in edged_imports(f):
            assert mod != "edged.cli" and not mod.startswith("edged.cli."), (
                f"{f.relative_to(PKG.parent)} imports {mod}"
            )


@pytest.mark.parametrize("pkg", sorted(p for p, allowed in OUTER.items() if allowed is not None))
def test_outer_package_imports_only_what_it_may(pkg: str) -> None:
    allowed = OUTER[pkg]
    assert allowed is not None
    files = sorted((PKG / pkg).glob("*.py"))
    assert files, pkg
    for f in files:
        for mod in edged_imports(f):
            if mod == f"edged.{pkg}" or mod.startswith(f"edged.{pkg}."):
                continue
            assert mod in allowed, f"{f.relative_to(PKG.parent)} imports {mod}"


def test_base_modules_import_no_stage() -> None:
    base = (
        "types",
        "errors",
        "config",
        "config_ingress",
        "config_accel",
        "config_sessions",
        "config_http",
        "config_env",
        "secrets",
        "figures",
        "aio",
        "logs",
        "store",
        "report",
        "config_backends",
        "models",  # the model manifest (the embeddings stage reads it)
    )
    for name in base:
        mods = edged_imports(PKG / f"{name}.py")
        assert mods <= BASE, (name, mods)
    # [agent] and [tools.NAME] check their schemas with the pure tool-schema library
    assert {m for m in edged_imports(PKG / "config_agent.py") if not m.startswith(TOOLS)} <= BASE


# where the stages meet (anything allowed): the composition root, the request path, the HTTP
# front door, and the accelerator report that reads several stages' probes
COMPOSITION = {"__init__", "app", "pipeline", "http_front", "accel"}
BASE_MODULES = {m.removeprefix("edged.") for m in BASE} | {"figures", "models", "config_agent"}


def test_every_module_is_in_a_layer() -> None:
    """A new module or package must be placed in a layer here before it is imported."""
    unplaced = []
    for p in sorted(PKG.iterdir()):
        if p.is_dir() and (p / "__init__.py").exists():
            if p.name not in STAGES and p.name not in OUTER:
                unplaced.append(f"{p.name}/")
        elif p.suffix == ".py" and p.stem not in COMPOSITION | BASE_MODULES:
            unplaced.append(p.name)
    assert not unplaced, (
        f"modules in no layer (add them to STAGES, OUTER, BASE or COMPOSITION): {unplaced}"
    )


def test_the_scanner_sees_imports() -> None:
    # the pipeline is where stages meet, so it must show up importing them
    assert {"edged.guardian", "edged.backends.base", "edged.errors"} <= edged_imports(
        PKG / "pipeline.py"
    )
