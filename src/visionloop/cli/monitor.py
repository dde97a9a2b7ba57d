"""`visionloop monitor`: drift of what a model's server saw, from the capture inbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from .console import console, json_option, print_json

if TYPE_CHECKING:
    from ..monitoring.drift import DriftReport


def monitor(
    model: str = typer.Option(..., "--model", help="Served model name (as in the capture inbox)."),
    since: str = typer.Option("24h", "--since", help="Current window: the last 30m, 24h, 7d…"),
    threshold: float = typer.Option(0.25, "--threshold", help="PSI above which drift is reported."),
    as_json: bool = json_option(),
) -> None:
    """Compare recent predictions with older ones; exit 3 when drift exceeds the threshold.

    Run the server with ``--capture all --capture-rate R`` to sample traffic for monitoring;
    a non-zero exit lets a scheduler trigger ``visionloop loop`` (retraining).
    """
    from ..errors import ValidationError
    from ..feedback.inbox import list_captures
    from ..monitoring.drift import drift_report, parse_since
    from ..store import open_store

    records = list_captures(open_store(), model)
    if not records:
        raise ValidationError(f"no captured predictions for model {model!r}: serve it with --capture all")
    report = drift_report(model, records, parse_since(since), threshold)
    if as_json:
        print_json(report)  # stdout holds this document only; the exit code still says drift
        if report.drifted:
            raise typer.Exit(3)
        return
    _print_table(report)
    if report.drifted:
        console.print("[bold red]drift detected[/]: retrain with `visionloop loop`")
        raise typer.Exit(3)
    console.print("no drift")


def _print_table(report: DriftReport) -> None:
    from rich.table import Table

    t = Table(title=f"drift for {report.model} (current window since {report.since})")
    for col in ("window", "images", "detections", "mean confidence", "empty fraction"):
        t.add_column(col)
    for label, s in (("reference", report.reference), ("current", report.current)):
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        t.add_row(label, str(s.images), str(s.detections), fmt(s.mean_confidence), fmt(s.empty_fraction))
    console.print(t)
    console.print(f"PSI confidence {report.psi_confidence:.3f}, detections/image "
                  f"{report.psi_detections_per_image:.3f} (threshold {report.threshold})")
