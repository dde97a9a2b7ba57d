"""A version's files: register (ONNX + card into the run), download, resolve to a local file.

A version's artifacts are ``model/model.onnx`` and ``model/card.json`` in its run. Downloads
are cached under ``VISIONLOOP_HOME/cache/models/M/V`` and checked against the recorded
sha256 (hashed once, then by size and mtime); an alias is re-read from the registry on
every resolve, so resolving again after a promotion gives the new version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from ..errors import NotFoundError, VisionloopError
from ..files import atomic_write_text, sha256_file
from ..settings import get_settings
from .aliases import set_alias
from .card import CARD_FILE, TAG_ONNX_SHA256, ModelCard
from .client import client, reachable, tracking_uri
from .refs import CHALLENGER, CHAMPION, ModelRef
from .versions import ModelVersion, get_alias, get_version, resolve_version

ONNX_ARTIFACT_DIR = "model"
ONNX_FILE = "model.onnx"
VERIFIED_FILE = ".verified"  # "size:mtime_ns sha256" of the cached ONNX when it was last hashed


class VersionDetail(ModelVersion):
    """A version with its card (what ``models show M/5 --json`` prints)."""

    card: ModelCard


class ResolvedModel(VersionDetail):
    """A version made concrete: a local ONNX file (checked against its sha256) and its card."""

    onnx_path: Path

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @property
    def imgsz(self) -> int:
        return self.card.imgsz

    @property
    def task(self) -> str:
        return self.card.task


def register_version(name: str, run_id: str, onnx_path: Path, card: ModelCard,
                     tags: dict[str, str] | None = None, description: str = "", alias: bool = True) -> ModelVersion:
    """Log ``onnx_path`` and ``card`` into the run, add them as a new version of ``name``, alias it.

    The version's tags are the card's search tags, the ONNX sha256 and ``tags`` (extras). The
    first version of a model becomes ``champion``; later ones ``challenger`` until promoted.
    ``alias=False`` sets no alias (an int8 sibling: served by number until someone promotes it).
    """
    from mlflow.exceptions import MlflowException

    c = client()
    onnx_path = Path(onnx_path)
    all_tags = {**card.search_tags(), TAG_ONNX_SHA256: sha256_file(onnx_path), **(tags or {})}
    with tempfile.TemporaryDirectory(prefix="vl-register-") as tmp:
        staged = Path(tmp) / ONNX_FILE  # the registry always holds model/model.onnx
        if onnx_path.name == ONNX_FILE:
            staged = onnx_path
        else:
            shutil.copyfile(onnx_path, staged)
        card_file = Path(tmp) / CARD_FILE
        atomic_write_text(card_file, card.model_dump_json(indent=1))
        c.log_artifact(run_id, str(staged), ONNX_ARTIFACT_DIR)
        c.log_artifact(run_id, str(card_file), ONNX_ARTIFACT_DIR)
    try:
        c.create_registered_model(name, description="visionloop model (ONNX)")
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"{c.get_run(run_id).info.artifact_uri.rstrip('/')}/{ONNX_ARTIFACT_DIR}"
    mv = c.create_model_version(name, source, run_id=run_id, tags={k: str(v) for k, v in all_tags.items()},
                                description=description)
    version = str(mv.version)
    if alias:
        set_alias(name, CHAMPION if get_alias(name, CHAMPION) is None else CHALLENGER, version)
    return get_version(name, version)


def get_card(mv: ModelVersion | str) -> ModelCard:
    """The card of a version (or of what a ref names), read from its run's artifacts."""
    mv = resolve_version(mv) if isinstance(mv, str) else mv
    path = f"{ONNX_ARTIFACT_DIR}/{CARD_FILE}"
    c = client()
    if not mv.run_id or path not in {a.path for a in c.list_artifacts(mv.run_id, ONNX_ARTIFACT_DIR)}:
        return ModelCard.from_legacy_tags(mv.tags)  # registered before cards existed
    with tempfile.TemporaryDirectory(prefix="vl-card-") as tmp:
        return ModelCard.model_validate_json(Path(c.download_artifacts(mv.run_id, path, tmp)).read_text())


def _cache_dir(mv: ModelVersion) -> Path:
    return get_settings().cache_dir / "models" / mv.name / mv.version


def _stat_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}"


def _stamp(dest: Path, sha256: str) -> None:
    """Remember that the cached ONNX, as it is now (size, mtime), has this sha256."""
    atomic_write_text(dest / VERIFIED_FILE, f"{_stat_key(dest / ONNX_FILE)} {sha256}\n")


def _cache_valid(mv: ModelVersion, dest: Path) -> bool:
    """The cache holds this version. The file is hashed once; later checks compare its
    (size, mtime_ns) with the stamp written then, so resolving again costs no re-hash."""
    onnx, want = dest / ONNX_FILE, mv.tags.get(TAG_ONNX_SHA256)
    if not (onnx.exists() and (dest / CARD_FILE).exists()):
        return False
    if not want:
        return True
    try:
        if (dest / VERIFIED_FILE).read_text().split() == [_stat_key(onnx), want]:
            return True
    except OSError:
        pass
    if sha256_file(onnx) != want:
        return False
    _stamp(dest, want)
    return True


def _download(mv: ModelVersion, dest: Path) -> Path:
    """Fetch the version's ONNX and card into ``dest`` (atomically: temp dir, then rename)."""
    import mlflow

    onnx = dest / ONNX_FILE
    if _cache_valid(mv, dest):
        return onnx
    want = mv.tags.get(TAG_ONNX_SHA256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        uri = client().get_model_version_download_uri(mv.name, mv.version)
        with reachable():  # proxied artifacts (mlflow-artifacts:/) come through the server
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp),
                                                           tracking_uri=tracking_uri()))
        found = [got] if got.is_file() else sorted(got.rglob("*.onnx"))
        if not found:
            raise NotFoundError(f"model {mv.ref} holds no ONNX file")
        if want and sha256_file(found[0]) != want:
            raise VisionloopError(f"model {mv.ref}: downloaded ONNX does not match its recorded sha256")
        final_tmp = tmp / "final"
        final_tmp.mkdir()
        os.replace(found[0], final_tmp / ONNX_FILE)
        if want:
            _stamp(final_tmp, want)
        cards = [] if got.is_file() else sorted(got.rglob(CARD_FILE))
        if cards:
            os.replace(cards[0], final_tmp / CARD_FILE)
        else:  # registered before cards existed
            atomic_write_text(final_tmp / CARD_FILE, ModelCard.from_legacy_tags(mv.tags).model_dump_json(indent=1))
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(final_tmp, dest)
    except OSError as exc:
        raise VisionloopError(f"cannot fetch model {mv.ref}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return onnx


def resolve_model(ref: str | ModelRef) -> ResolvedModel:
    """``M/5`` / ``M@champion`` / ``models:/...`` → a local ONNX file and its card."""
    mv = resolve_version(ref)
    dest = _cache_dir(mv)
    onnx = _download(mv, dest)
    card = ModelCard.model_validate_json((dest / CARD_FILE).read_text())
    return ResolvedModel(**dict(mv), card=card, onnx_path=onnx)
