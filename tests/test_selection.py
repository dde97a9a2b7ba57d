"""Selection strategies for the labeling budget, on constructed pools with known answers."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from visionloop.feedback.scoring import ImageScores, score_detections
from visionloop.feedback.selection import (
    DEFAULT_STRATEGY,
    SINGLE_MODEL_STRATEGY,
    STRATEGIES,
    Candidate,
    coverage_radius,
    default_strategy,
    k_center_greedy,
    select,
)


def cand(i: int, lc: float, classes=(0,), emb=None, phash=None, dis=None, margin: float = 0.5) -> Candidate:
    scores = ImageScores(least_confidence=lc, margin=margin, entropy=0.5, close_to_threshold=0.5,
                         no_detection=not classes, detection_count=len(classes), classes=list(classes))
    return Candidate(id=f"c{i:03d}", scores=scores, embedding=emb, phash=phash, disagreement=dis)


def clusters(sizes=(40, 20, 10, 5, 2), spread=0.01, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Tight clusters of different sizes around far-apart centers: points (N, 8) and their cluster."""
    rng = np.random.default_rng(seed)
    centers = np.eye(8)[: len(sizes)] * 10
    x = np.concatenate([c + rng.normal(0, spread, (n, 8)) for c, n in zip(centers, sizes)])
    return x, np.repeat(np.arange(len(sizes)), sizes)


def pool(n: int = 50, seed: int = 0, **kw) -> list[Candidate]:
    rng = np.random.default_rng(seed)
    return [cand(i, float(v), **kw) for i, v in enumerate(rng.permutation(n) / n)]


def lc_of(cands: list[Candidate]) -> dict[str, float]:
    return {c.id: c.scores.least_confidence for c in cands}


# -- uncertainty and the control slice ------------------------------------------------------------------
def test_uncertainty_picks_the_top_by_score_plus_a_recorded_random_control():
    cands = pool(100)
    sel = select(cands, "uncertainty", 20)
    assert sel.strategy == "uncertainty" and sel.by == "least_confidence"
    assert len(sel.picked) == 20 and len(set(sel.picked)) == 20
    assert len(sel.control) == round(20 * 0.1) and set(sel.control) <= set(sel.picked)
    main = [i for i in sel.picked if i not in sel.control]
    top = sorted(cands, key=lambda c: -c.scores.least_confidence)[:18]
    assert main == [c.id for c in top]  # in pick order, most uncertain first
    assert sel.picked[-2:] == sel.control  # the control slice comes from what was left
    assert not set(sel.control) & {c.id for c in top}


def test_uncertainty_ranks_by_the_named_score():
    cands = [cand(i, lc=i / 10, margin=1 - i / 10) for i in range(10)]
    assert select(cands, "uncertainty", 3, by="margin", control_fraction=0).picked == ["c000", "c001", "c002"]
    assert select(cands, "uncertainty", 3, control_fraction=0).picked == ["c009", "c008", "c007"]


def test_control_size_follows_the_fraction():
    cands = pool(100)
    assert len(select(cands, "uncertainty", 30, control_fraction=0.2).control) == 6
    assert select(cands, "uncertainty", 5).control == []  # round(0.5) == 0
    assert len(select(cands, "uncertainty", 10).control) == 1
    c1, c2 = (select(cands, "uncertainty", 30, control_fraction=0.5, seed=s).control for s in (1, 2))
    assert c1 != c2


# -- diversity ------------------------------------------------------------------------------------------
def test_k_center_covers_better_than_random_and_picks_one_per_cluster():
    x, cluster = clusters()
    picks = k_center_greedy(x, 5, seed=3)
    assert sorted(cluster[picks]) == [0, 1, 2, 3, 4]
    random_radius = [coverage_radius(x, np.random.default_rng(s).choice(len(x), 5, replace=False)) for s in range(5)]
    assert coverage_radius(x, picks) < 0.1 < min(random_radius)


def test_k_center_starts_from_the_labeled_set():
    x, cluster = clusters()
    labeled = np.stack([x[cluster == c][0] for c in (0, 1, 2)])  # clusters 0..2 are already labeled
    assert sorted(cluster[k_center_greedy(x, 2, start=labeled)]) == [3, 4]


def test_coverage_radius():
    x = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])
    assert coverage_radius(x, [0]) == pytest.approx(10.0)
    assert coverage_radius(x, [1]) == pytest.approx(5.0)
    assert coverage_radius(x, [0, 1, 2]) == 0.0
    assert coverage_radius(x, []) == float("inf")


def test_diversity_strategy_picks_one_per_cluster():
    x, cluster = clusters()
    cands = [cand(i, 0.5, emb=e) for i, e in enumerate(x)]
    sel = select(cands, "diversity", 5, control_fraction=0)
    assert sorted(cluster[[int(i[1:]) for i in sel.picked]]) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="embedding"):
        select([cand(0, 0.5)], "diversity", 1)


def test_uncertainty_plus_diversity_picks_only_from_the_prefiltered_top():
    x, cluster = clusters()
    rng = np.random.default_rng(0)
    cands = [cand(i, float(u), emb=e) for i, (e, u) in enumerate(zip(x, rng.random(len(x))))]
    sel = select(cands, "uncertainty+diversity", 4, prefilter=2.0, control_fraction=0)
    top8 = {c.id for c in sorted(cands, key=lambda c: -c.scores.least_confidence)[:8]}
    assert len(sel.picked) == 4 and set(sel.picked) <= top8
    # spread out among them: no two picks from one cluster while the top set has more clusters
    top_clusters = {cluster[int(i[1:])] for i in top8}
    picked_clusters = [cluster[int(i[1:])] for i in sel.picked]
    assert len(set(picked_clusters)) == min(4, len(top_clusters))


# -- class balance and quotas ---------------------------------------------------------------------------
def test_class_balanced_picks_rare_classes_first():
    common = [cand(i, 0.9, classes=(1,)) for i in range(20)]
    rare = [cand(100 + i, 0.1, classes=(0,)) for i in range(2)]
    middle = [cand(200 + i, 0.5, classes=(2,)) for i in range(5)]
    by_id = {c.id: c for c in common + rare + middle}
    sel = select(list(by_id.values()), "class-balanced", 9, control_fraction=0)
    classes = [by_id[i].scores.classes[0] for i in sel.picked]
    # round robin, rarest class first: 0, 2, 1 | 0, 2, 1 | 2, 1 (0 is used up) | 2
    assert classes == [0, 2, 1, 0, 2, 1, 2, 1, 2]
    assert sel.picked[:2] == ["c100", "c200"]


def test_class_balanced_takes_the_most_uncertain_of_each_class():
    cands = [cand(i, i / 10, classes=(i % 2,)) for i in range(10)]
    sel = select(cands, "class-balanced", 4, control_fraction=0)
    assert sorted(sel.picked) == ["c006", "c007", "c008", "c009"]


@pytest.mark.parametrize("strategy", ["uncertainty", "random", "class-balanced", "diversity",
                                      "uncertainty+diversity", "disagreement"])
def test_quotas_hold_for_every_strategy(strategy):
    x, _ = clusters(sizes=(20, 20, 20))
    rng = np.random.default_rng(1)
    cands = [cand(i, float(rng.random()), classes=(int(rng.integers(0, 3)),), emb=e, dis=float(rng.random()))
             for i, e in enumerate(x)]
    sel = select(cands, strategy, 20, quotas={0: 2, 1: 5})
    by_id = {c.id: c for c in cands}
    per_class = Counter(k for i in sel.picked for k in set(by_id[i].scores.classes))
    assert per_class[0] <= 2 and per_class[1] <= 5
    assert len(sel.picked) == 20  # class 2 has no quota and enough images to fill the budget
    assert set(sel.control) <= set(sel.picked)


def test_a_quota_counts_every_class_an_image_predicts():
    cands = [cand(0, 0.9, classes=(0, 1)), cand(1, 0.8, classes=(1,)), cand(2, 0.7, classes=(0,))]
    assert select(cands, "uncertainty", 3, quotas={1: 1}, control_fraction=0).picked == ["c000", "c002"]


# -- near-duplicates ------------------------------------------------------------------------------------
def test_near_duplicates_are_merged_keeping_the_most_uncertain():
    h = 0xF0F0_F0F0_1234_5678
    cands = [cand(0, 0.5, phash=h), cand(1, 0.9, phash=h ^ 0b101), cand(2, 0.7, phash=h ^ 0xFFFF_0000),
             cand(3, 0.6, phash=h), cand(4, 0.1)]
    sel = select(cands, "uncertainty", 5, control_fraction=0)
    assert sel.merged == {"c000": "c001", "c003": "c001"}
    assert sel.picked == ["c001", "c002", "c004"]  # c002 is 18 bits from c001: not a duplicate
    assert select(cands, "uncertainty", 5, dedupe_distance=-1).merged == {}
    wide = select(cands, "random", 5, dedupe_distance=18)  # c002 is 18 bits from c001
    assert wide.merged == {"c000": "c001", "c002": "c001", "c003": "c001"} and sorted(wide.picked) == ["c001", "c004"]


def test_wide_hashes_are_compared_too():
    h = 1 << 200
    cands = [cand(0, 0.5, phash=h), cand(1, 0.9, phash=h | 1)]
    assert select(cands, "uncertainty", 2).merged == {"c000": "c001"}


# -- disagreement, random -------------------------------------------------------------------------------
def test_disagreement_ranks_by_candidate_disagreement():
    cands = [cand(i, lc=1 - i / 10, dis=i / 10) for i in range(10)]
    sel = select(cands, "disagreement", 3, control_fraction=0)
    assert sel.picked == ["c009", "c008", "c007"] and sel.by == "disagreement"
    with pytest.raises(ValueError, match="disagreement"):
        select(cands + [cand(99, 0.5)], "disagreement", 3)


def test_random_is_deterministic_per_seed():
    cands = pool(200)
    a, b, c = (select(cands, "random", 20, seed=s).picked for s in (7, 7, 8))
    assert a == b and a != c and len(set(a)) == 20


# -- errors and small pools -----------------------------------------------------------------------------
def test_bad_arguments_name_the_valid_choices():
    cands = pool(5)
    with pytest.raises(ValueError, match="|".join(["uncertainty, diversity, uncertainty\\+diversity"])):
        select(cands, "smart", 3)
    with pytest.raises(ValueError, match="least_confidence, margin, entropy, close_to_threshold"):
        select(cands, "uncertainty", 3, by="confidence")
    for budget in (0, -1, 2.5):
        with pytest.raises(ValueError, match="budget"):
            select(cands, "uncertainty", budget)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="control_fraction"):
        select(cands, "uncertainty", 3, control_fraction=1.5)
    assert set(STRATEGIES) == {"uncertainty", "diversity", "uncertainty+diversity", "class-balanced",
                               "disagreement", "random"}


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_budget_larger_than_the_pool_picks_the_whole_deduped_pool(strategy):
    x, _ = clusters(sizes=(3, 3))
    cands = [cand(i, (i + 1) / 10, emb=e, phash=None if i else 0, dis=0.5) for i, e in enumerate(x)]
    cands.append(cand(9, 0.0, emb=x[0], phash=1, dis=0.5))  # a near-duplicate of c000
    sel = select(cands, strategy, 50)
    assert sorted(sel.picked) == [f"c00{i}" for i in range(6)]
    assert sel.merged == {"c009": "c000"}
    assert select([], strategy, 5).picked == []


def test_selection_on_real_scores():
    """The pieces fit: scores computed from boxes, then ranked."""
    confs = [[0.9, 0.95], [0.3], [], [0.6, 0.26]]
    cands = [Candidate(id=str(i), scores=score_detections(np.array(c), None, 0.25, aggregate="max"))
             for i, c in enumerate(confs)]
    assert select(cands, "uncertainty", 2, control_fraction=0).picked == ["2", "3"]
    # the default aggregate is the mean: image 3's confident-ish 0.6 box now counts
    means = [Candidate(id=str(i), scores=score_detections(np.array(c), None, 0.25)) for i, c in enumerate(confs)]
    assert select(means, "uncertainty", 2, control_fraction=0).picked == ["2", "1"]
    assert select(cands, "uncertainty", 2, by="close_to_threshold", control_fraction=0).picked == ["3", "1"]


def test_the_default_follows_the_bench():
    """bench/RESULTS.md: disagreement when a second model exists, else random."""
    assert default_strategy(True) == DEFAULT_STRATEGY == "disagreement"
    assert default_strategy(False) == SINGLE_MODEL_STRATEGY == "random"
    assert {DEFAULT_STRATEGY, SINGLE_MODEL_STRATEGY} <= set(STRATEGIES)
