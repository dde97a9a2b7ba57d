"""`visionloop data inbox`: what the server captured for labeling."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from .console import console, json_option, print_json


def inbox(model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this served model's captures."),
          as_json: bool = json_option()) -> None:
    """List captured images: id, model, version, reason, detections, created."""
    from ..feedback.inbox import list_captures
    from ..store import open_store

    records = list_captures(open_store(), model)
    if as_json:
        return print_json(records)
    if not records:
        console.print(f"inbox is empty{f' for {model}' if model else ''}", markup=False, highlight=False)
        return
    table = Table(title=f"capture inbox ({len(records)})")
    for col in ("id", "model", "version", "reason", "detections", "created"):
        table.add_column(col, justify="right" if col == "detections" else "left", overflow="fold")
    for r in records:
        table.add_row(r.id, r.model, r.version, r.reason, str(len(r.detections)), r.created_at)
    console.print(table)
