"""Label Studio round trip over its REST API (plain httpx; works with LS 1.x legacy tokens).

push: waiting captures become tasks (the image inline as a data URL, so no storage setup is
needed) with the model's detections as pre-annotations; each task carries
``visionloop_capture_id`` so a second push never duplicates one; pushed captures move
``pending`` → ``in_labeling``.
pull: completed annotations → percent boxes converted to normalized YOLO, classes matched by
name → a new dataset version on top of the current one; their captures move to ``in_dataset``.

The token travels only in the ``Authorization`` header; it is never printed, logged or put in
an error message.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from xml.sax.saxutils import quoteattr

import httpx
from pydantic import BaseModel, SecretStr

from ..datasets import images
from ..datasets.manifest import DatasetManifest, YoloBox
from ..datasets.validate import LabelError, RawBox, normalize_boxes
from ..errors import ValidationError, VisionloopError
from ..files import atomic_write_text
from ..predictions import Detection
from ..store import Store
from .inbox import WAITING, CaptureRecord, list_captures, read_capture, set_state
from .relabel import LabeledImage, commit_labeled

TOKEN_ENV = "LABEL_STUDIO_API_KEY"
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
def labeling_config(classes: list[str]) -> str:
    """A RectangleLabels config whose label values are the dataset's class names."""
    labels = "".join(f"<Label value={quoteattr(c)}/>" for c in classes)
    return (f'<View><Image name="{TO_NAME}" value="$image"/>'
            f'<RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}">{labels}</RectangleLabels></View>')


def config_labels(label_config: str) -> list[str]:
    """Label values declared in a project's config (to tell the user what is missing)."""
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return []
    return [el.get("value", "") for el in root.iter("Label")]


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


def capture_task(record: CaptureRecord, image: bytes) -> dict:
    """One LS task: the image inline, the capture id to find it again, the model's boxes."""
    task: dict = {"data": {"image": data_url(image, record.ext), CAPTURE_KEY: record.id,
                           MODEL_KEY: record.model, "visionloop_reason": record.reason}}
    if record.detections:
        conf = [d.confidence for d in record.detections]
        task["predictions"] = [{"model_version": f"{record.model}/{record.version}",
                                "score": sum(conf) / len(conf),
                                "result": detections_to_result(record.detections, record.width, record.height)}]
    return task


def unlabeled_captures(store: Store, model: str | None) -> list[CaptureRecord]:
    """Captures waiting for a human: ``pending`` and ``in_labeling`` (pushed, not annotated yet)."""
    return [r for r in list_captures(store, model, states=set(WAITING)) if r.labels is None]


def export_tasks(store: Store, path: Path, model: str | None = None) -> int:
    """Offline: the unlabeled inbox as a Label Studio JSON task file (importable in the UI)."""
    tasks = [capture_task(r, store.get_blob(r.image_sha256)) for r in unlabeled_captures(store, model)]
    atomic_write_text(path, json.dumps(tasks))
    return len(tasks)


# -- the client -----------------------------------------------------------------------------
class LabelStudio:
    """A few REST calls; every failure is a VisionloopError with one line and no token."""

    def __init__(self, url: str, token: SecretStr, timeout: float = 60.0):
        if not url.startswith(("http://", "https://")):
            raise ValidationError(f"Label Studio URL must start with http:// or https:// (got {url!r})")
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout,
                                    headers={"Authorization": f"Token {token.get_secret_value()}"})

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            r = self._client.request(method, path, **kw)
        except httpx.TimeoutException:
            raise VisionloopError(f"Label Studio at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise VisionloopError(f"cannot reach Label Studio at {self.url} ({type(exc).__name__})") from None
        if r.status_code in (401, 403):
            raise VisionloopError(
                f"Label Studio at {self.url} refused the token (HTTP {r.status_code}); check {TOKEN_ENV} or --token "
                "(a legacy token: start Label Studio with --enable-legacy-api-token)")
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail") or r.json().get("validation_errors") or ""
            except (ValueError, AttributeError):
                detail = ""
            raise VisionloopError(f"Label Studio answered HTTP {r.status_code} to {method} {path}"
                                  + (f": {str(detail)[:200]}" if detail else ""))
        return r

    def _json(self, method: str, path: str, **kw):
        r = self._call(method, path, **kw)
        try:
            return r.json()
        except ValueError:
            raise VisionloopError(f"{self.url} did not answer {method} {path} with JSON: is it Label Studio?") from None

    def find_project(self, title: str) -> dict | None:
        page = self._json("GET", "/api/projects", params={"title": title, "page_size": 100})
        items = page.get("results", []) if isinstance(page, dict) else page
        return next((p for p in items if p.get("title") == title), None)

    def ensure_project(self, title: str, classes: list[str]) -> tuple[dict, bool]:
        if len(title) < 3:
            raise ValidationError(f"Label Studio project titles need at least 3 characters (got {title!r})")
        found = self.find_project(title)
        if found is not None:
            missing = [c for c in classes if c not in config_labels(found.get("label_config", ""))]
            if missing:
                raise ValidationError(f"project {title!r} has no labels for classes {', '.join(missing)}")
            return found, False
        return self._json("POST", "/api/projects", json={"title": title, "label_config": labeling_config(classes)}), True

    def tasks(self, project_id: int) -> list[dict]:
        out: list[dict] = []
        page = 1
        while True:
            body = self._json("GET", "/api/tasks", params={"project": project_id, "page": page, "page_size": 100})
            batch = body.get("tasks", [])
            out.extend(batch)
            if not batch or len(out) >= int(body.get("total", 0)):
                return out
            page += 1

    def import_tasks(self, project_id: int, tasks: list[dict]) -> int:
        body = self._json("POST", f"/api/projects/{project_id}/import", json=tasks)
        return int(body.get("task_count", len(tasks)))

    def export_annotated(self, project_id: int) -> list[dict]:
        body = self._json("GET", f"/api/projects/{project_id}/export", params={"exportType": "JSON"})
        if not isinstance(body, list):
            raise VisionloopError(f"unexpected export from Label Studio project {project_id}")
        return body


# -- push / pull ----------------------------------------------------------------------------
def push(store: Store, ls: LabelStudio, project: str, classes: list[str], model: str | None = None,
         batch: int = 50) -> PushResult:
    """Unlabeled captures → tasks with pre-annotations; captures already there are skipped."""
    proj, created = ls.ensure_project(project, classes)
    pid = int(proj["id"])
    known = {str(t.get("data", {}).get(CAPTURE_KEY)) for t in ls.tasks(pid)} if not created else set()
    waiting = unlabeled_captures(store, model)
    todo = [r for r in waiting if r.id not in known]
    _to_labeling(store, [r for r in waiting if r.id in known])  # a push that stopped before moving them
    pushed = 0
    for i in range(0, len(todo), batch):
        chunk = todo[i:i + batch]
        pushed += ls.import_tasks(pid, [capture_task(r, store.get_blob(r.image_sha256)) for r in chunk])
        _to_labeling(store, chunk)  # after the import: a crash before this re-finds them as "already there"
    return PushResult(project_id=pid, project=project, project_created=created, pushed=pushed,
                      already_there=len(waiting) - len(todo))


def _to_labeling(store: Store, records: list[CaptureRecord]) -> None:
    for r in records:
        if r.state == "pending":
            set_state(store, r, "in_labeling")


def annotated_images(store: Store, tasks: list[dict]) -> tuple[list[LabeledImage], int]:
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
        where = f"Label Studio task {task.get('id')}"
        if rec is not None and store.has_blob(rec.image_sha256):
            boxes, names = result_to_boxes(ann.get("result") or [], rec.width, rec.height, where)
            items.append(LabeledImage(rec.image_sha256, rec.ext, rec.width, rec.height, boxes, names,
                                      source=f"labelstudio:task{task.get('id')}", capture=rec))
            continue
        raw = decode_data_url(str(data.get("image", "")))  # a task imported by hand with an inline image
        if raw is None:
            skipped += 1
            continue
        p = images.prepare(raw)
        boxes, names = result_to_boxes(ann.get("result") or [], p.width, p.height, where)
        items.append(LabeledImage(store.put_blob(p.data), p.ext, p.width, p.height, boxes, names,
                                  source=f"labelstudio:task{task.get('id')}"))
    return items, skipped


def pull(store: Store, ls: LabelStudio, project: str, manifest: DatasetManifest) -> PullResult:
    """Completed annotations → the next version of ``manifest``'s dataset (or nothing on error)."""
    proj = ls.find_project(project)
    if proj is None:
        raise VisionloopError(f"Label Studio has no project {project!r} (push creates it)")
    pid = int(proj["id"])
    tasks = ls.export_annotated(pid)
    items, skipped = annotated_images(store, tasks)
    annotated = sum(1 for t in tasks if final_annotation(t) is not None)
    if not items:
        return PullResult(project_id=pid, dataset=manifest.ref, created=False, annotated_tasks=annotated,
                          images=0, boxes=0, skipped=skipped, split_counts=manifest.split_counts())
    res = commit_labeled(store, manifest, items, source=f"labelstudio:{ls.url} project {project}")
    new = res.manifest
    return PullResult(project_id=pid, dataset=new.ref, created=res.created, annotated_tasks=annotated,
                      images=len(items), boxes=sum(len(i.boxes) for i in items), skipped=skipped,
                      split_counts=new.split_counts())
