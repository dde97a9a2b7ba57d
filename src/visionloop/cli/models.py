"""`visionloop models` commands: list registered models, show a model or one version."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from pydantic import BaseModel, Field
from rich import box
from rich.table import Table

from .console import console, err_console, json_option, print_json

if TYPE_CHECKING:
    from ..registry import ModelCard, ModelVersion

app = typer.Typer(help="Registered models: versions, aliases, metrics.", no_args_is_help=True)

# Metric columns per task (tag key, column), shown for the tasks present: a detection-only
# listing looks as before, a classification model adds top-1/top-5.
_LIST_METRICS = {"detect": (("map50", "mAP50"), ("map50_95", "mAP50-95")),
                 "classify": (("top1", "top-1"), ("top5", "top-5"))}
_VERSION_METRICS = {"detect": (*_LIST_METRICS["detect"], ("precision", "P"), ("recall", "R")),
                    "classify": _LIST_METRICS["classify"]}


class ModelSummary(BaseModel):
    """One row of ``models list --json``."""

    name: str
    latest_version: str | None
    aliases: dict[str, str] = Field(description="alias -> version")
    updated_at: datetime | None
    champion_metrics: dict[str, float] = Field(description="The champion's test metrics (from its tags).")
    task: str | None = Field(default=None, description="The champion's task (detect, classify).")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _task(tags: dict[str, str]) -> str:
    from .. import registry

    return tags.get(registry.TAG_TASK) or "detect"  # versions from before the task tag were detectors


def _columns(table: dict[str, tuple[tuple[str, str], ...]], tasks: set[str]) -> list[tuple[str, str]]:
    return [col for task in ("detect", "classify") if task in tasks for col in table[task]]


@app.command("list")
def list_cmd(as_json: bool = json_option()) -> None:
    """Every registered model with its versions, aliases and the champion's test metrics."""
    from .. import registry

    rows = []
    for m in registry.list_models():
        champ = m.aliases.get(registry.CHAMPION)
        v = registry.get_version(m.name, champ) if champ else None
        rows.append(ModelSummary(name=m.name, latest_version=m.latest_version, aliases=m.aliases,
                                 updated_at=m.updated_at, champion_metrics=v.metrics if v else {},
                                 task=_task(v.tags) if v else None))
    if as_json:
        return print_json(rows)
    if not rows:
        console.print("no registered models yet (run `visionloop train`)")
        return
    cols = _columns(_LIST_METRICS, {r.task or "detect" for r in rows})
    table = Table("model", "latest", "aliases", *(f"champion {label}" for _, label in cols))
    for r in rows:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(r.aliases.items())) or "-"
        table.add_row(r.name, r.latest_version or "-", aliases, *(_fmt(r.champion_metrics.get(k)) for k, _ in cols))
    console.print(table)


@app.command("show")
def show(ref: str = typer.Argument(..., help="M (all versions), M/5, M@champion or models:/M/5."),
         as_json: bool = json_option()) -> None:
    """A model's versions, or one version's aliases, card (classes, dataset, evaluation) and tags."""
    from .. import registry

    r = registry.parse_ref(ref, files=False)
    if "@" not in ref and r.version is None:  # a bare name: every version
        versions = registry.list_versions(r.name)
        if as_json:
            return print_json(versions)
        return _versions_table(r.name, versions)
    v = registry.resolve_version(r)
    card = registry.get_card(v)
    if as_json:
        return print_json(registry.VersionDetail(**dict(v), card=card))
    _version_tables(v, card)


def _versions_table(name: str, versions: list[ModelVersion]) -> None:
    from .. import registry

    table = Table(title=f"model {name}", box=box.SIMPLE_HEAD, pad_edge=False)
    cols = _columns(_VERSION_METRICS, {_task(v.tags) for v in versions} or {"detect"})
    for col in ("version", "aliases", "dataset", *(label for _, label in cols), "created"):
        table.add_column(col, no_wrap=True)
    for v in versions:
        m = v.metrics
        table.add_row(v.version, ",".join(v.aliases) or "-", v.tags.get(registry.TAG_DATASET, "-"),
                      *(_fmt(m.get(k)) for k, _ in cols), v.created_at.strftime("%m-%d %H:%M"))
    console.print(table)


def _version_tables(v: ModelVersion, card: ModelCard) -> None:
    from .. import registry
    from ..evaluation import CLASS_SCORE

    console.print(f"[bold]{v.ref}[/bold]  aliases: {', '.join(v.aliases) or '-'}", highlight=False)
    console.print(f"task {card.task}; classes {', '.join(card.classes) or '-'}; imgsz {card.imgsz or '-'}; "
                  f"dataset {card.dataset or '-'}; {card.base_model or '-'}, {card.epochs or '-'} epochs",
                  markup=False, highlight=False, soft_wrap=True)
    ev = card.eval
    table = Table(f"metric ({ev.split} split, {ev.images} images)" if ev else "metric", "value")
    if ev is not None:
        for k, val in ev.headline().items():
            table.add_row(k, f"{val:.4f}")
        table.add_row("inference_ms", f"{ev.speed_ms.get('inference', 0.0):.3f}")
        for cls, score in ev.class_scores().items():
            table.add_row(f"{CLASS_SCORE[ev.task]} {cls}", f"{score:.4f}")
    else:  # no evaluation on the card: the tags' headline numbers
        for k, val in sorted(v.metrics.items()):
            table.add_row(k, f"{val:.4f}")
    console.print(table)
    if card.parity is not None:
        p = card.parity
        if card.task == "classify":
            console.print(f"parity: {p.images} images, max probability diff {p.max_conf_diff:.4f}", highlight=False)
        else:
            console.print(f"parity: {p.compared} boxes on {p.images} images, min IoU {p.min_iou:.4f}, "
                          f"max confidence diff {p.max_conf_diff:.4f}", highlight=False)
    tags = Table("tag", "value")
    for k, val in sorted(v.tags.items()):
        if not k.startswith(registry.METRIC_PREFIX):
            tags.add_row(k, val)
    tags.add_row("run_id", v.run_id or "-")
    console.print(tags)


@app.command("quantize")
def quantize(ref: str = typer.Argument(..., help="The fp32 version: M/5, M@champion."),
             calibration_images: int = typer.Option(64, "--calibration-images", min=1,
                                                    help="Training images to calibrate activation ranges on."),
             method: str = typer.Option("minmax", "--method", help="Calibration: minmax | percentile | entropy."),
             max_drop: float = typer.Option(None, "--max-drop", help="Largest allowed mAP50-95 (top-1) drop "
                                            "(default gate.max_quantization_drop, 0.01)."),
             config: Path = typer.Option(None, "--config", "-c", help="Config file with a 'gate:' section."),
             force: bool = typer.Option(False, "--force", help="Make another int8 version even if one exists."),
             as_json: bool = json_option()) -> None:
    """Static INT8 (QDQ) version of M/5, calibrated on its training images, evaluated on its test
    split the served way; registered as a sibling version (tag precision=int8, no alias) only when
    its accuracy drop is within the gate's limit."""
    quantize_and_report(ref, calibration_images=calibration_images, method=method, limit=max_drop, config=config,
                        force=force, as_json=as_json)


def quantize_and_report(ref: str, *, calibration_images: int = 64, method: str = "minmax", limit: float | None = None,
                        config: Path | None = None, force: bool = False, as_json: bool = False,
                        refusal_fails: bool = True) -> None:
    """Run the quantization with progress on stderr; a refusal is one line (an error unless
    ``refusal_fails`` is off: ``train --quantize`` has registered its fp32 version either way,
    and a cached training keeps the int8 version it has)."""
    from ..training.quantize import QuantizationRefused, int8_sibling, quantize_version

    if not refusal_fails and (existing := int8_sibling(ref)) is not None:
        err_console.print(f"int8: {ref} has its int8 version already, {existing.ref}", highlight=False)
        return
    try:
        report = quantize_version(ref, limit=limit, calibration_images=calibration_images, method=method,  # type: ignore[arg-type]
                                  config=config, force=force,
                                  on_progress=lambda m: err_console.print(m, highlight=False))
    except QuantizationRefused as exc:
        if refusal_fails:
            raise
        err_console.print(f"[yellow]{exc}[/yellow]", highlight=False)
        return
    if as_json:
        return print_json(report)
    console.print(f"registered {report.version} (precision int8, from {report.source}): {report.summary()}",
                  markup=False, highlight=False, soft_wrap=True)
