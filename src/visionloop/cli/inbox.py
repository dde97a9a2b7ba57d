"""`visionloop data inbox`: what the server captured for labeling, and where each capture is now."""

from __future__ import annotations

from typing import Optional

import typer
from pydantic import BaseModel
from rich.table import Table

from ..errors import ValidationError
from .console import console, json_option, print_json


class InboxCounts(BaseModel):
    model: str | None
    counts: dict[str, int]  # every state, zeros included
    total: int  # = sum(counts): every capture ever written


def inbox(model: Optional[str] = typer.Option(None, "--model", "-m", help="Only this served model's captures."),
          state: Optional[list[str]] = typer.Option(None, "--state", help="Only captures in this state (repeatable)."),
          archived: bool = typer.Option(False, "--all", help="Also list archived captures (in_dataset, discarded)."),
          counts_only: bool = typer.Option(False, "--counts", help="Only the counts per state."),
          as_json: bool = json_option()) -> None:
    """Counts per state (pending, in_labeling, labeled, in_dataset, discarded; they add up to every
    capture) and the captures still in the inbox. --json: the captures as a list (--counts: the counts)."""
    from ..feedback.inbox import ARCHIVED, STATES, count_by_state, list_captures
    from ..store import open_store

    unknown = sorted(set(state or ()) - set(STATES))
    if unknown:
        raise ValidationError(f"--state {', '.join(unknown)}: states are {', '.join(STATES)}")
    store = open_store()
    wanted = set(state) if state else None
    archived = archived or bool(wanted and wanted & set(ARCHIVED))  # asking for an archived state reads it
    if as_json and not counts_only:
        return print_json(list_captures(store, model, states=wanted, archived=archived))
    counts = count_by_state(store, model)
    doc = InboxCounts(model=model, counts=counts, total=sum(counts.values()))
    if as_json:
        return print_json(doc)
    console.print(_counts_table(doc))
    if counts_only:
        return
    records = list_captures(store, model, states=wanted, archived=archived)
    if not records:
        console.print(f"no captures to list{f' for {model}' if model else ''}", markup=False, highlight=False)
        return
    table = Table(title=f"captures ({len(records)})")
    for col in ("id", "model", "version", "reason", "state", "dataset", "detections", "created"):
        table.add_column(col, justify="right" if col == "detections" else "left", overflow="fold")
    for r in records:
        table.add_row(r.id, r.model, r.version, r.reason, r.state, r.dataset or "", str(len(r.detections)),
                      r.created_at)
    console.print(table)


def _counts_table(doc: InboxCounts) -> Table:
    table = Table(title=f"capture inbox{f' of {doc.model}' if doc.model else ''}: {doc.total} captured")
    for col in (*doc.counts, "total"):
        table.add_column(col, justify="right")
    table.add_row(*(str(n) for n in doc.counts.values()), str(doc.total))
    return table
