"""The pipeline's MLflow run, and what every run records about where it came from.

One :class:`Tracker` per training, through one MlflowClient bound to visionloop's tracking URI
(never mlflow's global fluent state, which would leak runs between callers in one process).
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PARAM_MAX = 6000  # MLflow's limit on a param value
BATCH_MAX = 100  # params per log_batch call


def git_commit(cwd: Path | None = None) -> str | None:
    """HEAD of the repository holding ``cwd`` (default: this code's checkout), None outside git."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for pkg in ("visionloop", "ultralytics", "torch", "onnx", "onnxruntime", "mlflow"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


class Tracker:
    """Create one run, log into it, end it with a status."""

    def __init__(self, experiment: str):
        from .. import registry

        self.client = registry.client()
        self.uri = registry.tracking_uri()
        self.experiment_id = registry.experiment_id(experiment)
        self.run_id: str | None = None

    def start(self, run_name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        return self.run_id

    def params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:PARAM_MAX]) for k, v in params.items()]
        for i in range(0, len(items), BATCH_MAX):
            self.client.log_batch(self.run_id, params=items[i:i + BATCH_MAX])

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in values.items() if math.isfinite(float(v))]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def tags(self, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def artifact(self, path: Path, subdir: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), subdir)

    def end(self, status: str) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id, status)

    def fail(self, message: str) -> None:
        """Record why the run failed (first 5000 characters) and mark it FAILED."""
        self.tags({"visionloop.error": message[:5000]})
        self.end("FAILED")

    @property
    def location(self) -> str:
        """Where the run lives, for a message: the URI, unless it holds credentials."""
        return self.uri if "@" not in self.uri else "tracking server"

    @property
    def artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri
