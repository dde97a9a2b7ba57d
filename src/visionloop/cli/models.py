"""`visionloop models` commands: list registered models, show a model or one version."""

from __future__ import annotations

import json

import typer
from rich import box
from rich.table import Table

from .console import console

app = typer.Typer(help="Registered models: versions, aliases, metrics.", no_args_is_help=True)

_METRICS = ("map50", "map50_95", "precision", "recall")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


@app.command("list")
def list_cmd() -> None:
    """Every registered model with its versions, aliases and the champion's test metrics."""
    from .. import registry

    models = registry.list_models()
    if not models:
        console.print("no registered models yet (run `visionloop train`)")
        return
    table = Table("model", "latest", "aliases", "champion mAP50", "champion mAP50-95")
    for m in models:
        champ = m.aliases.get(registry.CHAMPION)
        metrics = registry.get_version(m.name, champ).metrics if champ else {}
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items())) or "-"
        table.add_row(m.name, m.latest_version or "-", aliases, _fmt(metrics.get("map50")),
                      _fmt(metrics.get("map50_95")))
    console.print(table)


@app.command("show")
def show(ref: str = typer.Argument(..., help="M (all versions), M/5, M@champion or models:/M/5.")) -> None:
    """A model's versions, or one version's aliases, tags and metrics."""
    from .. import registry

    body = ref.strip().removeprefix("models:/")
    if "/" not in body and "@" not in body:
        versions = registry.list_versions(body)
        table = Table(title=f"model {body}", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("version", "aliases", "dataset", "mAP50", "mAP50-95", "P", "R", "created"):
            table.add_column(col, no_wrap=True)
        for v in versions:
            m = v.metrics
            table.add_row(v.version, ",".join(v.aliases) or "-", v.tags.get(registry.TAG_DATASET, "-"),
                          *(_fmt(m.get(k)) for k in _METRICS), v.created_at.strftime("%m-%d %H:%M"))
        console.print(table)
        return
    v = registry.resolve_version(ref)
    console.print(f"[bold]{v.ref}[/bold]  aliases: {', '.join(v.aliases) or '-'}", highlight=False)
    table = Table("metric (test split)", "value")
    for k, val in sorted(v.metrics.items()):
        table.add_row(k, f"{val:.4f}")
    per_class = v.tags.get("eval.per_class_ap50_95")
    if per_class:
        for name, ap in json.loads(per_class).items():
            table.add_row(f"AP50-95 {name}", f"{ap:.4f}")
    console.print(table)
    tags = Table("tag", "value")
    hidden = {"eval.per_class_ap50_95"}
    for k, val in sorted(v.tags.items()):
        if not k.startswith(registry.METRIC_PREFIX) and k not in hidden:
            tags.add_row(k, val)
    tags.add_row("run_id", v.run_id or "-")
    console.print(tags)
