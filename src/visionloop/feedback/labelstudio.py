"""Label Studio round trip: captures → tasks (push) and annotations → a dataset version (pull).

push: waiting captures become tasks (the image inline as a data URL, so no storage setup is
needed) with the model's detections as pre-annotations; each task carries
``visionloop_capture_id`` so a second push never duplicates one; pushed captures move
``pending`` → ``in_labeling``.
pull: completed annotations → percent boxes converted to normalized YOLO, classes matched by
name → a new dataset version on top of the current one; their captures move to ``in_dataset``.
Classification projects use single-choice Choices, pre-annotated with the model's top-1 class.

The REST calls are :mod:`.ls_client`'s.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import quoteattr

from pydantic import BaseModel, SecretStr

from ..datasets import images
from ..datasets.manifest import DatasetManifest, YoloBox
from ..datasets.validate import LabelError, RawBox, normalize_boxes
from ..errors import ValidationError, VisionloopError
from ..files import atomic_write_text
from ..predictions import Detection
from ..store import Store
from ..predictions import Task
from .inbox import WAITING, CaptureRecord, list_captures, read_capture, set_state
from .ls_client import TOKEN_ENV, LabelStudio, config_labels  # noqa: F401 (re-exported: one import for callers)
from .relabel import LabeledImage, commit_labeled
from .rounds import RoundPlan
from .scoring import SCORES, ImageScores

CAPTURE_KEY, MODEL_KEY = "visionloop_capture_id", "visionloop_model"
FROM_NAME, TO_NAME = "label", "image"
_MIME = {"jpg": "image/jpeg", "png": "image/png", "bmp": "image/bmp", "webp": "image/webp", "tif": "image/tiff"}


class LabelStudioConfig(BaseModel):
    """The ``labelstudio:`` section of visionloop.yaml (the token is never stored there)."""

    url: str = ""
    project: str = ""


class PushResult(BaseModel):
    project_id: int
    project: str
    project_created: bool
    pushed: int
    already_there: int


class PullResult(BaseModel):
    project_id: int
    dataset: str
    created: bool
    annotated_tasks: int
    images: int
    boxes: int
    skipped: int
    split_counts: dict[str, int]


URL_ENV = "LABEL_STUDIO_URL"


def resolve_target(url: str | None, project: str | None, dataset: str, config: Path | None = None) -> LabelStudioConfig:
    """Flags, then $LABEL_STUDIO_URL, then visionloop.yaml, then the one `label studio` started;
    the project defaults to visionloop-DATASET. An empty ``url`` means no Label Studio is
    configured ($LABEL_STUDIO_URL set to "" says so explicitly)."""
    from ..config_file import load_section
    from .studio import saved_url

    cfg = load_section(LabelStudioConfig, config, "labelstudio")
    env = os.environ.get(URL_ENV)
    found = url or env or cfg.url or ("" if env == "" else saved_url() or "")
    return LabelStudioConfig(url=found, project=project or cfg.project or f"visionloop-{dataset}")


def resolve_token(token: str | None) -> SecretStr:
    """--token, then $LABEL_STUDIO_API_KEY, then the token file of `visionloop label studio`."""
    from .studio import saved_token

    value = token or os.environ.get(TOKEN_ENV, "")
    if value:
        return SecretStr(value)
    saved = saved_token()
    if saved is None:
        raise VisionloopError(f"no Label Studio token: set {TOKEN_ENV}, pass --token or start `visionloop label studio`")
    return saved


# -- pure conversions (tested without a server) ---------------------------------------------
def labeling_config(classes: list[str], task: Task = "detect") -> str:
    """Detection: a RectangleLabels config; classification: single-choice Choices. The values
    are the dataset's class names."""
    if task == "classify":
        choices = "".join(f"<Choice value={quoteattr(c)}/>" for c in classes)
        return (f'<View><Image name="{TO_NAME}" value="$image"/>'
                f'<Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">{choices}'
                '</Choices></View>')
    labels = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
    return (f'<View><Image name="{TO_NAME}" value="$image"/>'
            f'<RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</RectangleLabels></View>')


def class_to_result(name: str, confidence: float) -> list[dict]:
    """A classification pre-annotation: the model's top-1 as the chosen class."""
    return [{"from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices", "value": {"choices": [name]},
             "score": confidence}]


def result_to_class(results: list[dict], where: str = "") -> str | None:
    """The one chosen class of a classification annotation (None: nothing chosen)."""
    chosen = [c for r in results if r.get("type") == "choices" for c in (r.get("value") or {}).get("choices") or []]
    if len(chosen) > 1:
        raise ValidationError(f"{where}: a classification needs one class, got {chosen}")
    return chosen[0] if chosen else None


def detections_to_result(dets: Iterable[Detection], width: int, height: int) -> list[dict]:
    """Pixel xyxy detections → LS rectangle results in percent of the image size."""
    out = []
    for d in dets:
        b = d.box
        out.append({
            "from_name": FROM_NAME, "to_name": TO_NAME, "type": "rectanglelabels",
            "original_width": width, "original_height": height, "image_rotation": 0,
            "value": {"x": 100 * b.x1 / width, "y": 100 * b.y1 / height,
                      "width": 100 * (b.x2 - b.x1) / width, "height": 100 * (b.y2 - b.y1) / height,
                      "rotation": 0, "rectanglelabels": [d.class_name]},
            "score": d.confidence,
        })
    return out


def result_to_boxes(results: list[dict], width: int, height: int, where: str = "") -> tuple[list[YoloBox], list[str]]:
    """Rectangle results (percent of the image, maybe rotated) → YOLO boxes whose class ids
    index the returned list of names. The geometry is the dataset importer's (one conversion)."""
    names: list[str] = []
    raw: list[RawBox] = []
    for k, r in enumerate(results):
        if r.get("type") != "rectanglelabels":
            continue  # choices, keypoints, ... are not boxes
        value = r.get("value") or {}
        labels = value.get("rectanglelabels") or []
        if len(labels) != 1:
            raise ValidationError(f"{where} result {k}: a rectangle needs exactly one label, got {labels}")
        if labels[0] not in names:
            names.append(labels[0])
        try:
            x, y, w, h = (float(value[f]) for f in ("x", "y", "width", "height"))
        except (KeyError, TypeError, ValueError):
            raise ValidationError(f"{where} result {k}: x, y, width, height must be numbers") from None
        raw.append(RawBox(names.index(labels[0]), x, y, w, h, form="xywh_pct", where=f"{where} result {k}",
                          rotation=float(value.get("rotation") or 0)))
    try:
        return normalize_boxes(raw, len(names), width, height), names
    except LabelError as exc:
        raise ValidationError(f"{where}: {exc}") from None


def final_annotation(task: dict) -> dict | None:
    """The latest completed (not cancelled) annotation of an exported task."""
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    return max(done, key=lambda a: (a.get("updated_at") or "", a.get("id") or 0)) if done else None


def data_url(data: bytes, ext: str) -> str:
    return f"data:{_MIME.get(ext, 'application/octet-stream')};base64,{base64.b64encode(data).decode()}"


def decode_data_url(url: str) -> bytes | None:
    if not url.startswith("data:") or ";base64," not in url:
        return None
    try:
        return base64.b64decode(url.split(";base64,", 1)[1], validate=True)
    except (binascii.Error, ValueError):
        return None


def capture_task(record: CaptureRecord, image: bytes, scores: ImageScores | None = None) -> dict:
    """One LS task: the image inline, the capture id to find it again, the model's boxes, and the
    uncertainty scores that got it picked (shown in the task's data columns)."""
    task: dict = {"data": {"image": data_url(image, record.ext), CAPTURE_KEY: record.id,
                           MODEL_KEY: record.model, "visionloop_reason": record.reason}}
    scores = scores or record.scores
    if scores is not None:
        task["data"].update({f"visionloop_{k}": round(scores.value(k), 4) for k in SCORES})
    if record.top:
        best = record.top[0]
        task["predictions"] = [{"model_version": f"{record.model}/{record.version}", "score": best.confidence,
                                "result": class_to_result(best.class_name, best.confidence)}]
    elif record.detections:
        conf = [d.confidence for d in record.detections]
        task["predictions"] = [{"model_version": f"{record.model}/{record.version}",
                                "score": sum(conf) / len(conf),
                                "result": detections_to_result(record.detections, record.width, record.height)}]
    return task


def unlabeled_captures(store: Store, model: str | None) -> list[CaptureRecord]:
    """Captures waiting for a human: ``pending`` and ``in_labeling`` (pushed, not annotated yet)."""
    return [r for r in list_captures(store, model, states=set(WAITING)) if r.labels is None and r.label is None]


def export_tasks(store: Store, path: Path, model: str | None = None) -> int:
    """Offline: the unlabeled inbox as a Label Studio JSON task file (importable in the UI)."""
    tasks = [capture_task(r, store.get_blob(r.image_sha256)) for r in unlabeled_captures(store, model)]
    atomic_write_text(path, json.dumps(tasks))
    return len(tasks)


# -- push / pull ----------------------------------------------------------------------------
def push(store: Store, ls: LabelStudio, project: str, classes: list[str], model: str | None = None,
         batch: int = 50, task: Task = "detect", plan: RoundPlan | None = None) -> PushResult:
    """Unlabeled captures → tasks with pre-annotations (boxes, or the top-1 class); captures
    already there are skipped. With ``plan`` (feedback.rounds), exactly its picks, with their scores."""
    proj, created = ls.ensure_project(project, labeling_config(classes, task), classes)
    pid = int(proj["id"])
    known = {str(t.get("data", {}).get(CAPTURE_KEY)) for t in ls.tasks(pid)} if not created else set()
    waiting = unlabeled_captures(store, model)
    scores = {}
    if plan is not None:
        scores = {p.id: p.scores for p in plan.picked}
        waiting = [r for r in waiting if r.id in scores]
    todo = [r for r in waiting if r.id not in known]
    _to_labeling(store, [r for r in waiting if r.id in known])  # a push that stopped before moving them
    pushed = 0
    for i in range(0, len(todo), batch):
        chunk = todo[i:i + batch]
        pushed += ls.import_tasks(pid, [capture_task(r, store.get_blob(r.image_sha256), scores.get(r.id))
                                        for r in chunk])
        _to_labeling(store, chunk)  # after the import: a crash before this re-finds them as "already there"
    return PushResult(project_id=pid, project=project, project_created=created, pushed=pushed,
                      already_there=len(waiting) - len(todo))


def _to_labeling(store: Store, records: list[CaptureRecord]) -> None:
    for r in records:
        if r.state == "pending":
            set_state(store, r, "in_labeling")


def _labeled(sha: str, ext: str, width: int, height: int, results: list[dict], kind: Task, where: str,
             capture: CaptureRecord | None = None) -> LabeledImage | None:
    """One annotation as a labeled image: boxes (detect) or the chosen class (classify; None when
    nothing was chosen)."""
    source = where.replace("Label Studio task ", "labelstudio:task")
    if kind == "classify":
        name = result_to_class(results, where)
        if name is None:
            return None
        return LabeledImage(sha, ext, width, height, [], [name], source=source, capture=capture, class_id=0)
    boxes, names = result_to_boxes(results, width, height, where)
    return LabeledImage(sha, ext, width, height, boxes, names, source=source, capture=capture)


def annotated_images(store: Store, tasks: list[dict], kind: Task = "detect") -> tuple[list[LabeledImage], int]:
    """Completed tasks → labeled images in the store; (images, tasks skipped as unusable).
    A task's capture is read by id (also when archived: an old task maps to its old capture)."""
    items: list[LabeledImage] = []
    skipped = 0
    for task in tasks:
        ann = final_annotation(task)
        if ann is None:
            continue
        data = task.get("data") or {}
        rec = read_capture(store, str(data.get(MODEL_KEY, "")), str(data.get(CAPTURE_KEY, "")))
        where, results = f"Label Studio task {task.get('id')}", ann.get("result") or []
        if rec is not None and store.has_blob(rec.image_sha256):
            item = _labeled(rec.image_sha256, rec.ext, rec.width, rec.height, results, kind, where, rec)
        elif (raw := decode_data_url(str(data.get("image", "")))) is not None:  # imported by hand, inline image
            p = images.prepare(raw)
            item = _labeled(store.put_blob(p.data), p.ext, p.width, p.height, results, kind, where)
        else:
            item = None
        if item is None:
            skipped += 1
        else:
            items.append(item)
    return items, skipped


def pull(store: Store, ls: LabelStudio, project: str, manifest: DatasetManifest) -> PullResult:
    """Completed annotations → the next version of ``manifest``'s dataset (or nothing on error)."""
    proj = ls.find_project(project)
    if proj is None:
        raise VisionloopError(f"Label Studio has no project {project!r} (push creates it)")
    pid = int(proj["id"])
    tasks = ls.export_annotated(pid)
    items, skipped = annotated_images(store, tasks, manifest.task)
    annotated = sum(1 for t in tasks if final_annotation(t) is not None)
    if not items:
        return PullResult(project_id=pid, dataset=manifest.ref, created=False, annotated_tasks=annotated,
                          images=0, boxes=0, skipped=skipped, split_counts=manifest.split_counts())
    res = commit_labeled(store, manifest, items, source=f"labelstudio:{ls.url} project {project}")
    new = res.manifest
    return PullResult(project_id=pid, dataset=new.ref, created=res.created, annotated_tasks=annotated,
                      images=len(items), boxes=sum(len(i.boxes) for i in items), skipped=skipped,
                      split_counts=new.split_counts())
