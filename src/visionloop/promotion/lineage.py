"""Promote and roll back: the champion lineage is the registry's alias history
(:mod:`visionloop.registry.aliases`). Promote pushes, rollback pops, so a rollback always
restores the champion before the current one, even after several moves. A forced promotion
is recorded on the version's tags."""

from __future__ import annotations

from datetime import datetime, timezone

from pydantic import BaseModel, Field

from .. import registry
from .compare import Comparison, compare
from .gate import Gate, GateDecision, decide

FORCED_TAG = "visionloop.promotion.forced"
PROMOTED_TAG = "visionloop.promotion.at"
GATE_TAG = "visionloop.promotion.gate"
ROLLED_BACK_TAG = "visionloop.rolled_back_at"


class PromotionResult(BaseModel):
    name: str
    version: str
    previous: str | None
    promoted: bool
    forced: bool = False
    decision: GateDecision | None = None
    comparison: Comparison | None = None
    history: list[str] = Field(default_factory=list)


class RollbackResult(BaseModel):
    name: str
    from_version: str
    to_version: str
    history: list[str]


def champion_history(name: str) -> list[str]:
    """Champions oldest first; the last one is the current champion."""
    return registry.lineage(name, registry.CHAMPION)


def promote(ref: str, *, force: bool = False, gate: Gate | None = None, data: str | None = None) -> PromotionResult:
    """Move ``champion`` to ``ref`` when it beats the current champion under the gate.

    Returns ``promoted=False`` with the reasons when the gate refuses (nothing changes);
    ``force`` promotes anyway and records that on the version.
    """
    mv = registry.resolve_version(ref)
    name, version = mv.name, mv.version
    gate = gate or Gate.load()
    history = champion_history(name)
    current = history[-1] if history else None
    if current == version:  # nothing to do (CI promotes on every merge, even without a new version)
        return PromotionResult(name=name, version=version, previous=current, promoted=False, history=history)
    cmp = decision = None
    if current is not None:
        cmp = compare(f"{name}/{current}", f"{name}/{version}", data)
        decision = decide(cmp, gate)
        if not decision.passed and not force:
            return PromotionResult(name=name, version=version, previous=current, promoted=False,
                                   decision=decision, comparison=cmp, history=history)
    forced = bool(force and decision is not None and not decision.passed)
    tags = {PROMOTED_TAG: datetime.now(timezone.utc).isoformat(timespec="seconds")}
    if decision is not None:
        low, high = decision.interval
        tags[GATE_TAG] = (f"{'passed' if decision.passed else 'refused'}: {decision.metric} {decision.delta:+.5f} "
                          f"[{low:+.5f}, {high:+.5f}] on {cmp.data if cmp else '-'}")  # display only; the decision is returned
    if forced:
        tags[FORCED_TAG] = "; ".join(decision.reasons)  # type: ignore[union-attr]
    registry.set_version_tags(name, version, tags)
    registry.set_alias(name, registry.CHAMPION, version)
    if registry.get_alias(name, registry.CHALLENGER) == version:  # it is no longer a challenger
        registry.delete_alias(name, registry.CHALLENGER)
    history = [*history, version]
    return PromotionResult(name=name, version=version, previous=current, promoted=True, forced=forced,
                           decision=decision, comparison=cmp, history=history)


def rollback(name: str) -> RollbackResult:
    """Restore the champion before the current one (and forget the current one's turn)."""
    change = registry.rollback_alias(name, registry.CHAMPION)
    registry.set_version_tags(name, change.previous, {ROLLED_BACK_TAG: change.at})
    return RollbackResult(name=name, from_version=change.previous or "", to_version=change.version,
                          history=champion_history(name))
