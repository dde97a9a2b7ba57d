"""The MLflow client bound to visionloop's tracking URI, and the SQLite bootstrap.

Tracking and registry use the same URI: SQLite under ``VISIONLOOP_HOME`` unless
``MLFLOW_TRACKING_URI``/``VISIONLOOP_TRACKING_URI`` say otherwise. mlflow is imported inside
functions: importing the registry stays cheap.

A tracking server that does not answer is :class:`TrackingUnavailableError` after a short,
bounded retry (MLflow's own defaults retry for about four minutes).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..settings import get_settings

# MLflow reads these from the environment at every request; unset, they mean 7 retries with
# a backoff doubling from 2 s (about 4 minutes before an error) and 120 s per request.
# setdefault keeps whatever the user chose. ~3 s of retries (plus jitter) rides out a restart blip.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
_TRANSPORT = re.compile(r"^API request to \S+ failed with (timeout )?exception", re.S)
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_STATUS = re.compile(r"too many (\d{3}) error responses")


class TrackingUnavailableError(ConnectionError):
    """The tracking server did not answer (refused, timed out, 5xx) after the bounded retries.

    A ConnectionError, not a VisionloopError: a server maps it to 503 (try again later), the
    CLI prints its one line."""


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


def public_uri(uri: str) -> str:
    """``uri`` without a ``user:password@`` part, for messages."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")))


def _unavailable(uri: str, exc: BaseException) -> TrackingUnavailableError | None:
    """The one-line error for a transport failure of ``exc``; None when it is something else."""
    import requests

    text = str(exc)
    if not (_TRANSPORT.match(text) or isinstance(exc, (requests.ConnectionError, requests.Timeout))):
        return None
    if "timeout" in text.lower() or "timed out" in text.lower():
        reason = f"no answer within {os.environ.get('MLFLOW_HTTP_REQUEST_TIMEOUT', '?')} s"
    elif m := _STATUS.search(text):
        reason = f"it answered HTTP {m.group(1)}"
    elif m := _ERRNO.search(text):
        reason = m.group(1).strip().lower()
    else:
        reason = "the request failed"
    tries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0") or 0) + 1
    return TrackingUnavailableError(f"cannot reach the MLflow tracking server at {public_uri(uri)}: {reason} "
                                    f"({tries} tries); is it running? (MLFLOW_TRACKING_URI)")


@contextmanager
def reachable(uri: str | None = None) -> Iterator[None]:
    """Turn MLflow's transport failures inside the block into :class:`TrackingUnavailableError`."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except (MlflowException, OSError) as exc:
        err = _unavailable(uri or tracking_uri(), exc)
        if err is None:
            raise
        raise err from None


class _Client:
    """An MlflowClient whose calls fail with one clear line when the server does not answer."""

    def __init__(self, inner: Any, uri: str):
        self._inner, self._uri = inner, uri

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            with reachable(self._uri):
                return attr(*args, **kwargs)

        return call


def client():
    """An MlflowClient whose tracking and registry URIs are both ours.

    A new SQLite DB is created here with its artifact root under VISIONLOOP_HOME: MLflow's
    client default is ``./mlruns`` in whatever directory the process happens to run in.
    For a server, retries are bounded (:data:`HTTP_DEFAULTS`) and a server that does not
    answer is :class:`TrackingUnavailableError`.
    """
    from mlflow import MlflowClient

    _quiet_mlflow_logs()
    uri = tracking_uri()
    if uri.startswith(("http://", "https://")):
        for k, v in HTTP_DEFAULTS.items():
            os.environ.setdefault(k, v)
        return _Client(MlflowClient(tracking_uri=uri, registry_uri=uri), uri)
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
