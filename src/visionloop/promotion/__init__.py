"""Compare two model versions on one frozen test split, gate a promotion, roll back.

Both models are evaluated by the same function on the same images (the test split of one
dataset version; the hash split keeps it free of training images for every version), so
"better" means better on identical data. The gate (``gate:`` in visionloop.yaml) asks that
the lower bound of a paired-bootstrap interval of the gain in the task's metric (mAP50-95 for
detection, top-1 for classification) exceed ``min_delta``, that no class lose more than
``max_class_drop`` (AP50-95, or accuracy), and that the frozen original test images (those of
the dataset's first version) not regress by more than that either. Models of different tasks
are never compared.

Modules: ``compare`` (cached evaluations, the comparison), ``bootstrap`` (the interval),
``gate`` (the decision), ``lineage`` (promote, rollback: the registry's alias history).
"""

from __future__ import annotations

from ..datasets.catalog import Catalog
from ..store import open_store
from .compare import Comparison, MetricRow, cached_evaluation, compare, comparison_rows, default_dataset, evaluate_cached
from .gate import Gate, GateDecision, SetResult, decide
from .lineage import (
    FORCED_TAG,
    GATE_TAG,
    PROMOTED_TAG,
    ROLLED_BACK_TAG,
    PromotionResult,
    RollbackResult,
    champion_history,
    promote,
    rollback,
)

__all__ = [
    "FORCED_TAG", "GATE_TAG", "PROMOTED_TAG", "ROLLED_BACK_TAG", "Catalog", "Comparison", "Gate", "GateDecision",
    "MetricRow", "PromotionResult", "RollbackResult", "SetResult", "cached_evaluation", "champion_history", "compare",
    "comparison_rows", "decide", "default_dataset", "evaluate_cached", "open_store", "promote", "rollback",
]
