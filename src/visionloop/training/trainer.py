"""Ultralytics adapter: train one YOLO model from a ``data.yaml`` and report each epoch.

ultralytics is imported inside functions. What this adapter changes about plain
``YOLO(...).train()``, and why:

- ultralytics' own MLflow callback is removed from the trainer: the pipeline owns the run,
  and the callback would open a second, duplicate run (in ``./mlflow.db`` by default).
- On CPU ultralytics pins torch to ``cpu_count - 1`` threads (leaving a core idle) and forces
  0 dataloader workers. We give torch the idle cores (``--threads``, default automatic; see
  ``config.auto_threads``) and keep the user's ``--workers``.
- Everything ultralytics prints goes to ``train.log`` in the run directory (and to the
  terminal as well with ``--verbose``), so the terminal shows one rich progress bar.
- A weights file that does not exist is an error naming the fix; nothing is ever downloaded.
- Classification trains ultralytics' classify trainer on the materialized class-folder root
  (``data_yaml.parent``: it reads folders, not a data.yaml); a model of the other task is refused.
- From a ``.pt`` the trainer copies every tensor whose name and shape match (a new head when the
  classes differ); :class:`TransferInfo` records what was reused and what ``--freeze`` froze.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pydantic import BaseModel, Field

from ..errors import NotFoundError, ValidationError, VisionloopError
from ..predictions import Task
from .config import DEFAULT_MODEL, TrainConfig

PLOT_SUFFIXES = (".png", ".jpg")


@dataclass(frozen=True)
class EpochMetrics:
    """One epoch (1-based) with clean metric names: train/box_loss, metrics/mAP50-95, lr/pg0..."""

    epoch: int
    epochs: int
    metrics: dict[str, float]


class TransferInfo(BaseModel):
    """What a training started from a ``.pt`` reused: tensors copied (same name and shape), the
    new ones (the head, when the classes differ) and what ``--freeze`` kept fixed."""

    source: str = Field(description="The .pt the weights came from.")
    source_classes: list[str] = Field(default_factory=list)
    transferred: int = Field(description="Tensors copied from the source.")
    total: int = Field(description="Tensors in the trained model.")
    new: list[str] = Field(default_factory=list, description="Tensors not copied (initialised fresh).")
    head_classes_kept: list[str] = Field(default_factory=list,
                                         description="Classes of a new head whose rows came from the source.")
    freeze: int = Field(default=0, description="--freeze N: layers 0..N-1 were not trained.")
    frozen: int = Field(default=0, description="Parameter tensors that were frozen.")

    def summary(self) -> str:
        new = f"; new: {', '.join(sorted({n.rsplit('.', 1)[0] for n in self.new}))}" if self.new else ""
        if self.head_classes_kept:
            new += f" (rows kept for {', '.join(self.head_classes_kept)})"
        frozen = f"; froze layers 0-{self.freeze - 1} ({self.frozen} tensors)" if self.frozen else "; nothing frozen"
        return f"transferred {self.transferred}/{self.total} tensors from {Path(self.source).name}{new}{frozen}"

    def mlflow_params(self) -> dict[str, str | int]:
        return {"transfer.source": self.source, "transfer.tensors": f"{self.transferred}/{self.total}",
                "transfer.new": ",".join(sorted({n.rsplit(".", 1)[0] for n in self.new})) or "-",
                "transfer.source_classes": ",".join(self.source_classes), "transfer.frozen_tensors": self.frozen,
                "transfer.head_classes_kept": ",".join(self.head_classes_kept) or "-"}


class TrainOutput(BaseModel):
    """What a training left on disk (the train step's done-marker; the history is not stored:
    a cached training replays it from results.csv)."""

    save_dir: Path
    best_pt: Path
    log_file: Path
    epochs_run: int
    final_metrics: dict[str, float] = Field(description="Validation of best.pt after training.")
    transfer: TransferInfo | None = Field(default=None, description="Set when training started from a .pt.")
    history: list[EpochMetrics] = Field(default_factory=list, exclude=True)

    @property
    def plots(self) -> list[Path]:
        return sorted(p for p in self.save_dir.iterdir() if p.suffix in PLOT_SUFFIXES)


def clean_metric_name(key: str) -> str:
    """``metrics/mAP50-95(B)`` → ``metrics/mAP50-95`` (MLflow-safe, box suffix dropped)."""
    return key.replace("(B)", "").replace("(", "").replace(")", "")


def check_model_source(model: str) -> None:
    """Fail early (before any run exists) when the weights or architecture cannot be found."""
    if model.endswith(".pt"):
        if not Path(model).is_file():
            raise NotFoundError(
                f"model weights {model} not found; pass an existing .pt or an architecture like "
                "yolo11n.yaml (trains from scratch); weights cannot be downloaded here"
            )
        return
    if Path(model).is_file() or _packaged_architecture(model):
        return
    raise NotFoundError(
        f"model architecture {model} not found; pass a local .yaml/.pt or a known architecture like yolo11n.yaml"
    )


def _packaged_architecture(model: str) -> bool:
    """Is ``model`` one of ultralytics' bundled .yaml files? Checked on disk, without importing it.

    ultralytics also accepts scaled names: yolo11n.yaml is yolo11.yaml at scale n.
    """
    import importlib.util

    if importlib.util.find_spec("ultralytics") is None:
        raise VisionloopError("ultralytics is not installed; install visionloop[train]")
    return _architecture_file(model) is not None


def _architecture_file(model: str) -> Path | None:
    """The .yaml file behind ``model`` (a local file, or ultralytics' bundled one, maybe scaled)."""
    import importlib.util
    import re

    if Path(model).is_file() and not model.endswith(".pt"):
        return Path(model)
    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return None
    cfg_dir = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "models"
    name = Path(model).name
    unscaled = re.sub(r"(\d+)([nslmx])(-[a-z0-9]+)?\.(ya?ml)$", r"\1\3.\4", name)
    return next(iter([*cfg_dir.rglob(name), *cfg_dir.rglob(unscaled)]), None)


def architecture_task(model: str) -> Task | None:
    """The task of an architecture .yaml (its last head module: ``Classify`` or not), read without
    importing ultralytics; None for a ``.pt`` (known only once loaded) or an unreadable file."""
    import yaml

    if model.endswith(".pt"):
        return None
    path = _architecture_file(model)
    try:
        head = (yaml.safe_load(path.read_text()) or {}).get("head") if path else None
    except (OSError, yaml.YAMLError):
        return None
    if not head:
        return None
    return "classify" if str(head[-1][2]) == "Classify" else "detect"


def check_model_task(model: str, found: str, task: str) -> None:
    """A detection model cannot train on class folders (nor the reverse): say which model to pass."""
    if found != task:
        raise ValidationError(f"model {model} is a {found} model but the dataset is a {task} dataset; "
                              f"pass a {task} model such as --model {DEFAULT_MODEL[task]}")


class _Tee(io.TextIOBase):
    """Write to several text streams (the log file, and the terminal with --verbose)."""

    def __init__(self, *streams: TextIO):
        self.streams = streams

    def write(self, s: str) -> int:
        for st in self.streams:
            st.write(s)
        return len(s)

    def flush(self) -> None:
        for st in self.streams:
            st.flush()

    def isatty(self) -> bool:  # ultralytics' own bars then print plain lines, fine for a log
        return False


@contextlib.contextmanager
def ultralytics_output(log_file: Path, verbose: bool = False) -> Iterator[None]:
    """Send prints, warnings and ultralytics' logger to ``log_file`` (tee to stderr if verbose)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a", encoding="utf-8") as fh:
        target: TextIO = _Tee(fh, sys.__stderr__) if verbose else fh
        with contextlib.redirect_stdout(target):  # the first import prints a settings banner
            from ultralytics.utils import LOGGER
        handlers = [h for h in LOGGER.handlers if isinstance(h, logging.StreamHandler)]
        # a handler created by that import is bound to ``target``: give it the real stdout back
        saved = [(h, None if h.stream is target else h.stream, h.level) for h in handlers]
        try:
            for h in handlers:
                h.setStream(target)
                h.setLevel(logging.INFO)
            with contextlib.redirect_stdout(target), contextlib.redirect_stderr(target):
                yield
        finally:
            for h, stream, level in saved:
                h.setStream(stream or sys.stdout)
                h.setLevel(level)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """ultralytics' select_device() calls torch.set_num_threads(NUM_THREADS = cpu_count - 1)
    on every train/val/predict; swapping the module constant makes all of them use ``n``."""
    from ultralytics.utils import torch_utils

    saved = torch_utils.NUM_THREADS
    torch_utils.NUM_THREADS = n
    try:
        yield
    finally:
        torch_utils.NUM_THREADS = saved


def _strip_ultralytics_mlflow(trainer) -> None:
    for event, fns in trainer.callbacks.items():
        trainer.callbacks[event] = [f for f in fns if not getattr(f, "__module__", "").endswith("callbacks.mlflow")]


def read_results_csv(path: Path, epochs: int) -> list[EpochMetrics]:
    """Per-epoch metrics from ultralytics' results.csv (used to replay a cached training)."""
    if not path.exists():
        return []
    out = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            row = {k.strip(): v for k, v in row.items() if k}
            ep = int(float(row.pop("epoch")))
            vals = {}
            for k, v in row.items():
                try:
                    f = float(v)
                except (TypeError, ValueError):
                    continue
                if math.isfinite(f) and k != "time":
                    vals[clean_metric_name(k)] = f
            out.append(EpochMetrics(ep, epochs, vals))
    return out


def _names(model) -> list[str]:
    names = getattr(model, "names", {}) or {}
    return [str(names[i]) for i in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]


def _classify_head_by_name(source, trainer) -> tuple[list[str], list[str]]:
    """Give a classify model's head one row per class of the data, matched by NAME.

    ultralytics copies every tensor of equal shape, and for a ``Classify`` head it does not
    remap by name: a 3-class head trained on circle/square/triangle would start as paper/rock/
    scissors, each row meaning another class. So unless the class lists are equal, the head is
    re-initialised and the rows of classes the source also has are copied over. Returns the
    head's tensor names (when anything changed) and the classes whose rows were kept; the EMA
    copy gets the same values.
    """
    import torch
    from ultralytics.nn.modules.head import Classify
    from ultralytics.utils.torch_utils import unwrap_model

    model = unwrap_model(trainer.model)
    head, src_head = model.model[-1], getattr(source, "model", [None])[-1]
    src_names, dst_names = _names(source), _names(model)
    if not isinstance(head, Classify) or src_names == dst_names:
        return [], []
    head.linear.reset_parameters()
    kept = []
    lookup = {n.strip().lower(): j for j, n in enumerate(src_names)}
    if isinstance(src_head, Classify) and src_head.linear.in_features == head.linear.in_features:
        with torch.no_grad():
            for i, name in enumerate(dst_names):
                j = lookup.get(name.strip().lower())
                if j is not None and j < src_head.linear.out_features:
                    head.linear.weight[i] = src_head.linear.weight[j].to(head.linear.weight)
                    head.linear.bias[i] = src_head.linear.bias[j].to(head.linear.bias)
                    kept.append(name)
    if trainer.ema is not None:
        trainer.ema.ema.model[-1].linear.load_state_dict(head.linear.state_dict())
    index = len(model.model) - 1
    return [f"model.{index}.linear.{k}" for k in head.linear.state_dict()], kept


def _transfer_info(source, trainer, cfg: TrainConfig) -> TransferInfo:
    """Compare the trained model's tensors with the .pt's: equal name and shape = copied by
    ultralytics' ``model.load`` (intersect_dicts) unless the head was re-initialised."""
    reset, kept = _classify_head_by_name(source, trainer)
    src = {k: v.shape for k, v in source.state_dict().items()}
    dst = trainer.model.state_dict()
    new = [k for k, v in dst.items() if src.get(k) != v.shape or k in reset]
    frozen = sum(not p.requires_grad for p in trainer.model.parameters())
    return TransferInfo(source=cfg.model, source_classes=_names(source), transferred=len(dst) - len(new),
                        total=len(dst), new=new, head_classes_kept=kept, freeze=cfg.freeze or 0, frozen=frozen)


def train(
    cfg: TrainConfig,
    data_yaml: Path,
    out_dir: Path,
    *,
    task: Task = "detect",
    device: str,
    batch: int,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
    on_batch: Callable[[int, int, int], None] | None = None,
    threads: int | None = None,
) -> TrainOutput:
    """Train ``cfg.model`` on ``data_yaml`` into ``out_dir/train``; blocking, in this process."""
    check_model_source(cfg.model)
    log_file = out_dir / "train.log"
    history: list[EpochMetrics] = []
    started = {"epochs": 0}
    transfer: list[TransferInfo] = []
    source = None  # the .pt's own model, kept to tell copied tensors from new ones

    def pretrain_start(trainer) -> None:
        _strip_ultralytics_mlflow(trainer)
        if trainer.device.type == "cpu":
            trainer.args.workers = cfg.workers  # ultralytics forced 0

    def pretrain_end(trainer) -> None:  # the model is built, loaded and frozen by now
        if source is not None:
            transfer.append(_transfer_info(source, trainer, cfg))

    def epoch_start(trainer) -> None:
        started["epochs"] += 1

    def batch_end(trainer) -> None:
        if on_batch is not None:
            nb = len(trainer.train_loader) if trainer.train_loader is not None else 0
            on_batch(trainer.epoch + 1, getattr(trainer, "_vl_batch", 0) + 1, nb)
            trainer._vl_batch = getattr(trainer, "_vl_batch", 0) + 1

    def fit_epoch_end(trainer) -> None:
        trainer._vl_batch = 0
        if trainer.epoch + 1 > started["epochs"]:
            return  # the final validation of best.pt re-fires this event; reported via final_metrics
        vals = {clean_metric_name(k): float(v) for k, v in trainer.label_loss_items(trainer.tloss, prefix="train").items()}
        vals.update({clean_metric_name(k): float(v) for k, v in (trainer.metrics or {}).items()})
        vals.update({k: float(v) for k, v in (trainer.lr or {}).items()})
        em = EpochMetrics(trainer.epoch + 1, trainer.epochs, {k: v for k, v in vals.items() if math.isfinite(v)})
        history.append(em)
        if on_epoch is not None:
            on_epoch(em)

    with ultralytics_output(log_file, cfg.verbose), torch_threads(threads or cfg.resolved_threads()):
        from ultralytics import YOLO

        try:
            model = YOLO(cfg.model)
        except (FileNotFoundError, OSError) as exc:
            raise NotFoundError(f"cannot load model {cfg.model}: {exc}") from None
        except Exception as exc:  # a corrupt .pt or a broken .yaml
            raise ValidationError(f"cannot load model {cfg.model}: {type(exc).__name__}: {exc}") from None
        check_model_task(cfg.model, model.task, task)
        if cfg.model.endswith(".pt"):
            source = model.model
        model.add_callback("on_pretrain_routine_start", pretrain_start)
        model.add_callback("on_pretrain_routine_end", pretrain_end)
        model.add_callback("on_train_epoch_start", epoch_start)
        model.add_callback("on_train_batch_end", batch_end)
        model.add_callback("on_fit_epoch_end", fit_epoch_end)
        try:
            # classify: ultralytics reads the class folders under the materialized root
            data = data_yaml.parent if task == "classify" else data_yaml
            extra = {"freeze": cfg.freeze} if cfg.freeze else {}
            model.train(
                data=str(data), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=batch, device=device,
                seed=cfg.seed, patience=cfg.patience, workers=cfg.workers, project=str(out_dir),
                name="train", exist_ok=True, verbose=True, plots=True, **extra,
            )
        except (KeyboardInterrupt, VisionloopError):
            raise
        except RuntimeError as exc:
            if "out of memory" in str(exc).lower():
                raise VisionloopError(f"training ran out of memory at batch {batch}; pass a smaller --batch") from None
            raise
        trainer = model.trainer
    best = Path(trainer.best)
    if not best.exists():
        best = Path(trainer.last)
    if not best.exists():
        raise VisionloopError(f"training finished without saving weights (see {log_file})")
    final = {clean_metric_name(k): float(v) for k, v in (trainer.metrics or {}).items()}
    return TrainOutput(save_dir=Path(trainer.save_dir), best_pt=best, log_file=log_file, epochs_run=len(history),
                       final_metrics=final, transfer=transfer[0] if transfer else None, history=history)
