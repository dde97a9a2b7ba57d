"""One turn of the loop: labels → new dataset version → train → compare → promote → report.

Each step is atomic on its own (a dataset version appears whole, a failed training registers
nothing, an alias moves in one call, the report is renamed into place), and the loop is
resumable: a turn that stopped after making a dataset version trains on it next time,
because the champion was not trained on the latest version yet.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from .. import registry
from ..datasets.catalog import Catalog
from ..datasets.manifest import DatasetManifest
from ..errors import NotFoundError, VisionloopError
from ..feedback import relabel
from ..feedback.labelstudio import LabelStudioConfig
from ..promotion import Gate, PromotionResult
from ..store import Store, open_store

if TYPE_CHECKING:
    from ..training.events import PipelineEvents

# Parameters of the champion's MLflow run that define a training (and can be reused).
REUSED_PARAMS = ("model", "epochs", "batch", "imgsz", "device", "seed", "patience", "workers")


class LoopOptions(BaseModel):
    data: str = Field(description="Dataset name; its latest version receives the labels.")
    model: str = Field(description="Registered model name.")
    labelstudio: LabelStudioConfig = Field(default_factory=LabelStudioConfig, description="Empty url: use the labeled inbox.")
    token: str | None = Field(default=None, exclude=True, repr=False)
    capture_model: str | None = Field(default=None, description="Whose inbox to read (default: model).")
    train_overrides: dict[str, Any] = Field(default_factory=dict, description="Flags that beat the champion's parameters.")
    config: Path | None = None
    gate: Gate = Field(default_factory=Gate)
    report: Path = Path("report.md")
    retrain: bool = Field(default=False, description="Train even when the champion already saw the latest data.")


class Step(BaseModel):
    """A step's progress: ``started`` as it begins (never kept in :attr:`LoopResult.steps`),
    then one of done / skipped / failed."""

    name: str
    status: Literal["started", "done", "skipped", "failed"]
    detail: str


class LoopResult(BaseModel):
    steps: list[Step] = Field(default_factory=list)
    dataset: str | None = None
    trained: str | None = None
    champion_before: str | None = None
    champion_after: str | None = None
    promotion: PromotionResult | None = None
    report: Path | None = None

    @property
    def promoted(self) -> bool:
        return bool(self.promotion and self.promotion.promoted)


class LoopStopped(VisionloopError):
    """A step failed; the message says which, what was done before, and how to resume."""


def champion_params(name: str) -> dict[str, Any]:
    """The training parameters of the champion's run (empty when there is no champion)."""
    try:
        mv = registry.resolve_version(f"{name}@{registry.CHAMPION}")
    except NotFoundError:
        return {}
    if not mv.run_id:
        return {}
    params = registry.client().get_run(mv.run_id).data.params
    return {k: params[k] for k in REUSED_PARAMS if params.get(k) not in (None, "", "None")}


def _labels_step(store: Store, opts: LoopOptions, manifest: DatasetManifest) -> tuple[DatasetManifest, bool, str]:
    """(latest manifest, whether a version was made, what happened)."""
    if opts.labelstudio.url:
        from ..feedback import labelstudio as ls

        with ls.LabelStudio(opts.labelstudio.url, ls.resolve_token(opts.token)) as client:
            res = ls.pull(store, client, opts.labelstudio.project, manifest)
        where = f"Label Studio project {opts.labelstudio.project!r}"
        if not res.created:
            return manifest, False, f"no new labels in {where} ({res.annotated_tasks} completed tasks, nothing new)"
        new = Catalog(store).load(res.dataset)
        return new, True, f"pulled {res.images} labeled images ({res.boxes} boxes) from {where} → {new.ref}"
    records = relabel.labeled_captures(store, opts.capture_model or opts.model)
    if not records:
        return manifest, False, f"no labeled captures in the inbox of {opts.capture_model or opts.model}"
    items = [relabel.from_capture(r, manifest.classes) for r in records]
    res = relabel.commit_labeled(store, manifest, items, source=f"inbox:{opts.capture_model or opts.model}")
    # commit_labeled moves the captures to in_dataset; a rerun after a crash finds the same content
    # (no new version) and moves what is left
    if not res.created:
        return manifest, False, f"{len(items)} labeled captures are already in {manifest.ref}"
    added = len(res.manifest.images) - len(manifest.images)
    return res.manifest, True, f"{len(items)} labeled captures ({added} new images) → {res.manifest.ref}"


def _train(opts: LoopOptions, manifest: DatasetManifest, events: PipelineEvents | None) -> str:
    """Train in this process with the champion's parameters (flags win); returns the version."""
    from ..training.config import build_config, load_file
    from ..training.pipeline import run_pipeline

    values = {**load_file(opts.config), **champion_params(opts.model)}
    cfg = build_config(values, {**opts.train_overrides, "data": manifest.ref, "name": opts.model})
    res = run_pipeline(cfg, events)
    if res.version is None:
        raise VisionloopError(f"training on {manifest.ref} registered no version")
    return res.version


def run_iteration(opts: LoopOptions, say: Callable[[Step], None] = lambda s: None,
                  training: PipelineEvents | None = None) -> LoopResult:
    """One turn; ``say`` hears every step as it starts and as it ends, ``training`` the
    training's progress (default: the ``visionloop.training`` log)."""
    from .. import promotion, reports

    store = open_store()
    out = LoopResult()

    def step(name: str, status: str, detail: str) -> None:
        s = Step(name=name, status=status, detail=detail)  # type: ignore[arg-type]
        out.steps.append(s)
        say(s)

    def start(name: str, detail: str) -> None:
        say(Step(name=name, status="started", detail=detail))

    def run(name: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except VisionloopError as exc:
            step(name, "failed", str(exc))
            done = "; ".join(f"{s.name}: {s.detail}" for s in out.steps if s.status == "done") or "nothing"
            raise LoopStopped(f"loop stopped at {name}: {exc} (done before: {done}; run the loop again to resume)") from None

    catalog = Catalog(store)
    start("labels", f"from Label Studio project {opts.labelstudio.project!r}" if opts.labelstudio.url
          else f"from the inbox of {opts.capture_model or opts.model}")
    manifest = run("labels", lambda: catalog.load(opts.data))
    manifest, created, detail = run("labels", lambda: _labels_step(store, opts, manifest))
    step("labels", "done" if created else "skipped", detail)
    out.dataset = manifest.ref

    try:
        champ = registry.resolve_version(f"{opts.model}@{registry.CHAMPION}")
    except NotFoundError:
        champ = None
    out.champion_before = champ.ref if champ else None
    if champ is not None and champ.tags.get(registry.TAG_DATASET) == manifest.ref and not opts.retrain:
        step("train", "skipped", f"champion {champ.ref} is already trained on {manifest.ref}: nothing new to learn")
        out.champion_after = champ.ref
        return out

    start("train", f"{opts.model} on {manifest.ref}")
    version = run("train", lambda: _train(opts, manifest, training))
    out.trained = f"{opts.model}/{version}"
    step("train", "done", f"{out.trained} trained on {manifest.ref}")

    if champ is None or champ.version == version:
        out.champion_after = f"{opts.model}/{registry.get_alias(opts.model, registry.CHAMPION)}"
        why = "the first model of its name" if champ is None else "this training was already registered"
        step("promote", "skipped", f"{out.champion_after} is the champion ({why})")
        start("report", str(opts.report))
        run("report", lambda: reports.build(out.trained, None, manifest.ref, opts.report, opts.gate))
    else:
        start("compare", f"{out.trained} against {champ.ref} on {manifest.ref}, then the gate")
        res = run("compare", lambda: promotion.promote(out.trained, gate=opts.gate, data=manifest.ref))
        out.promotion = res
        cmp = res.comparison
        step("compare", "done", f"{cmp.a} vs {cmp.b} on {cmp.data} ({cmp.images} test images): {res.decision.summary()}")
        if res.promoted:
            step("promote", "done", f"{opts.model}@champion {res.previous} → {res.version} (gate passed)")
        else:
            step("promote", "skipped", "gate refused: " + "; ".join(res.decision.reasons))
        out.champion_after = f"{opts.model}/{res.version if res.promoted else res.previous}"
        start("report", str(opts.report))
        rep = reports.Report(title=f"visionloop loop: {opts.model}", old=cmp.a, new=cmp.b, comparison=cmp,
                             decision=res.decision, promoted=res.promoted)
        new_m = registry.resolve_model(out.trained)
        rep.dataset = reports.data_change(registry.resolve_model(cmp.a), new_m)
        rep.plots = reports.plots_for(new_m, opts.report)
        run("report", lambda: reports.write(rep, opts.report))
    out.report = opts.report
    step("report", "done", f"wrote {opts.report}")
    return out
