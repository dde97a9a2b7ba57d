"""The MLflow client bound to visionloop's tracking URI, and the SQLite bootstrap.

Tracking and registry use the same URI: SQLite under ``VISIONLOOP_HOME`` unless
``MLFLOW_TRACKING_URI``/``VISIONLOOP_TRACKING_URI`` say otherwise. mlflow is imported inside
functions: importing the registry stays cheap.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from ..settings import get_settings


def tracking_uri() -> str:
    return get_settings().resolved_tracking_uri


def _quiet_mlflow_logs() -> None:
    """Alembic/MLflow INFO lines (DB migrations) would drown the CLI output."""
    for name in ("alembic", "mlflow", "mlflow.store.db.utils", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)


def local_artifact_root() -> Path | None:
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
            SqlAlchemyStore(uri, default_artifact_root=(local_artifact_root() or db.parent).as_uri())
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(name: str) -> str:
    """The id of experiment ``name``, created when missing (artifacts beside a local DB)."""
    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    root = local_artifact_root()
    try:
        return c.create_experiment(name, artifact_location=(root / name).as_uri() if root else None)
    except Exception:  # created concurrently by another process
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def is_not_found(exc: Exception) -> bool:
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in str(exc).lower()


def timestamp(ms: int | None) -> datetime:
    return datetime.fromtimestamp((ms or 0) / 1000, tz=timezone.utc)
