"""`visionloop sweep`: compare model sizes, image sizes and learning rates on Ray Tune (ASHA),
register the best trial as challenger, print a table of every trial."""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from .console import console, err_console, json_option, print_json

if TYPE_CHECKING:
    from ..training.sweep_spec import SweepResult

TABLE_WIDTH = 160


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def sweep_table(res: SweepResult) -> Table:
    """trial | model | imgsz | lr0 | status | epochs | val | test metric | latency | size (best marked)."""
    t = Table(title=f"sweep of {res.model_name} on {res.dataset}: {res.metric_label} on the test split "
                    f"(parent run {res.parent_run_id})")
    for col, justify in (("trial", "left"), ("model", "left"), ("imgsz", "right"), ("lr0", "right"),
                         ("status", "left"), ("epochs", "right"), ("val", "right"),
                         (f"test {res.metric_label}", "right"), ("ONNX ms/img (CPU)", "right"),
                         ("ONNX MB", "right")):
        t.add_column(col, justify=justify)  # type: ignore[arg-type]
    for r in res.trials:
        best = r.trial == res.best
        t.add_row(f"{r.trial}{' *' if best else ''}", r.model, str(r.imgsz), f"{r.lr0:g}", r.status, str(r.epochs_run),
                  _fmt(r.val_metric, ".4f"), _fmt(r.metric, ".4f"), _fmt(r.latency_ms, ".2f"),
                  _fmt(r.onnx_bytes / 1e6 if r.onnx_bytes else None, ".2f"), style="bold" if best else None)
    return t


def sweep(
    data: str = typer.Option(None, "--data", "-d", help="Dataset version N@V (it needs a test split)."),
    models: str = typer.Option("yolo11n.yaml", "--models", help="Comma-separated architectures, e.g. "
                               "yolo11n.yaml,yolo11s.yaml,yolo11m.yaml (the S/M/L comparison)."),
    imgsz: str = typer.Option("640", "--imgsz", help="Comma-separated image sizes (multiples of 32)."),
    lr0: str = typer.Option("0.01", "--lr0", help="Comma-separated initial learning rates."),
    epochs: int = typer.Option(10, "--epochs", "-e", help="Epochs per trial (ASHA may stop a trial earlier)."),
    name: str = typer.Option(None, "--name", "-n", help="Registered model name (default: the dataset name)."),
    cpus_per_trial: int = typer.Option(1, "--cpus-per-trial", help="CPUs (and torch threads) per trial."),
    samples: int = typer.Option(1, "--samples", help="Repeats of every grid point, each with its own seed."),
    grace_period: int = typer.Option(1, "--grace-period", help="ASHA: epochs before a trial may be stopped."),
    reduction_factor: int = typer.Option(2, "--reduction-factor", help="ASHA: keep the best 1/N at each rung."),
    optimizer: str = typer.Option("SGD", "--optimizer", help="Optimizer the lr0 values apply to."),
    device: str = typer.Option("cpu", "--device", help="cpu, or a CUDA index such as 0 (one GPU per trial)."),
    batch: int = typer.Option(-1, "--batch", "-b", help="Batch size; -1 = automatic (CPU: 16)."),
    seed: int = typer.Option(0, "--seed", help="Random seed of the first repeat."),
    as_json: bool = json_option(),
) -> None:
    """Search models x imgsz x lr0 on Ray Tune with ASHA early stopping (a local Ray, or RAY_ADDRESS);
    every trial is an MLflow child run; the best on the test split is registered as challenger."""
    from ..training.sweep import run_sweep
    from ..training.sweep_spec import SweepConfig, parse_list
    from .progress import RichPipelineEvents

    cfg = SweepConfig(data=data or "", models=parse_list(models, "--models"), imgsz=parse_list(imgsz, "--imgsz", int),
                      lr0=parse_list(lr0, "--lr0", float), epochs=epochs, name=name or "", cpus_per_trial=cpus_per_trial,
                      samples=samples, grace_period=grace_period, reduction_factor=reduction_factor,
                      optimizer=optimizer, device=device, batch=batch, seed=seed)
    # Ray forwards the workers' stdout to ours: keep stdout for the table (or the one JSON document)
    with contextlib.redirect_stdout(sys.stderr):
        res = run_sweep(cfg, RichPipelineEvents(err_console))
    if as_json:
        print_json(res)
        return
    # a pipe or a CI log is not 80 columns wide: keep every cell whole there
    out = console if console.is_terminal else Console(width=TABLE_WIDTH)
    out.print(sweep_table(res))
    out.print(f"best: {res.best} → {res.registered} ({', '.join(res.aliases)})", highlight=False)
