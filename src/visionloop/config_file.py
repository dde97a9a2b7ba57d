"""Sections of ``visionloop.yaml`` other than ``train:`` (``gate:``, ``labelstudio:``, ``loop:``).

One reader, one error policy: a missing default file is an empty section, a named file that is
missing or not YAML is one clear line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from .errors import NotFoundError, ValidationError

DEFAULT_PATH = Path("visionloop.yaml")
M = TypeVar("M", bound=BaseModel)


def read_section(path: Path | None, key: str) -> dict[str, Any]:
    """The ``key:`` mapping of the config file; ``None`` means ./visionloop.yaml when present."""
    explicit = path is not None
    path = Path(path) if explicit else DEFAULT_PATH
    if not path.exists():
        if explicit:
            raise NotFoundError(f"config file {path} not found")
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ValidationError(f"config file {path} is not valid YAML{where}") from None
    if not isinstance(doc, dict):
        raise ValidationError(f"config file {path} must be a mapping")
    section = doc.get(key) or {}
    if not isinstance(section, dict):
        raise ValidationError(f"config file {path}: '{key}:' must be a mapping")
    return {str(k).replace("-", "_"): v for k, v in section.items()}


def load_section(model: type[M], path: Path | None, key: str, **overrides: Any) -> M:
    """A typed section: file values, then every override that is not None."""
    values = {**read_section(path, key), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return model.model_validate(values)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ValidationError(f"{key}.{loc}: {err['msg'].removeprefix('Value error, ')}") from None
