"""Where a served model comes from: an ``.onnx`` path, a registry version ``M/5`` or an alias ``M@champion``.

``name=SOURCE`` renames the served slot (``--model shapes=/path/best.onnx``). Registry refs go
through :func:`visionloop.registry.resolve_model`, imported lazily (MLflow is heavy; it does
not pull torch). A file's version is ``file:`` + the first 12 hex digits of its sha256, so a
changed file is a new version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFoundError, ValidationError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value."""

    name: str
    ref: str  # the path or registry ref as given
    kind: str  # "file" | "registry"

    @property
    def registry_name(self) -> str | None:
        return re.split(r"[/@]", self.ref, maxsplit=1)[0] if self.kind == "registry" else None

    @property
    def alias(self) -> str | None:
        return self.ref.split("@", 1)[1] if self.kind == "registry" and "@" in self.ref else None


@dataclass(frozen=True)
class ResolvedSource:
    """A concrete file to load and the version it is."""

    version: str
    path: Path
    alias: str | None = None
    registry_name: str | None = None


_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/\d+|@[A-Za-z0-9_-]+)?$")


def parse_spec(value: str) -> ModelSpec:
    """``[name=]path.onnx`` | ``[name=]M/5`` | ``[name=]M@alias``; a bare ``M`` means ``M@champion``."""
    value = value.strip()
    name = None
    renamed = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)=(.+)$", value)
    if renamed:
        name, value = renamed.group(1), renamed.group(2).strip()
    value = value.removeprefix("models:/")
    if value.endswith(".onnx") or Path(value).expanduser().is_file():
        return ModelSpec(_check_name(name or Path(value).stem), value, "file")
    if not _REF.match(value):
        raise ValidationError(f"not a model source: {value!r} (use a .onnx path, NAME/VERSION or NAME@ALIAS)")
    if "/" not in value and "@" not in value:
        value = f"{value}@champion"
    return ModelSpec(_check_name(name or re.split(r"[/@]", value, maxsplit=1)[0]), value, "registry")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValidationError(f"bad model name {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def file_version(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "file:" + h.hexdigest()[:12]


def resolve_file(path: Path) -> ResolvedSource:
    path = Path(path).expanduser()
    if not path.is_file():
        raise NotFoundError(f"model file not found: {path}")
    return ResolvedSource(file_version(path), path.resolve())


def resolve_registry(ref: str) -> ResolvedSource:
    from .. import registry  # lazy: MLflow is only needed for registry refs

    resolved = registry.resolve_model(ref)
    alias = ref.split("@", 1)[1] if "@" in ref else None
    return ResolvedSource(str(resolved.version), Path(resolved.onnx_path), alias, resolved.name)


def resolve(spec: ModelSpec, version: str | None = None, path: str | None = None) -> ResolvedSource:
    """The file and version a slot should serve now; ``version``/``path`` override the spec (reload)."""
    if path:
        return resolve_file(Path(path))
    if version:
        if spec.kind != "registry":
            raise ValidationError(f"model {spec.name!r} is served from a file; reload it with a path, not a version")
        if not re.fullmatch(r"\d+", str(version)):
            raise ValidationError(f"bad version {version!r}: a registry version number is expected")
        return resolve_registry(f"{spec.registry_name}/{version}")
    if spec.kind == "file":
        return resolve_file(Path(spec.ref))
    return resolve_registry(spec.ref)
