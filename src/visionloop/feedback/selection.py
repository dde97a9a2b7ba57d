"""Which B images of the inbox go to human labeling (``label push --strategy S --budget B``).

Every strategy runs on the same pool: near-duplicates (difference hashes a few bits apart) are
merged first, keeping the most uncertain, so a burst of frames costs one label. Per-class
``quotas`` cap how many images predicting a class are picked, under every strategy. A random
control slice (10% by default) is picked last from what is left and recorded, so the value of
the strategy can be measured against random picks from the same inbox.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .scoring import SCORES, ChoiceError, ImageScores, check_choice, hamming

STRATEGIES: tuple[str, ...] = ("uncertainty", "diversity", "uncertainty+diversity", "class-balanced",
                               "disagreement", "random")
# Chosen by bench/active_learning.py (bench/RESULTS.md "Active learning"): disagreement had the
# highest final mAP50-95 on both RPS and generated shapes; with a single model no score-based
# strategy beat random on RPS (random beat uncertainty by more than the seed spread at 80 labels).
DEFAULT_STRATEGY = "disagreement"  # when two models differ (champion, challenger)
SINGLE_MODEL_STRATEGY = "random"  # otherwise


def default_strategy(two_models: bool) -> str:
    return DEFAULT_STRATEGY if two_models else SINGLE_MODEL_STRATEGY
_CHUNK = 4096  # rows per block of a distance computation (bounds memory on big pools)


@dataclass(frozen=True)
class Candidate:
    id: str
    scores: ImageScores
    embedding: np.ndarray | None = None
    phash: int | None = None
    disagreement: float | None = None


@dataclass(frozen=True)
class Selection:
    strategy: str
    picked: list[str]  # ids, in pick order, len <= budget
    control: list[str]  # the random control slice: a subset of picked, recorded
    merged: dict[str, str]  # near-duplicate id -> id of the kept image it was merged into
    by: str  # the score used for ranking


# -- k-center -------------------------------------------------------------------------------------
def _min_dist(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Euclidean distance of each row of ``x`` to its nearest row of ``centers`` (blockwise)."""
    out = np.full(len(x), np.inf)
    x2 = (x * x).sum(axis=1)
    for s in range(0, len(centers), _CHUNK):
        c = centers[s:s + _CHUNK]
        d2 = x2[:, None] - 2 * x @ c.T + (c * c).sum(axis=1)[None, :]
        out = np.minimum(out, np.sqrt(np.clip(d2, 0, None)).min(axis=1))
    return out


def _k_center(x: np.ndarray, k: int, start: np.ndarray | None, seed: int,
              admit: Callable[[int], bool] = lambda i: True) -> list[int]:
    """Greedy k-center: each pick is the admitted point farthest from everything picked (and from
    ``start``). ``admit`` is called once per proposal and must accept it, or the point is dropped
    for good (quotas only tighten)."""
    dist = _min_dist(x, start) if start is not None and len(start) else np.full(len(x), np.inf)
    alive = np.ones(len(x), bool)
    picked: list[int] = []
    first = np.isinf(dist).all()
    rng = np.random.default_rng(seed)
    while len(picked) < k and alive.any():
        if first:  # nothing to be far from yet: a seeded random first center
            i = int(rng.choice(np.flatnonzero(alive)))
        else:
            i = int(np.argmax(np.where(alive, dist, -1.0)))
        alive[i] = False
        if not admit(i):
            continue
        first = False
        picked.append(i)
        dist = np.minimum(dist, np.sqrt(((x - x[i]) ** 2).sum(axis=1)))
    return picked


def k_center_greedy(embeddings: np.ndarray, k: int, start: np.ndarray | None = None, seed: int = 0) -> list[int]:
    """``k`` indices that cover ``embeddings`` (N, d) well: a 2-approximation of the smallest
    :func:`coverage_radius`. ``start`` (M, d) are points already covered (the labeled set)."""
    x = np.asarray(embeddings, dtype=np.float64)
    s = None if start is None else np.asarray(start, dtype=np.float64).reshape(-1, x.shape[1])
    return _k_center(x, min(k, len(x)), s, seed)


def coverage_radius(embeddings: np.ndarray, centers: Sequence[int]) -> float:
    """Max distance of any point to its nearest center (lower = the centers cover the pool better)."""
    x = np.asarray(embeddings, dtype=np.float64)
    if len(x) == 0:
        return 0.0
    if len(centers) == 0:
        return float("inf")
    return float(_min_dist(x, x[list(centers)]).max())


# -- the pool ---------------------------------------------------------------------------------------
class _Quota:
    """Images picked per predicted class, against ``quotas`` (classes without one are unlimited)."""

    def __init__(self, pool: Sequence[Candidate], quotas: Mapping[int, int] | None):
        self.classes = [set(c.scores.classes) for c in pool]
        self.quotas = dict(quotas or {})
        self.used: Counter[int] = Counter()

    def take(self, i: int) -> bool:
        """Count image ``i`` if every class it predicts has room left; whether it was counted."""
        if any(self.used[c] >= self.quotas[c] for c in self.classes[i] if c in self.quotas):
            return False
        self.used.update(self.classes[i])
        return True


def _dedupe(candidates: Sequence[Candidate], key: np.ndarray, distance: int) -> tuple[list[int], dict[str, str]]:
    """Indices kept (in input order) and merged id -> kept id; the most uncertain of a group is kept."""
    hashes = [c.phash for c in candidates]
    fits = all(h is None or 0 <= h < 1 << 64 for h in hashes)  # 64-bit hashes compare in numpy
    table = np.zeros(len(candidates), np.uint64)
    hashed: list[int] = []  # kept indices that have a hash, parallel to table[:len(hashed)]
    kept: list[int] = []
    merged: dict[str, str] = {}
    for i in sorted(range(len(candidates)), key=lambda i: -key[i]):
        h = hashes[i]
        if h is not None and distance >= 0 and hashed:
            if fits:
                near = np.flatnonzero(np.bitwise_count(table[:len(hashed)] ^ np.uint64(h)) <= distance)
            else:
                near = [n for n, j in enumerate(hashed) if hamming(h, hashes[j]) <= distance]  # type: ignore[arg-type]
            if len(near):
                merged[candidates[i].id] = candidates[hashed[int(near[0])]].id
                continue
        kept.append(i)
        if h is not None:
            if fits:
                table[len(hashed)] = h
            hashed.append(i)
    return sorted(kept), merged


def _in_order(order: Sequence[int], n: int, quota: _Quota) -> list[int]:
    out: list[int] = []
    for i in order:
        if len(out) == n:
            break
        if quota.take(i):
            out.append(i)
    return out


def _class_balanced(pool: Sequence[Candidate], by_uncertainty: list[int], n: int, quota: _Quota) -> list[int]:
    """Round robin over predicted classes, rarest in the pool first, most uncertain image of each
    class at each turn; images with no predicted class form one more class."""
    classes = [sorted(set(c.scores.classes)) or [None] for c in pool]
    freq = Counter(k for ks in classes for k in ks)
    queues = {k: deque(i for i in by_uncertainty if k in classes[i])
              for k in sorted(freq, key=lambda k: (freq[k], -1 if k is None else k))}
    out: list[int] = []
    taken: set[int] = set()
    while len(out) < n and any(queues.values()):
        for q in queues.values():
            while q and len(out) < n:
                i = q.popleft()
                if i not in taken and quota.take(i):
                    taken.add(i)
                    out.append(i)
                    break
    return out


def _embeddings(pool: Sequence[Candidate], idx: Sequence[int]) -> np.ndarray:
    missing = [pool[i].id for i in idx if pool[i].embedding is None]
    if missing:
        raise ChoiceError(f"diversity needs an embedding for every candidate; {len(missing)} have none "
                          f"(e.g. {missing[0]})")
    return np.stack([np.asarray(pool[i].embedding, dtype=np.float64).reshape(-1) for i in idx])


def select(candidates: Sequence[Candidate], strategy: str, budget: int, *, by: str = "least_confidence",
           control_fraction: float = 0.1, seed: int = 0, prefilter: float = 3.0, dedupe_distance: int = 4,
           quotas: Mapping[int, int] | None = None, labeled_embeddings: np.ndarray | None = None) -> Selection:
    """Up to ``budget`` candidates to label by ``strategy`` (one of :data:`STRATEGIES`), ranking
    by the score ``by`` (one of :data:`SCORES`). ``dedupe_distance`` < 0 merges nothing."""
    check_choice("strategy", strategy, STRATEGIES)
    check_choice("score", by, SCORES)
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
        raise ChoiceError(f"budget must be a whole number of at least 1, not {budget!r}")
    if not 0 <= control_fraction <= 1:
        raise ChoiceError(f"control_fraction must be within [0, 1], not {control_fraction!r}")
    if prefilter < 1:
        raise ChoiceError(f"prefilter must be at least 1 (a multiple of the budget), not {prefilter!r}")
    if len({c.id for c in candidates}) != len(candidates):
        raise ChoiceError("candidate ids must be unique")
    if strategy == "disagreement":
        missing = [c.id for c in candidates if c.disagreement is None]
        if missing:
            raise ChoiceError(f"strategy disagreement needs Candidate.disagreement; {len(missing)} have none "
                              f"(e.g. {missing[0]})")
        by = "disagreement"
    key = np.array([c.disagreement if by == "disagreement" else c.scores.value(by) for c in candidates], np.float64)
    kept, merged = _dedupe(candidates, key, dedupe_distance)
    pool = [candidates[i] for i in kept]
    key = key[kept]
    by_uncertainty = sorted(range(len(pool)), key=lambda i: -key[i])  # stable: ties keep input order
    rng = np.random.default_rng(seed)
    n_control = min(round(budget * control_fraction), budget)
    n_main = budget - n_control
    quota = _Quota(pool, quotas)
    start = None if labeled_embeddings is None else np.asarray(labeled_embeddings, np.float64)

    if strategy in ("uncertainty", "disagreement"):
        main = _in_order(by_uncertainty, n_main, quota)
    elif strategy == "random":
        main = _in_order(rng.permutation(len(pool)).tolist(), n_main, quota)
    elif strategy == "class-balanced":
        main = _class_balanced(pool, by_uncertainty, n_main, quota)
    else:  # diversity, uncertainty+diversity: k-center, the latter among the most uncertain only
        idx = by_uncertainty[:int(np.ceil(prefilter * budget))] if strategy == "uncertainty+diversity" \
            else list(range(len(pool)))
        if idx and n_main:
            x = _embeddings(pool, idx)
            s = None if start is None else start.reshape(-1, x.shape[1])
            main = [idx[j] for j in _k_center(x, n_main, s, seed, admit=lambda j: quota.take(idx[j]))]
        else:
            main = []

    chosen = set(main)
    rest = [i for i in rng.permutation(len(pool)).tolist() if i not in chosen]
    control = _in_order(rest, n_control, quota)
    return Selection(strategy=strategy, picked=[pool[i].id for i in main + control],
                     control=[pool[i].id for i in control], merged=merged, by=by)
