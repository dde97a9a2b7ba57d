"""`visionloop loop`: one turn of capture → label → new version → train → compare → promote."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .console import console, err_console

_MARK = {"done": "[green]✓[/]", "skipped": "[yellow]–[/]", "failed": "[red]✗[/]"}


def loop(
    data: str = typer.Option(..., "--data", help="Dataset NAME (its latest version receives the new labels)."),
    model: str = typer.Option(..., "--model", help="Registered model name."),
    url: Optional[str] = typer.Option(None, "--url", help="Label Studio URL (default: $LABEL_STUDIO_URL or "
                                      "labelstudio.url in visionloop.yaml); none: use the labeled inbox."),
    project: Optional[str] = typer.Option(None, "--project", help="Label Studio project (default: visionloop-DATASET)."),
    token: Optional[str] = typer.Option(None, "--token", help="Label Studio token (default: $LABEL_STUDIO_API_KEY).",
                                        show_default=False),
    capture_model: Optional[str] = typer.Option(None, "--inbox", help="Read this model's capture inbox (default: --model)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the champion's epochs."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Override the champion's image size."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Override the champion's batch size."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Override the champion's base model (.yaml or .pt)."),
    device: Optional[str] = typer.Option(None, "--device", help="Override the champion's device."),
    retrain: bool = typer.Option(False, "--retrain", help="Train even when the champion has seen the latest data."),
    report: Path = typer.Option(Path("report.md"), "--report", help="Where to write the report."),
    config: Optional[Path] = typer.Option(None, "--config", help="visionloop.yaml (train:, gate:, labelstudio:)."),
) -> None:
    """One iteration of the loop; each step says what it did."""
    from rich.markup import escape

    from ..feedback.labelstudio import resolve_target
    from ..loop import LoopOptions, Step, run_iteration
    from ..promotion import Gate
    from .progress import RichPipelineEvents

    overrides = {k: v for k, v in {"epochs": epochs, "imgsz": imgsz, "batch": batch, "model": arch,
                                   "device": device}.items() if v is not None}
    opts = LoopOptions(data=data, model=model, labelstudio=resolve_target(url, project, data, config), token=token,
                       capture_model=capture_model, train_overrides=overrides, config=config,
                       gate=Gate.load(config), report=report, retrain=retrain)

    def say(s: Step) -> None:  # one unwrapped line per step: readable in CI logs and greppable
        err_console.print(f"{_MARK[s.status]} {s.name}: {escape(s.detail)}", highlight=False, soft_wrap=True)

    res = run_iteration(opts, say, RichPipelineEvents(err_console))
    console.print(f"dataset {res.dataset}; champion {res.champion_before or '-'} → {res.champion_after or '-'}"
                  + (f"; report {res.report}" if res.report else ""))
