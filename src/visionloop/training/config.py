"""Training parameters: one typed object, loaded from ``visionloop.yaml`` then overridden by flags.

The names are the ones a flyingthings pipeline user already knows (model, batch with -1 = auto,
epochs, imgsz, device, max_width, name). Every check happens here, before any work starts, so
a bad value is one clear line and nothing is trained, logged or registered.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from ..config_file import read_section
from ..errors import ValidationError

CPU_AUTO_BATCH = 16  # safe on any laptop at imgsz <= 640; ultralytics' AutoBatch needs CUDA
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
Engine = Literal["local", "ray"]
# The architecture trained when --model is not given, by the dataset's task.
DEFAULT_MODEL = {"detect": "yolo11n.yaml", "classify": "yolo11n-cls.yaml"}


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(default=DEFAULT_MODEL["detect"], description="Architecture .yaml (from scratch) or a local .pt.")
    data: str = Field(default="", description="Dataset version N@V, or a zip path/URL imported on the fly.")
    epochs: int = 50
    batch: int = Field(default=-1, description="-1 = automatic (CPU: 16; GPU: ultralytics AutoBatch).")
    imgsz: int = 640
    device: str = Field(default="auto", description="cpu, a CUDA index such as 0, or auto.")
    name: str = Field(default="", description="Registered model name; default: the dataset name.")
    seed: int = 0
    patience: int = 100
    freeze: int | None = Field(default=None, description="Freeze the first N layers (transfer learning); None = none.")
    workers: int = Field(default=0, description="Dataloader worker processes.")
    threads: int = Field(default=0, description="CPU threads for torch; 0 = automatic (the idle cores).")
    max_width: int | None = Field(default=None, description="Downscale wider images when importing a zip.")
    engine: Engine = "local"
    cpus: int | None = Field(default=None, description="--engine ray: CPUs the training task asks for (default 1).")
    force: bool = False
    verbose: bool = False

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("imgsz")
    @classmethod
    def _imgsz(cls, v: int) -> int:
        if v < 32 or v % 32:
            raise ValueError("must be a positive multiple of 32 (e.g. 160, 320, 640)")
        return v

    @field_validator("batch")
    @classmethod
    def _batch(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be -1 (automatic) or a positive number")
        return v

    @field_validator("freeze")
    @classmethod
    def _freeze(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError("must not be negative")
        return v

    @field_validator("cpus")
    @classmethod
    def _cpus(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("must be at least 1")
        return v

    @field_validator("patience", "workers", "seed", "threads")
    @classmethod
    def _non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must not be negative")
        return v

    @field_validator("max_width")
    @classmethod
    def _max_width(cls, v: int | None) -> int | None:
        if v is not None and v < 32:
            raise ValueError("must be at least 32 pixels")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        v = str(v).strip().lower()
        if v not in ("cpu", "auto") and not re.fullmatch(r"\d+(,\d+)*", v):
            raise ValueError("must be cpu, auto or a CUDA device index such as 0")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if v and not _NAME.match(v):
            raise ValueError("must start with a letter or digit and use only letters, digits, '_', '.', '-'")
        return v

    @model_validator(mode="after")
    def _model_kind(self) -> TrainConfig:
        if not self.model.endswith((".yaml", ".yml", ".pt")):
            raise ValueError(f"model {self.model!r} must be an architecture .yaml (e.g. yolo11n.yaml) or a .pt file")
        return self

    # -- derived values ------------------------------------------------------------------
    @property
    def model_given(self) -> bool:
        """--model (or the config file) named a model; otherwise the task's default is used."""
        return "model" in self.model_fields_set

    @property
    def from_scratch(self) -> bool:
        return self.model.endswith((".yaml", ".yml"))

    def resolved_device(self) -> str:
        """``auto`` → the first GPU when torch sees one, else cpu; a GPU that is absent is an error."""
        if self.device == "cpu":
            return "cpu"  # no torch import: keeps cached runs and input errors fast
        import torch

        has_cuda = torch.cuda.is_available()
        if self.device == "auto":
            return "0" if has_cuda else "cpu"
        if self.device != "cpu" and not has_cuda:
            raise ValidationError(f"--device {self.device}: no CUDA GPU is visible here; use --device cpu or auto")
        return self.device

    def resolved_batch(self, device: str) -> int:
        """-1 on CPU is a fixed safe size (AutoBatch only measures CUDA memory)."""
        if self.batch == -1 and device == "cpu":
            return CPU_AUTO_BATCH
        return self.batch

    def training_params(self) -> dict[str, Any]:
        """What defines the trained weights (the cache key uses these; name/force/verbose do not)."""
        params = self.model_dump(include={"model", "epochs", "batch", "imgsz", "device", "seed", "patience", "workers"})
        if self.freeze:  # only when set: keys of trainings without --freeze stay as they were
            params["freeze"] = self.freeze
        return params

    def resolved_threads(self) -> int:
        return self.threads or auto_threads()


def _first_error(exc: PydanticValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"unknown training parameter {loc!r}"
    return f"--{loc.replace('_', '-')}: {msg}" if loc else msg


def build_config(file_values: dict[str, Any], overrides: dict[str, Any]) -> TrainConfig:
    """File values first, then every override that is not None (flags win)."""
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return TrainConfig.model_validate(values)
    except PydanticValidationError as exc:
        raise ValidationError(_first_error(exc)) from None


def load_file(path: Path | None) -> dict[str, Any]:
    """The ``train:`` section of a ``visionloop.yaml``; ``None`` means ./visionloop.yaml if present."""
    return read_section(path, "train")


def load_config(config_path: Path | None = None, **overrides: Any) -> TrainConfig:
    return build_config(load_file(config_path), overrides)


def cpu_threads() -> int:
    """Cores this process may use (respects taskset/cgroup affinity where the OS reports it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_threads(cores: int | None = None, load: float | None = None) -> int:
    """Torch threads for CPU training: the cores nobody else is using, at least one.

    ultralytics always takes ``cores - 1`` (one idle core on an idle machine). Measured here
    (bench/RESULTS.md): on an idle machine every core is faster; on a busy one, OpenMP threads
    that have to share cores wait on each other and 2 threads ran 2-4x slower than 1. So count
    the idle cores from the 1-minute load average, not counting this process itself.
    """
    cores = cores or cpu_threads()
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows
            return max(1, cores - 1)
    busy_elsewhere = max(0.0, load - 1.0)
    return max(1, min(cores, int(cores - busy_elsewhere + 0.5)))
