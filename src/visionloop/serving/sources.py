"""Where a served model comes from: a ``--model`` value parsed by the registry's one grammar.

``[slot=]path.onnx``, ``[slot=]M/5``, ``[slot=]M@alias`` or a bare ``M`` (= ``M@champion``);
see :mod:`visionloop.registry.refs`. Registry refs go through
:func:`visionloop.registry.resolve_model`, imported lazily (MLflow is heavy; it does not pull
torch). A file's version is ``file:`` + the first 12 hex digits of its sha256, so a changed
file is a new version; the hash is remembered per (size, mtime_ns, inode), so resolving an
unchanged file again reads no bytes of it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFoundError
from ..files import sha256_file
from ..registry.refs import ModelRef, parse_ref


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value: the slot it fills and the model it serves."""

    model: ModelRef

    @property
    def name(self) -> str:
        """The served slot name."""
        return self.model.slot

    @property
    def ref(self) -> str:
        """The path, or the registry ref in its normal form (``M/5``, ``M@alias``)."""
        return str(self.model)

    @property
    def kind(self) -> str:
        return self.model.kind

    @property
    def registry_name(self) -> str | None:
        return self.model.name if self.model.kind == "registry" else None

    @property
    def alias(self) -> str | None:
        return self.model.alias


@dataclass(frozen=True)
class ResolvedSource:
    """A concrete file to load and the version it is."""

    version: str
    path: Path
    alias: str | None = None
    registry_name: str | None = None


def parse_spec(value: str) -> ModelSpec:
    return ModelSpec(parse_ref(value))


_HASHES: dict[Path, tuple[tuple[int, int, int], str]] = {}  # path -> (stat key, version)
_HASHES_LOCK = threading.Lock()
_HASHES_MAX = 256


def file_version(path: Path) -> str:
    path = Path(path).resolve()
    st = path.stat()
    key = (st.st_size, st.st_mtime_ns, st.st_ino)
    with _HASHES_LOCK:
        hit = _HASHES.get(path)
    if hit and hit[0] == key:
        return hit[1]
    version = "file:" + sha256_file(path)[:12]
    with _HASHES_LOCK:
        if len(_HASHES) >= _HASHES_MAX:
            _HASHES.pop(next(iter(_HASHES)))
        _HASHES[path] = (key, version)
    return version


def resolve_file(path: Path) -> ResolvedSource:
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(f"model file not found: {path}")
    return ResolvedSource(file_version(path), path.resolve())


def resolve_registry(ref: ModelRef) -> ResolvedSource:
    from .. import registry  # lazy: MLflow is only needed for registry refs

    resolved = registry.resolve_model(ref)
    return ResolvedSource(str(resolved.version), Path(resolved.onnx_path), ref.alias, resolved.name)


def current_version(spec: ModelSpec) -> str:
    """The registry version the slot's ref names now: one registry call, nothing downloaded or
    hashed (the watcher's poll). Only for registry slots."""
    from .. import registry

    return registry.version_of(spec.model)


def resolve(spec: ModelSpec, version: str | None = None, path: str | None = None) -> ResolvedSource:
    """The file and version a slot should serve now; ``version``/``path`` override the spec (reload)."""
    if path:
        return resolve_file(Path(path))
    if version:
        return resolve_registry(spec.model.at_version(version))
    if spec.model.path is not None:
        return resolve_file(spec.model.path)
    return resolve_registry(spec.model)
