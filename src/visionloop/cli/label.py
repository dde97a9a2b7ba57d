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
    strategy: Optional[str] = typer.Option(None, "--strategy", help="Push only --budget captures chosen by: "
                                           "uncertainty | diversity | uncertainty+diversity | class-balanced | "
                                           "disagreement (MODEL@champion vs MODEL@challenger) | random. Default, "
                                           "from bench/active_learning.py: disagreement when the two differ, "
                                           "else random."),
    budget: Optional[int] = typer.Option(None, "--budget", min=1, help="Captures in this round (default "
                                         "strategy when --strategy is not given)."),
    by: str = typer.Option("least_confidence", "--by", help="The score ranking uses: least_confidence | margin | "
                           "entropy | close_to_threshold."),
    control: float = typer.Option(0.1, "--control", min=0.0, max=1.0, help="Fraction of the budget picked at "
                                  "random as a control slice (recorded)."),
    class_quota: Optional[int] = typer.Option(None, "--class-quota", min=1, help="At most N picks per predicted class."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random picks."),
) -> None:
    """Upload unlabeled captures as tasks with the model's boxes (or top-1 class) as pre-annotations (no duplicates).

    With --budget (and --strategy) only the chosen captures go, with their uncertainty scores."""
    from ..feedback import labelstudio as lsmod

    store, manifest, target, ls = _connect(url, project, token, data, config)
    plan = None
    if budget is not None or strategy is not None:
        plan = _plan(store, model, strategy, budget, by, control, class_quota, seed, len(manifest.classes))
    with ls:
        res = lsmod.push(store, ls, target.project, manifest.classes, model, task=manifest.task, plan=plan)
    made = "created" if res.project_created else "found"
    console.print(f"project {res.project!r} (id {res.project_id}) {made}; pushed {res.pushed} task(s), "
                  f"{res.already_there} already there")


def _plan(store, model: str | None, strategy: str | None, budget: int | None, by: str, control: float,
          class_quota: int | None, seed: int, n_classes: int):
    """Choose the round, print what was picked and why, and record it in the store."""
    from ..feedback import labelstudio as lsmod
    from ..feedback.rounds import plan_round, record_round
    from ..feedback.selection import STRATEGIES, default_strategy

    strategy = strategy or default_strategy(_two_models(model))
    if strategy not in STRATEGIES:  # before reading any image
        raise ValidationError(f"--strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if budget is None:
        raise ValidationError("--strategy needs --budget N (how many captures this round sends)")
    records = [r for r in lsmod.unlabeled_captures(store, model) if r.state == "pending"]  # not pushed yet
    disagreement = _disagreements(store, records, model) if strategy == "disagreement" else None
    quotas = dict.fromkeys(range(n_classes), class_quota) if class_quota else None
    plan = plan_round(store, records, strategy, budget, model=model, by=by, control_fraction=control, seed=seed,
                      quotas=quotas, disagreement=disagreement)
    key = record_round(store, plan)
    console.print(f"round {plan.id}: {len(plan.picked)} of {plan.pool} waiting capture(s) by {plan.strategy} "
                  f"(ranked by {plan.by}), {sum(p.control for p in plan.picked)} in the random control slice, "
                  f"{len(plan.merged)} near-duplicate(s) merged; recorded in {key}")
    for p in plan.picked:
        s = p.scores
        extra = f" disagreement {p.disagreement:.3f}" if p.disagreement is not None else ""
        console.print(f"  {p.id[:12]} {'control' if p.control else 'picked '} least_conf {s.least_confidence:.3f} "
                      f"margin {s.margin:.3f} entropy {s.entropy:.3f} near_thr {s.close_to_threshold:.3f} "
                      f"boxes {s.detection_count}{extra}")
    return plan


def _two_models(model: str | None) -> bool:
    """Whether MODEL has a challenger other than its champion (what disagreement compares)."""
    from .. import registry
    from ..errors import NotFoundError

    if model is None:
        return False
    try:
        champion, challenger = (registry.get_alias(model, a) for a in (registry.CHAMPION, registry.CHALLENGER))
    except NotFoundError:  # captures of a model served from a file: not in the registry
        return False
    return champion is not None and challenger is not None and champion != challenger


def _disagreements(store, records, model: str | None) -> dict[str, float]:
    """Champion vs challenger on each capture's image: how much their boxes disagree."""
    from ..feedback.scoring import disagreement
    from ..serving.preprocess import decode_image
    from ..serving.runtime import OnnxModel, PredictParams
    from ..serving.sources import parse_spec, resolve

    if model is None:
        raise ValidationError("--strategy disagreement needs --model NAME (its champion and challenger)")
    champion, challenger = (OnnxModel(resolve(parse_spec(f"{model}@{alias}")).path)
                            for alias in ("champion", "challenger"))
    params = PredictParams(conf=0.05)
    out = {}
    for r in records:
        image = decode_image(store.get_blob(r.image_sha256))
        a, b = champion.predict(image, params), challenger.predict(image, params)
        out[r.id] = disagreement(a.detections, b.detections) if a.detections is not None else \
            float(a.classes[0][0] != b.classes[0][0])
    return out


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
