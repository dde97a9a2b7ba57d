"""Aliases and THE alias history: one stack per alias, kept as a registered-model tag.

``set_alias`` pushes (a promotion), ``rollback_alias`` pops back to the version below (a
rollback), so a rollback always restores the one before the current, even after several
moves. When someone else moved the alias (the MLflow UI, another tool), the history
follows it: the alias's current version counts as pushed.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from pydantic import BaseModel, ValidationError as PydanticError

from ..errors import ConflictError, NotFoundError
from .client import client
from .refs import check_alias
from .versions import get_version, registered

HISTORY_PREFIX = "visionloop.alias_history."
_KEEP = 50  # entries per alias; older ones are dropped


class AliasChange(BaseModel):
    alias: str
    version: str
    previous: str | None = None
    at: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _history(name: str, alias: str) -> tuple[list[AliasChange], str | None]:
    """The stored stack (following a move made by someone else) and where the alias points."""
    rm = registered(name)
    current = (rm.aliases or {}).get(alias)
    current = str(current) if current is not None else None
    try:
        raw = json.loads((rm.tags or {}).get(HISTORY_PREFIX + alias, "[]"))
        stack = [AliasChange.model_validate(e) for e in raw]
    except (json.JSONDecodeError, TypeError, PydanticError):
        stack = []
    if current is not None and (not stack or stack[-1].version != current):
        stack.append(AliasChange(alias=alias, version=current, previous=stack[-1].version if stack else None))
    return stack, current


def _save(name: str, alias: str, stack: list[AliasChange]) -> None:
    value = json.dumps([c.model_dump() for c in stack[-_KEEP:]])
    client().set_registered_model_tag(name, HISTORY_PREFIX + alias, value)


def alias_history(name: str, alias: str) -> list[AliasChange]:
    """The alias's stack, oldest first; the last entry is where the alias points now."""
    return _history(name, alias)[0]


def lineage(name: str, alias: str) -> list[str]:
    """The versions of :func:`alias_history`, oldest first."""
    return [c.version for c in alias_history(name, alias)]


def set_alias(name: str, alias: str, version: str | int) -> AliasChange:
    """Point ``alias`` at ``version`` and push the move onto the alias's history."""
    check_alias(alias)
    version = get_version(name, version).version  # clear error for unknown versions
    stack, previous = _history(name, alias)
    change = AliasChange(alias=alias, version=version, previous=previous, at=_now())
    client().set_registered_model_alias(name, alias, version)
    if not stack or stack[-1].version != version:
        _save(name, alias, [*stack, change])
    return change


def rollback_alias(name: str, alias: str) -> AliasChange:
    """Move ``alias`` back to the version below the current one and pop the current one."""
    stack = alias_history(name, alias)
    if not stack:
        raise NotFoundError(f"model {name} has no {alias} to roll back")
    if len(stack) < 2:
        raise ConflictError(f"model {name} has no previous {alias} (history: {','.join(c.version for c in stack)})")
    current, below = stack[-1], stack[-2]
    client().set_registered_model_alias(name, alias, below.version)
    _save(name, alias, stack[:-1])
    return AliasChange(alias=alias, version=below.version, previous=current.version, at=_now())


def delete_alias(name: str, alias: str) -> None:
    """Unset ``alias`` (its history stays: a later set pushes on top of it)."""
    if (registered(name).aliases or {}).get(alias) is not None:
        client().delete_registered_model_alias(name, alias)
