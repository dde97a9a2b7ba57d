"""`visionloop train`: the training pipeline (dataset → train → ONNX → evaluate → register)."""

from __future__ import annotations

from pathlib import Path

import typer

from .console import console, err_console


def train(
    data: str = typer.Option(None, "--data", "-d", help="Dataset version N@V (or N for latest), or a zip path/URL to import."),
    model: str = typer.Option(None, "--model", "-m", help="Architecture .yaml (from scratch; default yolo11n.yaml, or "
                              "yolo11n-cls.yaml for a classify dataset) or a local .pt (fine-tunes; new classes get a new head)."),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Training epochs (default 50)."),
    batch: int = typer.Option(None, "--batch", "-b", help="Batch size; -1 = automatic (CPU: 16)."),
    imgsz: int = typer.Option(None, "--imgsz", help="Training/inference image size, a multiple of 32 (default 640)."),
    device: str = typer.Option(None, "--device", help="cpu, a CUDA index such as 0, or auto (default)."),
    name: str = typer.Option(None, "--name", "-n", help="Registered model name (default: the dataset name)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default 0)."),
    patience: int = typer.Option(None, "--patience", help="Early-stopping patience in epochs (default 100)."),
    freeze: int = typer.Option(None, "--freeze", help="Freeze the first N layers of a .pt while fine-tuning."),
    workers: int = typer.Option(None, "--workers", help="Dataloader worker processes (default 0)."),
    threads: int = typer.Option(None, "--threads", help="CPU threads for torch; 0 = automatic (the idle cores)."),
    max_width: int = typer.Option(None, "--max-width", help="Downscale wider images when importing a zip."),
    engine: str = typer.Option(None, "--engine", help="local (in this process) or ray (a Ray task: the cluster in "
                               "RAY_ADDRESS, else a local Ray)."),
    cpus: int = typer.Option(None, "--cpus", help="--engine ray: CPUs the training task asks for (default 1)."),
    config: Path = typer.Option(None, "--config", "-c", help="Config file with a 'train:' section (default ./visionloop.yaml)."),
    force: bool = typer.Option(None, "--force/--no-force", help="Redo every step even when cached."),
    verbose: bool = typer.Option(None, "--verbose/--quiet", help="Also show the trainer's own log."),
    quantize: str = typer.Option("none", "--quantize", help="none | int8: also register a static INT8 sibling "
                                 "version when it keeps its accuracy (gate.max_quantization_drop)."),
) -> None:
    """Train a model on a dataset version, export ONNX, evaluate on the test split, register it."""
    from ..errors import ValidationError
    from ..training.config import load_config
    from ..training.pipeline import run_pipeline
    from .progress import RichPipelineEvents

    if quantize not in ("none", "int8"):
        raise ValidationError(f"--quantize must be none or int8, not {quantize!r}")
    cfg = load_config(
        config, data=data, model=model, epochs=epochs, batch=batch, imgsz=imgsz, device=device, name=name,
        seed=seed, patience=patience, freeze=freeze, workers=workers, threads=threads, max_width=max_width,
        engine=engine, cpus=cpus, force=force, verbose=verbose,
    )
    res = run_pipeline(cfg, RichPipelineEvents(err_console))
    console.print()
    console.print(res.summary_md, markup=False, highlight=False, soft_wrap=True)
    if res.cached:
        err_console.print(f"cached: {res.model_name}/{res.version} already holds this training", highlight=False)
    if quantize == "int8":
        from .models import quantize_and_report

        quantize_and_report(f"{res.model_name}/{res.version}", config=config, refusal_fails=False)
