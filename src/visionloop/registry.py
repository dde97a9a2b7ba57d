"""The model registry on MLflow: register ONNX versions, move aliases, resolve model refs.

One registered model per ``--name``. A version holds the ONNX file (``model/model.onnx`` in its
run's artifacts) and string tags describing it (see ``TAG_*``). Aliases: ``champion`` (what
servers serve by default) and ``challenger``; every alias move is appended to a model tag
(``visionloop.alias_history.<alias>``) so a rollback knows the previous champion.

Refs: ``M/5``, ``M@champion``, ``M@latest``, a bare ``M`` (= ``M@champion``), each optionally
prefixed with ``models:/``. Tracking and registry use the same URI (SQLite under
``VISIONLOOP_HOME`` unless ``MLFLOW_TRACKING_URI``/``VISIONLOOP_TRACKING_URI`` say otherwise).
mlflow is imported inside functions: importing this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import NotFoundError, ValidationError, VisionloopError
from .settings import get_settings

CHAMPION = "champion"
CHALLENGER = "challenger"
ONNX_ARTIFACT_DIR = "model"
ONNX_FILE = "model.onnx"

# Version tags written by the training pipeline (all values are strings).
TAG_DATASET = "dataset"  # N@V
TAG_MANIFEST_HASH = "manifest_hash"
TAG_CLASSES = "classes"  # JSON list
TAG_IMGSZ = "imgsz"
TAG_TASK = "task"
TAG_GIT_COMMIT = "git_commit"
TAG_ONNX_SHA256 = "onnx_sha256"
TAG_CACHE_KEY = "cache_key"
METRIC_PREFIX = "metrics."  # metrics.map50, metrics.map50_95, metrics.precision, metrics.recall
HISTORY_PREFIX = "visionloop.alias_history."
_HISTORY_KEEP = 50


# -- refs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelRef:
    name: str
    version: str | None = None
    alias: str | None = None  # exactly one of version/alias is set after parse

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        raw = text.strip()
        body = raw.removeprefix("models:/")
        if "@" in body:
            name, _, alias = body.rpartition("@")
            ref = cls(name=name, alias=alias)
        elif "/" in body:
            name, _, version = body.rpartition("/")
            if not version.isdigit():
                raise ValidationError(f"bad model reference {text!r}: the version after '/' must be a number")
            ref = cls(name=name, version=str(int(version)))
        else:
            ref = cls(name=body, alias=CHAMPION)
        if not ref.name or "/" in ref.name or "@" in ref.name or (ref.alias is not None and not ref.alias):
            raise ValidationError(f"bad model reference {text!r}: expected M/5, M@champion or models:/M/5")
        return ref

    def __str__(self) -> str:
        return f"{self.name}/{self.version}" if self.version else f"{self.name}@{self.alias}"


# -- typed results ------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    aliases: list[str]
    tags: dict[str, str]
    run_id: str | None
    source: str
    created_at: datetime
    description: str = ""

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def metrics(self) -> dict[str, float]:
        out = {}
        for k, v in self.tags.items():
            if k.startswith(METRIC_PREFIX):
                try:
                    out[k[len(METRIC_PREFIX):]] = float(v)
                except ValueError:
                    continue
        return out

    @property
    def classes(self) -> list[str]:
        try:
            return list(json.loads(self.tags.get(TAG_CLASSES, "[]")))
        except json.JSONDecodeError:
            return []


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    aliases: dict[str, str]  # alias -> version
    latest_version: str | None
    tags: dict[str, str]
    updated_at: datetime | None = None


@dataclass(frozen=True)
class AliasChange:
    alias: str
    version: str
    previous: str | None
    at: str


@dataclass(frozen=True)
class ResolvedModel:
    """A model version made concrete: a local ONNX file plus what a server needs to use it."""

    name: str
    version: str
    onnx_path: Path
    classes: list[str]
    imgsz: int
    task: str
    tags: dict[str, str] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    run_id: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


# -- client ---------------------------------------------------------------------------------
def tracking_uri() -> str:
    return get_settings().resolved_tracking_uri


def _quiet_mlflow_logs() -> None:
    """Alembic/MLflow INFO lines (DB migrations) would drown the CLI output."""
    for name in ("alembic", "mlflow", "mlflow.store.db.utils", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _local_artifact_root() -> Path | None:
    """Where run artifacts go for a local SQLite DB; None for a server (it decides)."""
    uri = tracking_uri()
    return get_settings().resolved_home / "mlartifacts" if uri.startswith("sqlite:///") else None


def client():
    """An MlflowClient whose tracking and registry URIs are both ours.

    A new SQLite DB is created here with its artifact root under VISIONLOOP_HOME: MLflow's
    client default is ``./mlruns`` in whatever directory the process happens to run in.
    """
    from mlflow import MlflowClient

    _quiet_mlflow_logs()
    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.exists():
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            db.parent.mkdir(parents=True, exist_ok=True)
            SqlAlchemyStore(uri, default_artifact_root=(_local_artifact_root() or db.parent).as_uri())
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created when missing (artifacts beside a local DB)."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = _local_artifact_root()
    try:
        return c.create_experiment(name, artifact_location=(root / name).as_uri() if root else None)
    except Exception:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def _ts(ms: int | None) -> datetime:
    return datetime.fromtimestamp((ms or 0) / 1000, tz=timezone.utc)


def _version_from(mv: Any, model_aliases: dict | None = None) -> ModelVersion:
    """``model_aliases`` (alias → version of the registered model) fills in what searches omit."""
    aliases = set(mv.aliases or [])
    if model_aliases:
        aliases |= {a for a, v in model_aliases.items() if str(v) == str(mv.version)}
    return ModelVersion(
        name=mv.name, version=str(mv.version), aliases=sorted(aliases), tags=dict(mv.tags or {}),
        run_id=mv.run_id or None, source=mv.source or "", created_at=_ts(mv.creation_timestamp),
        description=mv.description or "",
    )


def _registered(name: str, c=None) -> Any:
    from mlflow.exceptions import MlflowException

    c = c or client()
    try:
        return c.get_registered_model(name)
    except MlflowException as exc:
        if _is_not_found(exc):
            known = ", ".join(m.name for m in list_models(c)) or "none"
            raise NotFoundError(f"model {name!r} is not registered (known: {known})") from None
        raise


# -- queries --------------------------------------------------------------------------------
def list_models(c=None) -> list[RegisteredModel]:
    c = c or client()
    out = []
    for rm in c.search_registered_models(max_results=1000):
        versions = [int(v.version) for v in (rm.latest_versions or [])]
        out.append(RegisteredModel(
            name=rm.name, aliases={a: str(v) for a, v in (rm.aliases or {}).items()},
            latest_version=str(max(versions)) if versions else None, tags=dict(rm.tags or {}),
            updated_at=_ts(rm.last_updated_timestamp),
        ))
    return sorted(out, key=lambda m: m.name)


def get_model(name: str) -> RegisteredModel:
    c = client()
    rm = _registered(name, c)
    versions = list_versions(name, c)
    return RegisteredModel(
        name=rm.name, aliases={a: str(v) for a, v in (rm.aliases or {}).items()},
        latest_version=versions[-1].version if versions else None, tags=dict(rm.tags or {}),
        updated_at=_ts(rm.last_updated_timestamp),
    )


def list_versions(name: str, c=None) -> list[ModelVersion]:
    """All versions of ``name``, oldest first."""
    c = c or client()
    aliases = _registered(name, c).aliases or {}
    found = c.search_model_versions(f"name = '{name}'")  # its results carry no aliases
    return sorted((_version_from(mv, aliases) for mv in found), key=lambda v: int(v.version))


def get_version(name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    c = client()
    _registered(name, c)
    try:
        return _version_from(c.get_model_version(name, str(version)))
    except MlflowException as exc:
        if _is_not_found(exc):
            have = ", ".join(v.version for v in list_versions(name, c)) or "none"
            raise NotFoundError(f"model {name} has no version {version} (versions: {have})") from None
        raise


def get_alias(name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when the alias is not set."""
    rm = _registered(name)
    v = (rm.aliases or {}).get(alias)
    return str(v) if v is not None else None


def find_versions_by_tag(name: str, key: str, value: str) -> list[ModelVersion]:
    """Versions of ``name`` (possibly none; the model need not exist) with tag ``key`` = ``value``."""
    try:
        versions = list_versions(name)
    except NotFoundError:
        return []
    return [v for v in versions if v.tags.get(key) == value]


def resolve_version(ref: str | ModelRef) -> ModelVersion:
    """The version a ref names (``M/5``, ``M@champion``, ``M@latest``)."""
    r = ModelRef.parse(ref) if isinstance(ref, str) else ref
    if r.version is not None:
        return get_version(r.name, r.version)
    if r.alias == "latest":
        versions = list_versions(r.name)
        if not versions:
            raise NotFoundError(f"model {r.name} has no versions")
        return versions[-1]
    v = get_alias(r.name, r.alias or CHAMPION)
    if v is None:
        aliases = ", ".join(sorted((_registered(r.name).aliases or {}).keys())) or "none"
        raise NotFoundError(f"model {r.name} has no alias {r.alias!r} (aliases: {aliases})")
    return get_version(r.name, v)


# -- changes --------------------------------------------------------------------------------
def alias_history(name: str, alias: str) -> list[AliasChange]:
    rm = _registered(name)
    raw = (rm.tags or {}).get(HISTORY_PREFIX + alias, "[]")
    try:
        return [AliasChange(**e) for e in json.loads(raw)]
    except (json.JSONDecodeError, TypeError):
        return []


def set_alias(name: str, alias: str, version: str | int) -> AliasChange:
    """Point ``alias`` at ``version`` and append the move to the model's alias history."""
    if alias == "latest" or not alias or not alias.replace("_", "").replace("-", "").isalnum():
        raise ValidationError(f"bad alias {alias!r}: use letters, digits, '_' or '-' (and not 'latest')")
    c = client()
    get_version(name, version)  # clear error for unknown versions
    previous = get_alias(name, alias)
    c.set_registered_model_alias(name, alias, str(version))
    change = AliasChange(alias=alias, version=str(version), previous=previous,
                         at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    history = [c_.__dict__ for c_ in alias_history(name, alias)] + [change.__dict__]
    c.set_registered_model_tag(name, HISTORY_PREFIX + alias, json.dumps(history[-_HISTORY_KEEP:]))
    return change


def delete_alias(name: str, alias: str) -> None:
    c = client()
    _registered(name, c)
    if get_alias(name, alias) is not None:
        c.delete_registered_model_alias(name, alias)


def set_version_tags(name: str, version: str | int, tags: dict[str, str]) -> None:
    c = client()
    get_version(name, version)
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), k, str(v))


def register_version(
    name: str, run_id: str, onnx_path: Path, tags: dict[str, str], description: str = ""
) -> ModelVersion:
    """Log ``onnx_path`` into the run, add it as a new version of ``name`` and alias it.

    The first version of a model becomes ``champion``; later ones become ``challenger`` until
    someone promotes them. Tags must already hold the metadata (dataset, metrics, classes...).
    """
    import tempfile

    from mlflow.exceptions import MlflowException

    c = client()
    onnx_path = Path(onnx_path)
    tags = {**tags, TAG_ONNX_SHA256: tags.get(TAG_ONNX_SHA256) or _sha256_file(onnx_path)}
    with tempfile.TemporaryDirectory(prefix="vl-register-") as tmp:
        staged = onnx_path
        if onnx_path.name != ONNX_FILE:  # the registry always holds model/model.onnx
            staged = Path(tmp) / ONNX_FILE
            shutil.copyfile(onnx_path, staged)
        c.log_artifact(run_id, str(staged), ONNX_ARTIFACT_DIR)
    try:
        c.create_registered_model(name, description="visionloop model (ONNX)")
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_ALREADY_EXISTS":
            raise
    run = c.get_run(run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{ONNX_ARTIFACT_DIR}"
    mv = c.create_model_version(name, source, run_id=run_id, tags={k: str(v) for k, v in tags.items()},
                                description=description)
    version = str(mv.version)
    set_alias(name, CHAMPION if get_alias(name, CHAMPION) is None else CHALLENGER, version)
    return get_version(name, version)


# -- resolve to a local file ------------------------------------------------------------------
def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _download(mv: ModelVersion, dest: Path) -> Path:
    """Fetch the version's ONNX into ``dest`` (atomically: temp dir, then rename)."""
    import mlflow

    onnx = dest / ONNX_FILE
    want = mv.tags.get(TAG_ONNX_SHA256)
    if onnx.exists() and (not want or _sha256_file(onnx) == want):
        return onnx
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        uri = client().get_model_version_download_uri(mv.name, mv.version)
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp),
                                                       tracking_uri=tracking_uri()))
        found = [got] if got.is_file() else sorted(got.rglob("*.onnx"))
        if not found:
            raise NotFoundError(f"model {mv.ref} holds no ONNX file")
        if want and _sha256_file(found[0]) != want:
            raise VisionloopError(f"model {mv.ref}: downloaded ONNX does not match its recorded sha256")
        final_tmp = tmp / "final"
        final_tmp.mkdir()
        os.replace(found[0], final_tmp / ONNX_FILE)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(final_tmp, dest)
    except OSError as exc:
        raise VisionloopError(f"cannot fetch model {mv.ref}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return onnx


def resolve_model(ref: str) -> ResolvedModel:
    """``M/5`` / ``M@champion`` / ``models:/...`` → a local ONNX file and its metadata.

    Files are cached under ``VISIONLOOP_HOME/cache/models/M/V``; an alias is re-read from the
    registry on every call, so calling this again after a promotion gives the new version.
    """
    mv = resolve_version(ref)
    onnx = _download(mv, get_settings().cache_dir / "models" / mv.name / mv.version)
    try:
        imgsz = int(mv.tags.get(TAG_IMGSZ, "0"))
    except ValueError:
        imgsz = 0
    return ResolvedModel(
        name=mv.name, version=mv.version, onnx_path=onnx, classes=mv.classes, imgsz=imgsz,
        task=mv.tags.get(TAG_TASK, "detect"), tags=mv.tags, aliases=mv.aliases, run_id=mv.run_id,
    )
