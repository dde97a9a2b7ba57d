"""The input-hash cache of a training.

The key is a hash of what determines the result: the dataset's content hash, the training
parameters (with batch/device resolved, and the base model named by its CONTENT: a ``.pt``
by its sha256, never its path), and the code version (visionloop and ultralytics versions
plus a hash of every source file that affects training). Step outputs live under
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
from ..files import atomic_write_text, sha256_file
from .evaluate import EVALUATOR_SOURCES

M = TypeVar("M", bound=BaseModel)
KEY_CHARS = 24  # of the key, in the work directory's name


_PKG = Path(__file__).resolve().parents[1]
# Source that decides what a training produces: the training package (all of it, engines
# included) and how a dataset version becomes the files ultralytics reads.
# The evaluate step is cached under the training key too: the served path it runs counts.
TRAINING_SOURCES = ("training/**/*.py", "datasets/manifest.py", *EVALUATOR_SOURCES)


def ultralytics_version() -> str:
    from importlib.metadata import version

    return version("ultralytics")


def code_version() -> str:
    """visionloop + ultralytics versions + a hash of the code that affects training: any change retrains."""
    h = hashlib.sha256()
    files = sorted({p for pattern in TRAINING_SOURCES for p in _PKG.glob(pattern)})
    for p in files:
        h.update(p.relative_to(_PKG).as_posix().encode() + b"\0" + p.read_bytes())
    return f"visionloop-{__version__}+ultralytics-{ultralytics_version()}+{h.hexdigest()[:12]}"


def model_identity(model: str) -> dict[str, str]:
    """What the base model IS: a ``.pt`` by content only (same bytes at another path: same key;
    new bytes at the same path: a new key); a local ``.yaml`` by its text and file name (the
    name carries the scale, yolo11n vs yolo11s); a packaged ``.yaml`` by its name and the
    ultralytics version that ships it."""
    path = Path(model).expanduser()
    if model.endswith(".pt"):
        return {"weights_sha256": sha256_file(path)}
    if path.is_file():
        return {"yaml": path.name, "yaml_sha256": sha256_file(path)}
    return {"yaml": model, "ultralytics": ultralytics_version()}


def cache_key(manifest: DatasetManifest, params: dict[str, Any], code: str) -> str:
    keyed = {**params, "model": model_identity(str(params["model"]))} if "model" in params else params
    payload = {"data": manifest.content_hash, "params": keyed, "code": code}
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
