"""Drift of what one model version sees: a recent window of the prediction log against a reference.

The reference is the version's first window of the same length (``first-window``) or its
predictions on its own test split (``test``, see :mod:`.reference`). Each feature is compared with
the Population Stability Index (PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 significant) and,
for continuous ones, the two-sample Kolmogorov-Smirnov statistic (numpy only: the serve extra
has no scipy). The verdict uses PSI; KS is evidence shown beside it. PSI bins shrink with the
window so that sampling noise alone stays well below the threshold on small windows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, computed_field

from .predlog import PredictionRecord, first_timestamp, latest_version, read_predictions

if TYPE_CHECKING:
    from ..store import Store

Verdict = Literal["ok", "drift", "insufficient_data"]
ReferenceKind = Literal["first-window", "test"]
EXIT_CODES: dict[str, int] = {"ok": 0, "drift": 3, "insufficient_data": 4}
EPS = 1e-4
ALPHA = 0.01  # chi-square level below which a large PSI is not sampling noise
MAX_BINS = 10
PER_BIN = 25  # records per PSI bin at least: 30 records get 2 bins, 250 or more get 10


# -- statistics -----------------------------------------------------------------------------
def categorical_counts(ref: dict[str, float], cur: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Counts of two categorical samples over the union of their categories."""
    keys = sorted(set(ref) | set(cur))
    return (np.array([ref.get(k, 0.0) for k in keys], dtype=float),
            np.array([cur.get(k, 0.0) for k in keys], dtype=float))


def bin_counts(reference: np.ndarray, current: np.ndarray, bins: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Counts per bin: per value when there are few distinct ones (image sizes, counts), else per
    quantile bin of the reference (``bins``; by default fewer for small samples)."""
    if len(reference) == 0 or len(current) == 0:
        return np.zeros(0), np.zeros(0)
    values = np.unique(np.concatenate([reference, current]))
    k = bins or int(np.clip(min(len(reference), len(current)) // PER_BIN, 2, MAX_BINS))
    if len(values) > k:
        values = np.unique(np.quantile(reference, np.linspace(0, 1, k + 1)[1:-1]))
        side = "right"
    else:
        side = "left"  # one bin per distinct value: searchsorted finds its own index
    n = len(values) + (side == "right")
    return (np.bincount(np.searchsorted(values, reference, side=side), minlength=n).astype(float),
            np.bincount(np.searchsorted(values, current, side=side), minlength=n).astype(float))


def psi(ref: np.ndarray, cur: np.ndarray, eps: float = EPS) -> float:
    """PSI of two histograms over the same bins (0 when either is empty)."""
    if ref.sum() == 0 or cur.sum() == 0:
        return 0.0
    r = np.clip(ref / ref.sum(), eps, None)
    c = np.clip(cur / cur.sum(), eps, None)
    return float(np.sum((c - r) * np.log(c / r)))


def chi2_pvalue(ref: np.ndarray, cur: np.ndarray) -> float:
    """p-value of the chi-square test that two histograms come from one distribution: a PSI
    over the threshold counts as drift only when sampling noise cannot explain it."""
    keep = (ref + cur) > 0
    table = np.stack([ref[keep], cur[keep]])
    df = table.shape[1] - 1
    if df < 1 or table.sum(axis=1).min() == 0:
        return 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    return chi2_sf(float(np.sum((table - expected) ** 2 / expected)), df)


def chi2_sf(x: float, df: int) -> float:
    """Survival function of the chi-square distribution, integer ``df`` (closed form, no scipy)."""
    h = x / 2
    if df % 2 == 0:
        terms = [h**i / math.factorial(i) for i in range(df // 2)]
        return min(1.0, math.exp(-h) * sum(terms))
    terms = [h ** (i - 0.5) / math.gamma(i + 0.5) for i in range(1, (df + 1) // 2)]
    return min(1.0, math.erfc(math.sqrt(h)) + math.exp(-h) * sum(terms))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic D and its asymptotic p-value."""
    if len(a) == 0 or len(b) == 0:
        return 0.0, 1.0
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, side="right") / len(a)
                            - np.searchsorted(b, grid, side="right") / len(b))))
    en = np.sqrt(len(a) * len(b) / (len(a) + len(b)))
    lam = (en + 0.12 + 0.11 / en) * d  # Stephens' small-sample correction
    j = np.arange(1, 101)
    p = float(np.clip(2 * np.sum((-1.0) ** (j - 1) * np.exp(-2 * (lam * j) ** 2)), 0.0, 1.0)) if lam > 0 else 1.0
    return d, p


# -- features -------------------------------------------------------------------------------
def _confidences(rs: Sequence[PredictionRecord]) -> np.ndarray:
    return np.array([c for r in rs for c in r.confidences], dtype=float)


def _column(get: Callable[[PredictionRecord], float]) -> Callable[[Sequence[PredictionRecord]], np.ndarray]:
    return lambda rs: np.array([get(r) for r in rs], dtype=float)


CONTINUOUS: dict[str, tuple[Callable[[Sequence[PredictionRecord]], np.ndarray], bool]] = {
    # name: (values of a window, KS fits)
    "confidence": (_confidences, True),
    "detections_per_image": (_column(lambda r: sum(r.classes.values())), False),
    "width": (_column(lambda r: r.width), True),
    "height": (_column(lambda r: r.height), True),
    "brightness": (_column(lambda r: r.brightness), True),
}


def class_mix(rs: Sequence[PredictionRecord]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for r in rs:
        total.update(r.classes)
    return {k: float(v) for k, v in total.items()}


class FeatureDrift(BaseModel):
    name: str
    psi: float
    p_value: float  # chi-square test on the same bins as the PSI
    ks: float | None = None  # KS statistic D (continuous features only)
    ks_pvalue: float | None = None
    drifted: bool


class WindowSummary(BaseModel):
    start: str | None
    end: str | None
    records: int
    detections: int
    mean_confidence: float | None
    mean_brightness: float | None


class MonitorReport(BaseModel):
    model: str
    version: str | None
    reference_kind: ReferenceKind
    window_s: float  # the length of each window, seconds
    threshold: float
    min_records: int
    verdict: Verdict
    reason: str  # one line a person can read
    reference: WindowSummary
    current: WindowSummary
    features: list[FeatureDrift] = []

    @computed_field  # in the JSON too: a scheduler acts on it without redoing the comparison
    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.verdict]

    @property
    def drifted_features(self) -> list[str]:
        return [f.name for f in self.features if f.drifted]


def summarize(rs: Sequence[PredictionRecord]) -> WindowSummary:
    confs = _confidences(rs)
    when = lambda ts: datetime.fromtimestamp(ts, timezone.utc).isoformat()  # noqa: E731
    return WindowSummary(
        start=when(rs[0].ts) if rs else None, end=when(rs[-1].ts) if rs else None, records=len(rs),
        detections=int(sum(sum(r.classes.values()) for r in rs)),
        mean_confidence=float(confs.mean()) if len(confs) else None,
        mean_brightness=float(np.mean([r.brightness for r in rs])) if rs else None,
    )


def compare(reference: Sequence[PredictionRecord], current: Sequence[PredictionRecord],
            threshold: float, alpha: float = ALPHA) -> list[FeatureDrift]:
    """Every feature of two windows: PSI and chi-square p on shared bins, KS where it fits."""
    out = []
    for name, (values, ks_fits) in CONTINUOUS.items():
        a, b = values(reference), values(current)
        d, p = ks_2samp(a, b) if ks_fits else (None, None)
        out.append(_feature(name, *bin_counts(a, b), threshold, alpha, ks=d, ks_pvalue=p))
    out.append(_feature("class_mix", *categorical_counts(class_mix(reference), class_mix(current)), threshold, alpha))
    return out


def _feature(name: str, ref: np.ndarray, cur: np.ndarray, threshold: float, alpha: float,
             ks: float | None = None, ks_pvalue: float | None = None) -> FeatureDrift:
    value, p = psi(ref, cur), chi2_pvalue(ref, cur)
    return FeatureDrift(name=name, psi=value, p_value=p, ks=ks, ks_pvalue=ks_pvalue,
                        drifted=value > threshold and p < alpha)


# -- the verdict ----------------------------------------------------------------------------
def monitor(store: Store, model: str, *, version: str | None = None, since: timedelta,
            reference: ReferenceKind = "first-window", threshold: float = 0.25, min_records: int = 30,
            now: datetime | None = None,
            test_reference: Callable[[str, str], list[PredictionRecord]] | None = None) -> MonitorReport:
    """Compare ``model``'s last ``since`` with a reference, for one version (default: the one
    that served most recently). ``test_reference(model, version)`` overrides how the test-split
    predictions are made (tests; the default runs the served runtime on the split)."""
    now = now or datetime.now(timezone.utc)
    version = version or latest_version(store, model)
    base = dict(model=model, version=version, reference_kind=reference, window_s=since.total_seconds(),
                threshold=threshold, min_records=min_records)
    if version is None:
        empty = summarize([])
        return MonitorReport(**base, verdict="insufficient_data", reason=f"no predictions logged for {model!r}",
                             reference=empty, current=empty)
    if reference == "test":
        ref = (test_reference or _test_reference)(model, version)
        current = read_predictions(store, model, version, since=now - since, until=now)
    else:
        ref, current = _first_and_current(store, model, version, since, now)
    report = dict(base, reference=summarize(ref), current=summarize(current))
    short = [f"{name} has {len(rs)} records" for name, rs in (("current window", current), ("reference", ref))
             if len(rs) < min_records]
    if short:
        return MonitorReport(**report, verdict="insufficient_data",
                             reason=f"{' and '.join(short)} (fewer than {min_records})")
    features = compare(ref, current, threshold)
    drifted = [f"{f.name} (PSI {f.psi:.2f})" for f in features if f.drifted]
    return MonitorReport(**report, features=features, verdict="drift" if drifted else "ok",
                         reason=f"drift in {', '.join(drifted)}" if drifted else f"no feature drifted (PSI over {threshold} at p < {ALPHA})")


def _first_and_current(store: Store, model: str, version: str, since: timedelta,
                       now: datetime) -> tuple[list[PredictionRecord], list[PredictionRecord]]:
    """The version's first window and its last one, never sharing a record; only those two
    windows are read (weeks of log stay on disk)."""
    first = first_timestamp(store, model, version)
    first = now.timestamp() if first is None else first
    margin = timedelta(milliseconds=1)  # datetime rounds to microseconds
    start = datetime.fromtimestamp(first, timezone.utc)
    ref = [r for r in read_predictions(store, model, version, since=start - margin, until=min(now, start + since + margin))
           if r.ts < first + since.total_seconds()]
    cut = max((now - since).timestamp(), ref[-1].ts if ref else float("-inf"))
    return ref, [r for r in read_predictions(store, model, version, since=now - since, until=now) if r.ts > cut]


def _test_reference(model: str, version: str) -> list[PredictionRecord]:
    from .reference import test_split_predictions

    return test_split_predictions(model, version)


def parse_since(text: str) -> timedelta:
    """'24h', '30m', '7d' → timedelta; a clear error for anything else."""
    from ..errors import ValidationError

    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
    try:
        value, unit = float(text[:-1]), units[text[-1]]
    except (KeyError, ValueError, IndexError):
        raise ValidationError(f"bad --since {text!r}: use e.g. 30m, 24h or 7d") from None
    if value <= 0:
        raise ValidationError(f"bad --since {text!r}: must be positive")
    return timedelta(**{unit: value})
