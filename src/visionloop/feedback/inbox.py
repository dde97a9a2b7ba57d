"""The capture inbox: images the server saw that are worth labeling, with its predictions.

Each capture moves ``pending`` → ``in_labeling`` → ``labeled`` → ``in_dataset`` (with the
version that took it) or ``discarded``. Layout in the store::

    blobs/ab/ab12...                          image bytes (content-addressed, shared with datasets)
    inbox/MODEL/ID.json                       hot records: pending, in_labeling, labeled
    inbox-archive/MODEL/STATE/ID.json         in_dataset and discarded records, kept forever

The hot folder is what the server's cap and ``label push`` read; the archive keeps every
capture that moved on, so the counts per state always add up to everything captured, and
counting the archive is a listing (the state is in the key), not a read per record.
Archiving writes the archive copy first and deletes the hot one last: a crash leaves both,
readers dedupe by id and the archive wins.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any, Literal, get_args

from pydantic import BaseModel, Field, model_validator

from ..datasets.manifest import YoloBox
from ..errors import NotFoundError, ValidationError
from ..predictions import ClassScore, Detection
from ..store import Store
from .scoring import ImageScores

Reason = Literal["low-confidence", "low-margin", "no-detection", "flagged", "sample", "all"]
CaptureState = Literal["pending", "in_labeling", "labeled", "in_dataset", "discarded"]
STATES: tuple[str, ...] = get_args(CaptureState)
ARCHIVED: tuple[str, ...] = ("in_dataset", "discarded")  # out of the hot path
WAITING: frozenset[str] = frozenset({"pending", "in_labeling"})  # what the server's cap counts
HOT, ARCHIVE = "inbox", "inbox-archive"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class CaptureRecord(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    created_at: str = Field(default_factory=_now)
    model: str
    version: str
    reason: Reason
    image_sha256: str
    ext: str
    width: int
    height: int
    classes: list[str] = Field(default_factory=list, description="The model's class names.")
    detections: list[Detection] = Field(default_factory=list, description="What the model said (records written"
                                        " before the box was nested, with flat x1..y2, still load).")
    top: list[ClassScore] = Field(default_factory=list, description="Classification: what the model said (top-k).")
    note: str = ""
    scores: ImageScores | None = Field(default=None, description="Uncertainty when captured (feedback.scoring); "
                                       "older records have none and are scored from their predictions.")
    labels: list[YoloBox] | None = Field(default=None, description="Ground truth once labeled.")
    label: int | None = Field(default=None, description="Classification: the true class (an index into classes) "
                              "once labeled.")
    state: CaptureState = "pending"
    dataset: str | None = Field(default=None, description="'NAME@VERSION' that took it (state in_dataset).")
    state_at: str | None = Field(default=None, description="ISO time of the last state change.")

    @model_validator(mode="before")
    @classmethod
    def _state_from_labels(cls, data: Any) -> Any:
        """Records written before the lifecycle load as labeled when they carry labels, else pending;
        labels given in place (``update_capture``) make a waiting record labeled."""
        if isinstance(data, dict) and data.get("state") in (None, *WAITING):
            labeled = data.get("labels") is not None or data.get("label") is not None
            data = {**data, "state": "labeled" if labeled else data.get("state") or "pending"}
        return data


def _hot_key(model: str, rec_id: str) -> str:
    return f"{HOT}/{model}/{rec_id}.json"


def _archive_key(model: str, state: str, rec_id: str) -> str:
    return f"{ARCHIVE}/{model}/{state}/{rec_id}.json"


def _json_ids(store: Store, prefix: str) -> list[str]:
    return [f[:-5] for f in store.list(prefix) if f.endswith(".json")]


def _write(store: Store, key: str, record: CaptureRecord) -> None:
    store.write_bytes(key, record.model_dump_json().encode())


def write_capture(store: Store, record: CaptureRecord, image: bytes) -> CaptureRecord:
    """Blob first, record last: a crash never leaves a record without its image."""
    store.put_blob(image, record.image_sha256)
    _write(store, _hot_key(record.model, record.id), record)
    return record


def update_capture(store: Store, record: CaptureRecord) -> None:
    """Rewrite a hot record as it is (its state unchanged); state changes go through :func:`set_state`."""
    _write(store, _hot_key(record.model, record.id), record)


def set_state(store: Store, record: CaptureRecord, state: CaptureState, *, dataset: str | None = None) -> CaptureRecord:
    """``record`` in ``state`` (written); ``in_dataset`` needs the ``dataset`` ref that took it.
    ``in_dataset`` / ``discarded`` move the record to the archive (copy first, hot one deleted last)."""
    if state not in STATES:
        raise ValidationError(f"unknown capture state {state!r} (one of {', '.join(STATES)})")
    if state == "in_dataset" and not dataset:
        raise ValidationError(f"capture {record.id}: in_dataset needs the dataset version that took it")
    new = record.model_copy(update={"state": state, "dataset": dataset if state == "in_dataset" else None,
                                    "state_at": _now()})
    if state in ARCHIVED:
        _write(store, _archive_key(record.model, state, record.id), new)
        for other in ARCHIVED:
            if other != state:
                store.delete(_archive_key(record.model, other, record.id))
        store.delete(_hot_key(record.model, record.id))
    else:
        _write(store, _hot_key(record.model, record.id), new)
        for old in ARCHIVED:  # taken back out of the archive (e.g. a discarded one restored)
            store.delete(_archive_key(record.model, old, record.id))
    return new


def label_capture(store: Store, record: CaptureRecord, labels: list[YoloBox]) -> CaptureRecord:
    """Ground truth for ``record`` (class ids index ``record.classes``, like its detections) → ``labeled``."""
    bad = sorted({b.class_id for b in labels if record.classes and not 0 <= b.class_id < len(record.classes)})
    if bad:
        raise ValidationError(f"capture {record.id}: label class ids {bad} are outside its {len(record.classes)} classes")
    return set_state(store, record.model_copy(update={"labels": list(labels)}), "labeled")


def label_capture_class(store: Store, record: CaptureRecord, class_id: int) -> CaptureRecord:
    """Classification ground truth for ``record`` (an index into ``record.classes``) → ``labeled``."""
    if record.classes and not 0 <= class_id < len(record.classes):
        raise ValidationError(f"capture {record.id}: class id {class_id} is outside its {len(record.classes)} classes")
    return set_state(store, record.model_copy(update={"label": class_id}), "labeled")


def read_capture(store: Store, model: str, rec_id: str) -> CaptureRecord | None:
    """One record by id (the archive wins over a hot twin); None when it does not exist or the
    names (they may come from a Label Studio task) are not plain names inside the inbox."""
    if not model or not rec_id or "/" in model + rec_id or model.startswith(".") or rec_id.startswith("."):
        return None
    for key in (*(_archive_key(model, s, rec_id) for s in ARCHIVED), _hot_key(model, rec_id)):
        if store.exists(key):
            return CaptureRecord.model_validate_json(store.read_bytes(key))
    return None


def _archived_ids(store: Store, model: str) -> dict[str, list[str]]:
    return {s: _json_ids(store, f"{ARCHIVE}/{model}/{s}") for s in ARCHIVED}


def _models(store: Store, model: str | None, archived: bool) -> list[str]:
    if model:
        return [model]
    return sorted(set(store.list(HOT)) | (set(store.list(ARCHIVE)) if archived else set()))


def _load(store: Store, keys: list[str]) -> list[CaptureRecord]:
    out = []
    for key in keys:
        try:
            out.append(CaptureRecord.model_validate_json(store.read_bytes(key)))
        except NotFoundError:  # moved on between the listing and the read
            continue
    return out


def _hot_records(store: Store, model: str, archived_ids: set[str]) -> list[CaptureRecord]:
    """Hot records, less those with an archive twin (a crash between copy and delete: the archive wins)."""
    return _load(store, [_hot_key(model, i) for i in _json_ids(store, f"{HOT}/{model}") if i not in archived_ids])


def list_captures(store: Store, model: str | None = None, *, states: set[str] | None = None,
                  archived: bool = False) -> list[CaptureRecord]:
    """Captures oldest first: the hot ones (pending, in_labeling, labeled), with ``archived``
    also those that moved on; ``states`` keeps only those states."""
    out: list[CaptureRecord] = []
    for m in _models(store, model, archived):
        arch = _archived_ids(store, m)
        out.extend(_hot_records(store, m, {i for ids in arch.values() for i in ids}))
        if archived:
            seen: set[str] = set()
            for s in ARCHIVED:
                fresh = [i for i in arch[s] if i not in seen]
                seen.update(fresh)
                out.extend(_load(store, [_archive_key(m, s, i) for i in fresh]))
    if states is not None:
        out = [r for r in out if r.state in states]
    return sorted(out, key=lambda r: r.created_at)


def count_by_state(store: Store, model: str | None = None) -> dict[str, int]:
    """Captures per state, every state present (zeros included); they add up to all captured.
    The archive is counted from its listing, the hot records are read."""
    counts = dict.fromkeys(STATES, 0)
    for m in _models(store, model, archived=True):
        arch = _archived_ids(store, m)
        seen: set[str] = set()
        for s in ARCHIVED:
            fresh = set(arch[s]) - seen
            counts[s] += len(fresh)
            seen |= fresh
        for r in _hot_records(store, m, seen):
            counts[r.state] += 1
    return counts


def waiting_captures(store: Store, model: str) -> list[CaptureRecord]:
    """``pending`` + ``in_labeling`` records of ``model``, oldest first (the server's cap)."""
    return list_captures(store, model, states=set(WAITING))


def count_waiting(store: Store, model: str) -> int:
    return len(waiting_captures(store, model))


def count_captures(store: Store, model: str) -> int:
    """Hot records of ``model`` in any state (a listing, no reads): how full the hot folder is."""
    return len(_json_ids(store, f"{HOT}/{model}"))
