"""A labeling round: which of the waiting captures go to the annotators, and why.

The server scores each capture when it makes the prediction (``CaptureRecord.scores``); older
records are scored here from the predictions they keep. Each capture's image gives the
perceptual hash (near-duplicate frames are merged) and the embedding for the diversity
strategies. :func:`plan_round` only decides; :func:`visionloop.feedback.labelstudio.push`
then pushes exactly the picked captures, and the round (strategy, picks, control slice,
merged duplicates) is written to ``rounds/MODEL/ID.json`` so its effect can be measured later.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from PIL import Image
from pydantic import BaseModel, Field

from ..datasets.images import pillow_open
from ..store import Store
from .inbox import CaptureRecord
from .scoring import ImageScores, dhash, score_record, thumbnail_embedding
from .selection import Candidate, Selection, select


class PickedCapture(BaseModel):
    id: str
    scores: ImageScores
    control: bool = Field(description="Picked at random for the control slice, not by the strategy.")
    disagreement: float | None = None


class RoundPlan(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    model: str | None
    strategy: str
    by: str
    budget: int
    control_fraction: float
    seed: int
    pool: int = Field(description="Waiting captures considered.")
    picked: list[PickedCapture]
    merged: dict[str, str] = Field(default_factory=dict, description="Near-duplicate id -> the id kept for it.")

    @property
    def picked_ids(self) -> list[str]:
        return [p.id for p in self.picked]


def _image(store: Store, record: CaptureRecord) -> Image.Image:
    with pillow_open()(io.BytesIO(store.get_blob(record.image_sha256))) as im:
        return im.convert("RGB")


def candidates(store: Store, records: Sequence[CaptureRecord],
               disagreement: Mapping[str, float] | None = None) -> list[Candidate]:
    """Scores (stored, else from the record's predictions), hash and embedding per capture."""
    out = []
    for r in records:
        im = _image(store, r)
        out.append(Candidate(id=r.id, scores=r.scores or score_record(r), embedding=thumbnail_embedding(im),
                             phash=dhash(im), disagreement=None if disagreement is None else disagreement.get(r.id)))
    return out


def plan_round(store: Store, records: Sequence[CaptureRecord], strategy: str, budget: int, *,
               model: str | None = None, by: str = "least_confidence", control_fraction: float = 0.1, seed: int = 0,
               quotas: Mapping[int, int] | None = None,
               disagreement: Mapping[str, float] | None = None) -> RoundPlan:
    """Pick up to ``budget`` of ``records`` by ``strategy`` (feedback.selection)."""
    pool = candidates(store, records, disagreement)
    chosen: Selection = select(pool, strategy, budget, by=by, control_fraction=control_fraction, seed=seed,
                               quotas=quotas)
    by_id = {c.id: c for c in pool}
    control = set(chosen.control)
    picked = [PickedCapture(id=i, scores=by_id[i].scores, control=i in control, disagreement=by_id[i].disagreement)
              for i in chosen.picked]
    return RoundPlan(model=model, strategy=strategy, by=chosen.by, budget=budget, control_fraction=control_fraction,
                     seed=seed, pool=len(records), picked=picked, merged=chosen.merged)


def record_round(store: Store, plan: RoundPlan) -> str:
    """Keep the round with the inbox: what a later analysis compares (strategy vs control)."""
    key = f"rounds/{plan.model or '_all'}/{plan.id}.json"
    store.write_bytes(key, plan.model_dump_json(indent=2).encode())
    return key
