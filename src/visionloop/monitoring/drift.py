"""Drift of prediction statistics between a reference window and a current window.

Inputs are capture records (what the server saw, with its predictions); the statistic is the
Population Stability Index (PSI) of two distributions: detection confidences and detections
per image. PSI < 0.1 is usually read as stable, 0.1-0.25 as moderate, > 0.25 as significant
drift. Pure functions on numpy arrays so they are easy to test and reuse.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
from pydantic import BaseModel, computed_field

from ..feedback.inbox import CaptureRecord

CONF_BINS = np.linspace(0.0, 1.0, 11)
COUNT_BINS = np.array([0, 1, 2, 3, 5, 8, 13, 10**9], dtype=float)


def psi(reference: np.ndarray, current: np.ndarray, bins: np.ndarray, eps: float = 1e-4) -> float:
    """Population Stability Index of two samples over fixed bins (0 when either is empty)."""
    if len(reference) == 0 or len(current) == 0:
        return 0.0
    ref = np.histogram(reference, bins=bins)[0].astype(float)
    cur = np.histogram(current, bins=bins)[0].astype(float)
    ref = np.clip(ref / ref.sum(), eps, None)
    cur = np.clip(cur / cur.sum(), eps, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


class WindowStats(BaseModel):
    images: int
    detections: int
    mean_confidence: float | None
    empty_fraction: float | None


class DriftReport(BaseModel):
    model: str
    since: str
    threshold: float
    reference: WindowStats
    current: WindowStats
    psi_confidence: float
    psi_detections_per_image: float

    @computed_field  # in the JSON too: a script need not redo the comparison
    @property
    def drifted(self) -> bool:
        return max(self.psi_confidence, self.psi_detections_per_image) > self.threshold


def _stats(records: list[CaptureRecord]) -> tuple[WindowStats, np.ndarray, np.ndarray]:
    confs = np.array([d.confidence for r in records for d in r.detections], dtype=float)
    counts = np.array([len(r.detections) for r in records], dtype=float)
    stats = WindowStats(
        images=len(records),
        detections=int(len(confs)),
        mean_confidence=float(confs.mean()) if len(confs) else None,
        empty_fraction=float((counts == 0).mean()) if len(counts) else None,
    )
    return stats, confs, counts


def parse_since(text: str) -> timedelta:
    """'24h', '30m', '7d' → timedelta; a clear error for anything else."""
    from ..errors import ValidationError

    units = {"m": "minutes", "h": "hours", "d": "days"}
    try:
        value, unit = float(text[:-1]), units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise ValidationError(f"bad --since {text!r}: use e.g. 30m, 24h or 7d") from None
    return timedelta(**{unit: value})


def drift_report(model: str, records: list[CaptureRecord], since: timedelta, threshold: float = 0.25,
                 now: datetime | None = None) -> DriftReport:
    """Records older than ``now - since`` are the reference, newer ones the current window."""
    cut = (now or datetime.now(timezone.utc)) - since
    ref = [r for r in records if datetime.fromisoformat(r.created_at) < cut]
    cur = [r for r in records if datetime.fromisoformat(r.created_at) >= cut]
    ref_stats, ref_conf, ref_counts = _stats(ref)
    cur_stats, cur_conf, cur_counts = _stats(cur)
    return DriftReport(
        model=model, since=cut.isoformat(), threshold=threshold, reference=ref_stats, current=cur_stats,
        psi_confidence=psi(ref_conf, cur_conf, CONF_BINS),
        psi_detections_per_image=psi(ref_counts, cur_counts, COUNT_BINS),
    )
