"""`visionloop monitor`: drift of what one model version saw, from the server's prediction log."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from .console import console, json_option, print_json

if TYPE_CHECKING:
    from ..monitoring.drift import MonitorReport

REFERENCES = ("first-window", "test")


def monitor(
    model: str = typer.Option(..., "--model", help="Served model name (as the server logs it)."),
    version: str = typer.Option(None, "--version", help="Model version; default: the one that served last."),
    since: str = typer.Option("24h", "--since", help="Current window: the last 30m, 24h, 7d…"),
    reference: str = typer.Option("first-window", "--reference",
                                  help="first-window: the version's first window of the same length; "
                                       "test: its predictions on its dataset's test split."),
    threshold: float = typer.Option(0.25, "--threshold", help="PSI above which a feature has drifted."),
    min_records: int = typer.Option(30, "--min-records", help="Fewer records in a window: insufficient data."),
    as_json: bool = json_option(),
) -> None:
    """Compare a recent window of predictions with a reference, per model version.

    Exit codes: 0 no drift, 3 drift, 4 insufficient data (an empty or tiny window). The server
    logs every prediction; a non-zero exit lets a scheduler (or ``loop --watch``) retrain.
    """
    from ..errors import ValidationError
    from ..monitoring.drift import monitor as run_monitor
    from ..monitoring.drift import parse_since
    from ..store import open_store

    if reference not in REFERENCES:
        raise ValidationError(f"bad --reference {reference!r}: use {' or '.join(REFERENCES)}")
    report = run_monitor(open_store(), model, version=version, since=parse_since(since),
                         reference=reference, threshold=threshold, min_records=min_records)  # type: ignore[arg-type]
    if as_json:
        print_json(report)  # stdout holds this document only; the exit code still says the verdict
    else:
        _print(report)
    if report.exit_code:
        raise typer.Exit(report.exit_code)


def _print(report: MonitorReport) -> None:
    from rich.table import Table

    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    t = Table(title=f"{report.model} version {report.version or '-'}: reference {report.reference_kind}")
    for col in ("window", "records", "detections", "mean confidence", "mean brightness", "from", "to"):
        t.add_column(col)
    for label, s in (("reference", report.reference), ("current", report.current)):
        t.add_row(label, str(s.records), str(s.detections), fmt(s.mean_confidence), fmt(s.mean_brightness),
                  s.start or "-", s.end or "-")
    console.print(t)
    if report.features:
        f = Table(title=f"features (PSI threshold {report.threshold})")
        for col in ("feature", "PSI", "KS D", "KS p", "drift"):
            f.add_column(col)
        for feat in report.features:
            f.add_row(feat.name, fmt(feat.psi), fmt(feat.ks), fmt(feat.ks_pvalue), "[bold red]yes[/]" if feat.drifted else "no")
        console.print(f)
    style = {"ok": "green", "drift": "bold red", "insufficient_data": "yellow"}[report.verdict]
    console.print(f"[{style}]{report.verdict.replace('_', ' ')}[/]: {report.reason}")
    if report.verdict == "drift":
        console.print("retrain with `visionloop loop`")
