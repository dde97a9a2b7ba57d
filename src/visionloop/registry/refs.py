"""The one grammar for naming a model: a registry version, an alias, or an ONNX file.

::

    [slot=]NAME              NAME@champion
    [slot=]NAME/5            version 5 of NAME
    [slot=]NAME@alias        an alias (``NAME@latest``: the newest version)
    [slot=]models:/NAME/5    the same, with MLflow's prefix (always a registry ref)
    [slot=]path/to/x.onnx    a file (any existing file counts, whatever its suffix)

``slot=`` only matters to the server: it renames the slot the model is served under
(default: the registered name, or the file's stem). Pure parsing, no MLflow: the server
imports this.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..errors import ValidationError

CHAMPION = "champion"
CHALLENGER = "challenger"
LATEST = "latest"  # not a stored alias: the newest version
PREFIX = "models:/"

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
ALIAS_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_SLOT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]*)=(.+)$")
_EXPECTED = "expected NAME, NAME/5, NAME@alias, models:/NAME/5 or a path to an .onnx file"

RefKind = Literal["file", "registry"]


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference. Registry refs have ``name`` and exactly one of ``version``/``alias``;
    file refs have ``path``. ``slot`` is the served name (defaults filled in by the parser)."""

    kind: RefKind
    name: str
    version: str | None = None
    alias: str | None = None
    path: Path | None = None
    slot: str = ""

    @classmethod
    def parse(cls, text: str, *, files: bool = True) -> ModelRef:
        return parse_ref(text, files=files)

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def at_version(self, version: str | int) -> ModelRef:
        """The same model and slot pinned to ``version`` (a reload to a given version)."""
        if self.kind != "registry":
            raise ValidationError(f"model {self.slot!r} is served from a file; reload it with a path, not a version")
        v = str(version).strip()
        if not v.isdigit():
            raise ValidationError(f"bad version {version!r}: a registry version number is expected")
        return replace(self, version=str(int(v)), alias=None)

    def __str__(self) -> str:
        if self.kind == "file":
            return str(self.path)
        return f"{self.name}/{self.version}" if self.version is not None else f"{self.name}@{self.alias}"


def check_name(name: str, what: str = "model name") -> str:
    if not NAME_RE.match(name):
        raise ValidationError(f"bad {what} {name!r}: letters, digits, '.', '_' and '-' only")
    return name


def check_alias(alias: str) -> str:
    """An alias that may be stored (``latest`` is a selector, not an alias)."""
    if alias == LATEST or not ALIAS_RE.match(alias or ""):
        raise ValidationError(f"bad alias {alias!r}: use letters, digits, '_' or '-' (and not '{LATEST}')")
    return alias


def parse_ref(text: str, *, files: bool = True) -> ModelRef:
    """Parse ``text`` (grammar above). ``files=False``: only registry refs are accepted."""
    raw = str(text).strip()
    slot = None
    renamed = _SLOT.match(raw)
    if renamed:
        slot, raw = renamed.group(1), renamed.group(2).strip()
    if raw.startswith(PREFIX):
        ref = _parse_registry(raw.removeprefix(PREFIX), text)
    elif files and (raw.endswith(".onnx") or (raw and Path(raw).expanduser().is_file())):
        path = Path(raw)
        ref = ModelRef("file", name=path.stem, path=path)
    elif raw.endswith(".onnx"):
        raise ValidationError(f"bad model reference {text!r}: a registered model is expected here, not a file")
    else:
        ref = _parse_registry(raw, text)
    return replace(ref, slot=check_name(slot or ref.name, "served model name" if slot else "model name"))


def _parse_registry(body: str, text: str) -> ModelRef:
    if "@" in body:
        name, _, alias = body.partition("@")
        if not alias or not ALIAS_RE.match(alias):
            raise ValidationError(f"bad model reference {text!r}: the alias after '@' must be letters, digits, "
                                  f"'_' or '-' ({_EXPECTED})")
        ref = ModelRef("registry", name=name, alias=alias)
    elif "/" in body:
        name, _, version = body.partition("/")
        if not version.isdigit() and "/" not in version:
            raise ValidationError(f"bad model reference {text!r}: the version after '/' must be a number")
        ref = ModelRef("registry", name=name, version=str(int(version)) if version.isdigit() else version)
    else:
        ref = ModelRef("registry", name=body, alias=CHAMPION)
    if not NAME_RE.match(ref.name) or (ref.version is not None and not ref.version.isdigit()):
        raise ValidationError(f"bad model reference {text!r}: {_EXPECTED}")
    return ref
