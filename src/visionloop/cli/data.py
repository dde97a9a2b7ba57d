"""`visionloop data` commands: import, synth, list, show, diff, export.

Heavy lifting lives in ``visionloop.datasets``; this module only parses options, shows progress
(stderr) and prints results (stdout).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.table import Table

from .console import console, err_console, json_option, print_json

if TYPE_CHECKING:
    from ..datasets.ingest import ImportOptions, ImportResult, SourceDataset

app = typer.Typer(help="Versioned datasets: import, generate, inspect, compare, export.", no_args_is_help=True)

MAX_WARNINGS = 20  # beyond this the summary table says how many of each kind


def _catalog():
    from ..datasets.catalog import Catalog
    from ..store import open_store

    return Catalog(open_store())


@contextmanager
def _progress(label: str):
    """A rich progress bar on stderr; yields the callback the ingest loop calls per item."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=not err_console.is_terminal) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _run_import(source: SourceDataset, name: str, opts: ImportOptions) -> ImportResult:
    from ..datasets.ingest import ingest
    from ..store import open_store

    store = open_store()
    with _progress(f"importing {name}") as update:
        result = ingest(store, source, name, opts, progress=update)
    _print_result(result)
    return result


def _print_result(result: ImportResult) -> None:
    from ..datasets.validate import ProblemKind

    report, m = result.report, result.commit.manifest
    for p in report.problems[:MAX_WARNINGS]:
        # skipped tasks and empty folders drop no image
        dropped = "" if p.kind in (ProblemKind.UNLABELED, ProblemKind.EMPTY_CLASS_FOLDER) else " (dropped)"
        err_console.print(f"warning: {p}{dropped}", markup=False, highlight=False, soft_wrap=True)
    if len(report.problems) > MAX_WARNINGS:
        err_console.print(f"warning: ... and {len(report.problems) - MAX_WARNINGS} more problems (counts below)")
    table = Table(title="validation summary", show_header=True)
    table.add_column("kind")
    table.add_column("count", justify="right")
    for kind, count in report.counts().items():
        table.add_row(kind, str(count))
    console.print(table)
    if result.created:
        sc = m.split_counts()
        console.print(f"created {m.ref}: {len(m.images)} images (train {sc['train']} / val {sc['val']} / "
                      f"test {sc['test']}), classes: {', '.join(m.classes)}", markup=False, highlight=False, soft_wrap=True)
    else:
        console.print(f"no new version: content equals {m.ref}", markup=False, highlight=False, soft_wrap=True)


@app.command("import")
def import_(
    src: str = typer.Argument(..., metavar="PATH|URL", help=".zip (local or s3://), data.yaml, COCO or Label Studio .json, "
                              "a path,label .csv, class folders (train/<class>/ or <class>/), or a folder holding one."),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name."),
    max_width: Optional[int] = typer.Option(None, "--max-width", help="Downscale images wider than this (aspect kept)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the hash split (default 0, or the dataset's)."),
    resplit: bool = typer.Option(False, "--resplit", help="Ignore the source's own splits; use the 70/15/15 hash split."),
    strict: bool = typer.Option(False, "--strict", help="Refuse the whole import on any problem (nothing is written)."),
    add: bool = typer.Option(False, "--add", help="New version = latest version plus these images."),
    images: Optional[Path] = typer.Option(None, "--images", help="Image folder for a COCO / Label Studio JSON."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Classification: the class names (comma-separated); "
                                          "other labels are reported as unknown classes."),
) -> None:
    """Import labeled images as a new dataset version (no new version when the content is unchanged)."""
    from ..datasets.formats import open_source
    from ..datasets.ingest import ImportOptions

    names = [c.strip() for c in classes.split(",") if c.strip()] if classes else None
    source = open_source(src, images, names)
    if resplit and _catalog().versions(name):
        err_console.print(f"note: {name} exists: --resplit only splits new images; existing images keep their split",
                          markup=False, soft_wrap=True)
    _run_import(source, name, ImportOptions(max_width=max_width, seed=seed, resplit=resplit, strict=strict, add=add))


@app.command("synth")
def synth(
    name: str = typer.Option(..., "--name", "-n", help="Dataset name."),
    images: int = typer.Option(60, "--images", min=1, help="Number of images."),
    seed: int = typer.Option(0, "--seed", help="Generator and split seed."),
    size: int = typer.Option(320, "--size", min=32, help="Image side in pixels."),
    task: str = typer.Option("detect", "--task", help="detect (boxes) or classify (one shape per image, its class)."),
) -> None:
    """Generate shapes on noisy backgrounds with exact boxes or classes (learnable in a few CPU epochs)."""
    from ..datasets.formats import synthetic_source
    from ..datasets.ingest import ImportOptions
    from ..errors import ValidationError

    if task not in ("detect", "classify"):
        raise ValidationError(f"unknown task {task!r}; choose detect or classify")
    _run_import(synthetic_source(images, seed, size, task), name, ImportOptions(seed=seed))


@app.command("list")
def list_(as_json: bool = json_option()) -> None:
    """Datasets with their versions."""
    from ..datasets.summary import summaries

    rows = summaries(_catalog())
    if as_json:
        return print_json(rows)
    if not rows:
        console.print("no datasets yet: visionloop data import PATH --name NAME")
        return
    table = Table(show_header=True)
    for col in ("name", "versions", "latest", "images", "train/val/test", "classes"):
        table.add_column(col)
    for r in rows:
        sc = r.splits
        table.add_row(r.name, ", ".join(map(str, r.versions)), r.latest, str(r.images),
                      f"{sc['train']}/{sc['val']}/{sc['test']}", ", ".join(r.classes))
    console.print(table)


@app.command("show")
def show(ref: str = typer.Argument(..., metavar="NAME@VERSION"), as_json: bool = json_option()) -> None:
    """Classes, parent, preprocessing, and image and box counts per split and class."""
    from ..datasets.summary import version_stats

    st = version_stats(_catalog().load(ref))
    if as_json:
        return print_json(st)
    console.print(f"[bold]{st.ref}[/bold]  parent: {st.parent if st.parent is not None else '-'}  "
                  f"created: {st.created_at}")
    console.print(f"source: {st.source}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"task: {st.task}  classes: {', '.join(st.classes)}", markup=False)
    console.print(f"preprocessing: max_width={st.preprocessing.max_width}  split: {st.split_policy.mode} "
                  f"(seed {st.split_policy.seed})  content: {st.content_hash[:12]}", markup=False)
    table = Table(show_header=True)
    classify = st.task == "classify"
    # classify: images per class; detect: boxes per class
    cols = ("split", "images", *st.classes) if classify else ("split", "images", "background", *st.classes, "boxes")
    for col in cols:
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, row in (*st.splits.items(), ("total", st.total)):
        if classify:
            table.add_row(name, str(row.images), *(str(row.per_class[c]) for c in st.classes))
        else:
            table.add_row(name, str(row.images), str(row.background), *(str(row.boxes[c]) for c in st.classes),
                          str(row.box_total))
    console.print(table)


@app.command("diff")
def diff(
    a: str = typer.Argument(..., metavar="NAME@A"),
    b: str = typer.Argument(..., metavar="NAME@B"),
    limit: int = typer.Option(10, "--limit", help="Images listed per section (not with --json: it has all)."),
    as_json: bool = json_option(),
) -> None:
    """Added/removed/relabeled images, split changes and class changes between two versions."""
    from ..datasets.diff import diff_manifests

    cat = _catalog()
    d = diff_manifests(cat.load(a), cat.load(b))
    if as_json:
        return print_json(d)
    console.print(f"{d.old} → {d.new}", markup=False)
    if d.unchanged:
        console.print("no differences")
        return

    def section(title: str, names: list[str]) -> None:
        console.print(f"{title}: {len(names)}", markup=False)
        for n in names[:limit]:
            console.print(f"  {n}", markup=False, highlight=False, soft_wrap=True)
        if len(names) > limit:
            console.print(f"  ... {len(names) - limit} more")

    section("added images", [f"+ {i.source or i.sha256[:12]} ({i.split})" for i in d.added])
    section("removed images", [f"- {i.source or i.sha256[:12]} ({i.split})" for i in d.removed])
    if d.class_changes or d.task == "classify":
        section("class changes", [f"{c.source or c.sha256[:12]}: {c.old} → {c.new}" for c in d.class_changes])
    else:
        section("relabeled images", [s[:12] for s in d.relabeled])
    section("split changes", [f"{c.sha256[:12]}: {c.old} → {c.new}" for c in d.split_changed])
    console.print(f"classes added: {', '.join(d.classes_added) or '-'}; removed: {', '.join(d.classes_removed) or '-'}"
                  + ("; order changed" if d.classes_reordered else ""), markup=False)


@app.command("export")
def export(
    ref: str = typer.Argument(..., metavar="NAME@VERSION"),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="yolo (classes.txt, images/, labels/), coco, "
                                      "labelstudio, or folders (classify: {split}/{class}/); default yolo, "
                                      "folders for a classification version."),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder, or a path ending in .zip."),
) -> None:
    """Write a version out for other tools (a folder or a .zip; never over an existing one)."""
    from ..datasets.formats import default_export_format, export_version

    cat = _catalog()
    m = cat.load(ref)
    fmt = fmt or default_export_format(m)
    with err_console.status(f"exporting {m.ref} as {fmt}"):
        path = export_version(cat.store, m, fmt, out)
    console.print(f"exported {m.ref} ({len(m.images)} images) as {fmt} to {path}", markup=False, highlight=False, soft_wrap=True)
