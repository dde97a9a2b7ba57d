"""Shared rich consoles: results to stdout, progress and errors to stderr; ``--json`` output."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import typer
from pydantic import BaseModel
from rich.console import Console

console = Console()
# Bound to the stream now: training redirects sys.stderr into its log file, and the epoch
# bar must still reach the terminal.
err_console = Console(file=sys.stderr)

JSON_HELP = "Print one JSON document on stdout instead of tables (for scripts)."


def json_option() -> bool:
    """The ``--json`` flag every read command takes: ``as_json: bool = json_option()``."""
    return typer.Option(False, "--json", help=JSON_HELP)


def print_json(doc: BaseModel | Sequence[BaseModel]) -> None:
    """Exactly one JSON document on stdout: a model, or a list of models (an array).

    Written past rich: no markup, highlighting or wrapping may touch it.
    """
    data = doc.model_dump(mode="json") if isinstance(doc, BaseModel) else [m.model_dump(mode="json") for m in doc]
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()
