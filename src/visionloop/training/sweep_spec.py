"""What a ``visionloop sweep`` is made of: its config, the grid points, what every trial shares,
and the rows of its result. Pure data, shared by the caller (sweep.py) and the Ray workers
(sweep_trial.py)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from ..errors import ValidationError
from .config import TrainConfig, build_config

PARENT_RUN_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests child runs under the parent
TAG_SWEEP = "visionloop.sweep"  # "parent" or "trial"
TAG_TRIAL_ID = "visionloop.sweep.trial_id"
TAG_STOPPED = "visionloop.sweep.stopped"
TAG_BEST = "visionloop.sweep.best_run"
VAL_METRIC = "val_metric"  # the per-epoch metric ASHA compares (Tune's result key)
# ultralytics' per-epoch validation metric, by task (the clean names of trainer.EpochMetrics)
EPOCH_METRIC = {"detect": "metrics/mAP50-95", "classify": "metrics/accuracy_top1"}
LATENCY_RUNS, LATENCY_WARMUP = 20, 3
DEFAULT_OPTIMIZER = "SGD"  # ultralytics' 'auto' ignores lr0 (it picks AdamW and its own rate)


class SweepConfig(BaseModel):
    """What ``visionloop sweep`` searches; every value checked before anything runs."""

    data: str
    models: list[str]
    imgsz: list[int]
    lr0: list[float]
    epochs: int
    name: str = ""
    cpus_per_trial: int = Field(default=1, description="CPUs (and torch threads) each trial takes.")
    samples: int = Field(default=1, description="Repeats of every grid point (seed + repeat index).")
    grace_period: int = Field(default=1, description="ASHA: epochs every trial runs before it may be stopped.")
    reduction_factor: int = Field(default=2, description="ASHA: keep the best 1/N at each rung.")
    optimizer: str = DEFAULT_OPTIMIZER
    device: str = "cpu"
    batch: int = -1
    seed: int = 0


class TrialPoint(BaseModel):
    """One grid point."""

    model: str
    imgsz: int
    lr0: float
    repeat: int = 0

    def label(self) -> str:
        rep = f"-r{self.repeat}" if self.repeat else ""
        return f"{Path(self.model).stem}-{self.imgsz}px-lr{self.lr0:g}{rep}"


class TrialSpec(BaseModel):
    """What every trial shares (sent to the workers inside Tune's param space)."""

    data: str  # N@V, resolved by the caller
    name: str
    epochs: int
    task: str
    parent_run_id: str
    cpus: int
    optimizer: str
    device: str
    batch: int
    seed: int


class TrialRow(BaseModel):
    """One trial in the comparison table (and ``--json``)."""

    trial: str
    run_id: str | None = None
    model: str
    imgsz: int
    lr0: float
    repeat: int = 0
    status: str = Field(description="FINISHED, STOPPED (by ASHA), FAILED or KILLED.")
    epochs_run: int = 0
    val_metric: float | None = Field(default=None, description="Last validation metric reported to Tune.")
    metric: float | None = Field(default=None, description="The gate's metric on the test split (served path).")
    latency_ms: float | None = Field(default=None, description="Median ms per image, ONNX on CPU (OnnxModel).")
    onnx_bytes: int | None = None
    start_ms: int | None = None
    end_ms: int | None = None
    error: str = ""


class SweepResult(BaseModel):
    model_name: str
    dataset: str
    task: str
    metric: str = Field(description="The gate's metric key: map50_95 or top1.")
    metric_label: str
    parent_run_id: str
    trials: list[TrialRow]
    best: str | None = Field(default=None, description="The best trial's name.")
    registered: str | None = Field(default=None, description="NAME/VERSION of the registered best trial.")
    aliases: list[str] = Field(default_factory=list)


# -- input ------------------------------------------------------------------------------------
def parse_list(text: str | None, flag: str, kind: type = str) -> list[Any]:
    """``a,b,c`` → typed values; an empty list or a bad value is one line naming the flag."""
    items = [s.strip() for s in (text or "").split(",") if s.strip()]
    if not items:
        raise ValidationError(f"{flag}: give at least one value (a comma-separated list)")
    try:
        values = [kind(s) for s in items]
    except ValueError:
        raise ValidationError(f"{flag}: {text!r} is not a comma-separated list of {kind.__name__} values") from None
    if len(set(values)) != len(values):
        raise ValidationError(f"{flag}: {text!r} lists a value twice")
    return values


def grid(cfg: SweepConfig) -> list[TrialPoint]:
    return [TrialPoint(model=m, imgsz=s, lr0=lr, repeat=r)
            for m, s, lr, r in itertools.product(cfg.models, cfg.imgsz, cfg.lr0, range(cfg.samples))]


def trial_config(spec: TrialSpec, point: TrialPoint) -> TrainConfig:
    """The trial's training parameters, checked by the same rules as ``visionloop train``."""
    return build_config({}, {"model": point.model, "data": spec.data, "epochs": spec.epochs, "imgsz": point.imgsz,
                             "name": spec.name, "device": spec.device, "batch": spec.batch,
                             "seed": spec.seed + point.repeat, "threads": spec.cpus, "patience": spec.epochs})


def point_of(config: dict[str, Any]) -> TrialPoint:
    return TrialPoint.model_validate({k: config[k] for k in ("model", "imgsz", "lr0", "repeat")})
