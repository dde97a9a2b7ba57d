"""The input-hash cache of a training.

The key is a hash of what determines the result: the dataset's content hash, the training
parameters (with batch/device resolved) and the code version (visionloop and ultralytics
versions plus a hash of this package's source). Step outputs live under
``VISIONLOOP_HOME/cache/train/<key>``; a step whose typed done-marker exists is "cached".
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from .. import __version__
from ..datasets.manifest import DatasetManifest
from ..files import atomic_write_text

M = TypeVar("M", bound=BaseModel)
KEY_CHARS = 24  # of the key, in the work directory's name


def code_version() -> str:
    """visionloop + ultralytics versions + a hash of the training code: any change retrains."""
    from importlib.metadata import version

    h = hashlib.sha256()
    for p in sorted(Path(__file__).parent.glob("*.py")):
        h.update(p.name.encode() + p.read_bytes())
    return f"visionloop-{__version__}+ultralytics-{version('ultralytics')}+{h.hexdigest()[:12]}"


def cache_key(manifest: DatasetManifest, params: dict[str, Any], code: str) -> str:
    payload = {"data": manifest.content_hash, "params": params, "code": code}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


class StepCache:
    """One training's work directory: its files, and a typed JSON record per finished step."""

    def __init__(self, root: Path, key: str):
        self.key = key
        self.dir = root / "train" / key[:KEY_CHARS]

    def path(self, name: str) -> Path:
        return self.dir / name

    def has(self, name: str) -> bool:
        return self.path(name).exists()

    def load(self, name: str, model: type[M]) -> M:
        return model.model_validate_json(self.path(name).read_text())

    def save(self, name: str, value: BaseModel) -> Path:
        """Written whole or not at all: a step that died half way is never seen as done."""
        atomic_write_text(self.path(name), value.model_dump_json(indent=1))
        return self.path(name)

    def clear(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def fresh(self) -> None:
        self.clear()
        self.dir.mkdir(parents=True)
