"""`visionloop loop`: one turn of capture → label → new version → train → compare → promote,
or (``--watch``) turns for as long as it runs."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .console import console, err_console

_MARK = {"started": "[cyan]▸[/]", "done": "[green]✓[/]", "skipped": "[yellow]–[/]", "failed": "[red]✗[/]"}
_EVENT = {"watching": "[cyan]◎[/]", "trigger": "[cyan]▶[/]", "done": "[green]●[/]", "failed": "[red]●[/]",
          "check_failed": "[yellow]![/]", "stopped": "[cyan]■[/]"}


def _events(console):
    """The training's progress; off a terminal (an unattended loop's log), also a line per epoch,
    which the epoch bar only draws when training ends. Those lines go to the stream stderr is
    now: the training redirects ``sys.stderr`` (where ``console`` writes) to its own log."""
    import sys

    from rich.console import Console

    from .progress import BAR_METRICS, RichPipelineEvents

    log = None if console.is_terminal else Console(file=sys.stderr, highlight=False, markup=False, soft_wrap=True)

    class LogFriendlyEvents(RichPipelineEvents):
        def epoch(self, em) -> None:
            super().epoch(em)
            if log is not None:
                shown = " ".join(f"{k} {em.metrics[v]:.3f}" for k, v in BAR_METRICS.items() if v in em.metrics)
                log.print(f"  epoch {em.epoch}/{em.epochs} {shown}")

    return LogFriendlyEvents(console)


def loop(
    data: str = typer.Option(..., "--data", help="Dataset NAME (its latest version receives the new labels)."),
    model: str = typer.Option(..., "--model", help="Registered model name."),
    url: Optional[str] = typer.Option(None, "--url", help="Label Studio URL (default: $LABEL_STUDIO_URL, "
                                      "labelstudio.url in visionloop.yaml, or the one `label studio` started); "
                                      "none: use the labeled inbox."),
    project: Optional[str] = typer.Option(None, "--project", help="Label Studio project (default: visionloop-DATASET)."),
    token: Optional[str] = typer.Option(None, "--token", help="Label Studio token (default: $LABEL_STUDIO_API_KEY "
                                        "or the token file of `label studio`).", show_default=False),
    capture_model: Optional[str] = typer.Option(None, "--inbox", help="Read this model's capture inbox (default: --model)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Override the champion's epochs."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Override the champion's image size."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Override the champion's batch size."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Override the champion's base model (.yaml or .pt)."),
    device: Optional[str] = typer.Option(None, "--device", help="Override the champion's device."),
    retrain: bool = typer.Option(False, "--retrain", help="Train even when the champion has seen the latest data."),
    report: Path = typer.Option(Path("report.md"), "--report", help="Where to write the report."),
    config: Optional[Path] = typer.Option(None, "--config", help="visionloop.yaml (train:, gate:, labelstudio:)."),
    watch: bool = typer.Option(False, "--watch", help="Run iterations unattended until stopped (SIGTERM / Ctrl-C)."),
    min_labels: int = typer.Option(10, "--min-labels", min=0, help="--watch: new labels that start an iteration (0: never)."),
    every: Optional[str] = typer.Option(None, "--every", help="--watch: also iterate on a schedule, e.g. 6h (s/m/h/d)."),
    poll: str = typer.Option("30s", "--poll", help="--watch: how often to check the triggers."),
    drift: bool = typer.Option(True, "--drift/--no-drift", help="--watch: iterate when `monitor` reports drift."),
    drift_window: str = typer.Option("24h", "--drift-window", help="--watch: the window `monitor` checks."),
    backoff: str = typer.Option("60s", "--backoff", help="--watch: first wait after a failed iteration (doubles)."),
    max_iterations: Optional[int] = typer.Option(None, "--max-iterations", min=1, help="--watch: stop after N."),
) -> None:
    """One iteration of the loop (each step says what it did), or --watch: iterations unattended."""
    from rich.markup import escape

    from ..feedback.labelstudio import resolve_target
    from ..loop import LoopOptions, Step, WatchEvent, Watcher, WatchOptions, model_lock, parse_duration, \
        run_iteration, stop_on_signals
    from ..promotion import Gate
    overrides = {k: v for k, v in {"epochs": epochs, "imgsz": imgsz, "batch": batch, "model": arch,
                                   "device": device}.items() if v is not None}
    opts = LoopOptions(data=data, model=model, labelstudio=resolve_target(url, project, data, config), token=token,
                       capture_model=capture_model, train_overrides=overrides, config=config,
                       gate=Gate.load(config), report=report, retrain=retrain)

    def say(s: Step) -> None:  # one unwrapped line per step: readable in CI logs and greppable
        err_console.print(f"{_MARK[s.status]} {s.name}: {escape(s.detail)}", highlight=False, soft_wrap=True)

    def hear(e: WatchEvent) -> None:
        n = f"#{e.iteration} " if e.iteration else ""
        err_console.print(f"{_EVENT[e.kind]} watch {e.kind} {n}{escape(e.detail)}", highlight=False, soft_wrap=True)

    events = _events(err_console)
    if not watch:
        with model_lock(model), stop_on_signals():
            res = run_iteration(opts, say, events)
        console.print(f"dataset {res.dataset}; champion {res.champion_before or '-'} → {res.champion_after or '-'}"
                      + (f"; report {res.report}" if res.report else ""))
        return
    wopts = WatchOptions(min_labels=min_labels, every=parse_duration(every, "--every") if every else None,
                         poll=parse_duration(poll, "--poll"), drift=drift,
                         drift_window=parse_duration(drift_window, "--drift-window"),
                         backoff=parse_duration(backoff, "--backoff"), max_iterations=max_iterations)
    watcher = Watcher(opts, wopts, say=say, on_event=hear, training=events)
    with model_lock(model), stop_on_signals(watcher):
        out = watcher.run()
    console.print(f"{len(out.outcomes)} iteration(s): {out.count('promoted')} promoted, {out.count('refused')} refused, "
                  f"{out.count('no_change')} without change, {out.count('failed')} failed; {out.stopped}")
