"""`visionloop label`: push captures to Label Studio, pull finished labels, export tasks offline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ValidationError
from .console import console, err_console

app = typer.Typer(help="Label captured images in Label Studio and bring the labels back.", no_args_is_help=True)

_URL = typer.Option(None, "--url", help="Label Studio URL (default: $LABEL_STUDIO_URL, labelstudio.url in "
                    "visionloop.yaml, or the one `label studio` started).")
_PROJECT = typer.Option(None, "--project", help="Project title (default: visionloop-DATASET).")
_TOKEN = typer.Option(None, "--token", help="API token (default: $LABEL_STUDIO_API_KEY, or the token file of "
                      "`label studio`). Never printed.", show_default=False)
_DATA = typer.Option(..., "--data", help="Dataset NAME (its latest version gives the classes and receives the labels).")
_CONFIG = typer.Option(None, "--config", help="visionloop.yaml to read (default ./visionloop.yaml when present).")


def _connect(url: str | None, project: str | None, token: str | None, data: str, config: Path | None):
    from ..datasets.catalog import Catalog
    from ..datasets.manifest import DatasetRef
    from ..feedback import labelstudio as lsmod
    from ..store import open_store

    ref = DatasetRef.parse(data)
    target = lsmod.resolve_target(url, project, ref.name, config)
    if not target.url:
        raise ValidationError(f"no Label Studio URL: pass --url, set {lsmod.URL_ENV} or start `visionloop label studio`")
    store = open_store()
    manifest = Catalog(store).load(ref.name)  # labels always extend the latest version
    return store, manifest, target, lsmod.LabelStudio(target.url, lsmod.resolve_token(token))


@app.command("push")
def push(
    url: Optional[str] = _URL, project: Optional[str] = _PROJECT, token: Optional[str] = _TOKEN,
    data: str = _DATA,
    model: Optional[str] = typer.Option(None, "--model", help="Only this model's captures (default: all)."),
    config: Optional[Path] = _CONFIG,
) -> None:
    """Upload unlabeled captures as tasks with the model's boxes (or top-1 class) as pre-annotations (no duplicates)."""
    from ..feedback import labelstudio as lsmod

    store, manifest, target, ls = _connect(url, project, token, data, config)
    with ls:
        res = lsmod.push(store, ls, target.project, manifest.classes, model, task=manifest.task)
    made = "created" if res.project_created else "found"
    console.print(f"project {res.project!r} (id {res.project_id}) {made}; pushed {res.pushed} task(s), "
                  f"{res.already_there} already there")


@app.command("pull")
def pull(
    url: Optional[str] = _URL, project: Optional[str] = _PROJECT, token: Optional[str] = _TOKEN,
    data: str = _DATA, config: Optional[Path] = _CONFIG,
) -> None:
    """Turn completed annotations into a new dataset version (parent: the current one)."""
    from ..feedback import labelstudio as lsmod

    store, manifest, target, ls = _connect(url, project, token, data, config)
    with ls:
        res = lsmod.pull(store, ls, target.project, manifest)
    if res.images == 0:
        console.print(f"no completed annotations in project {target.project!r}; {manifest.ref} unchanged")
    elif not res.created:
        console.print(f"{res.images} labeled image(s) add nothing new; {res.dataset} unchanged")
    else:
        console.print(f"created {res.dataset} (parent {manifest.ref}): {res.images} labeled image(s), "
                      f"{res.boxes} box(es); splits {res.split_counts}")
    if res.skipped:
        err_console.print(f"skipped {res.skipped} task(s) whose image is neither a capture nor inline")


@app.command("export")
def export(
    fmt: str = typer.Option("labelstudio-json", "--format", help="Only labelstudio-json."),
    out: Path = typer.Option(Path("labelstudio-tasks.json"), "--out", help="File to write."),
    model: Optional[str] = typer.Option(None, "--model", help="Only this model's captures (default: all)."),
) -> None:
    """Offline: write the unlabeled capture inbox as a Label Studio task file."""
    from ..feedback import labelstudio as lsmod
    from ..store import open_store

    if fmt != "labelstudio-json":
        raise ValidationError(f"--format {fmt!r}: only labelstudio-json is supported")
    n = lsmod.export_tasks(open_store(), out, model)
    console.print(f"wrote {n} task(s) to {out}")


@app.command("studio")
def studio(
    port: int = typer.Option(8080, "--port", help="Port on 127.0.0.1."),
    stop: bool = typer.Option(False, "--stop", help="Stop the Label Studio this command started."),
) -> None:
    """Start the project's own Label Studio (.ls-venv, installed when missing) in the background.

    Its data lives under VISIONLOOP_HOME/labelstudio; the first start makes the user, a password
    and an API token, kept in 0600 files there (printed: where, never what). `label push/pull`
    and `loop` then find the URL and the token with no flags.
    """
    from ..feedback import studio as st

    if stop:
        console.print("stopped Label Studio" if st.stop() else "no Label Studio started by visionloop is running")
        return
    with err_console.status(f"starting Label Studio on 127.0.0.1:{port} (the first start takes a minute)"):
        info = st.start(port, say=lambda line: err_console.print(line, highlight=False))
    for line in (f"Label Studio {'started' if info.started else 'already running'} at {info.url}",
                 f"  log in as {info.user}; password in {info.password_file}",
                 f"  API token in {info.token_file} (used by `label push/pull` and `loop` without flags)",
                 f"  log: {info.log}; stop it with `visionloop label studio --stop`"):
        console.print(line, markup=False, highlight=False, soft_wrap=True)  # paths whole, on one line
