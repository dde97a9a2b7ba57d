"""`visionloop models compare | promote | rollback` (added to the `models` group by cli/__init__.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from ..errors import ConflictError
from .console import console, err_console
from .tables import comparison_table, gate_table

CONFIG_HELP = "visionloop.yaml with the gate: section (min_delta, max_class_drop, confidence, resamples, seed)."


def compare(
    a: str = typer.Argument(..., help="Baseline model, e.g. M@champion or M/3."),
    b: str = typer.Argument(..., help="Challenger model, e.g. M/5."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset N@V whose test split both are evaluated on "
                                       "(default: the newer of the two models' training datasets)."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print the comparison (and the gate's view) as JSON."),
) -> None:
    """Evaluate two models on the same frozen test split: metric | A | B | change, and the gate's
    interval on all, frozen and added test images."""
    from .. import promotion

    gate = promotion.Gate.load(config)
    with err_console.status("evaluating both models on the same test split"):
        cmp = promotion.compare(a, b, data)
        decision = promotion.decide(cmp, gate)
    if json_out:
        body = json.loads(cmp.model_dump_json(exclude={"a_eval", "b_eval"}))
        typer.echo(json.dumps({**body, "gate": json.loads(decision.model_dump_json())}, indent=2))
    else:
        console.print(comparison_table(cmp))
        console.print(gate_table(decision, cmp))


def promote(
    ref: str = typer.Argument(..., help="The version to make champion, e.g. M/5."),
    force: bool = typer.Option(False, "--force", help="Promote even when the gate refuses (recorded on the version)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset N@V to compare on (default: see compare)."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
) -> None:
    """Move `champion` to REF when it beats the current champion under the gate."""
    from .. import promotion

    gate = promotion.Gate.load(config)
    with err_console.status("comparing with the champion"):
        res = promotion.promote(ref, force=force, gate=gate, data=data)
    if res.comparison is not None:
        console.print(comparison_table(res.comparison))
        if res.decision is not None:
            console.print(gate_table(res.decision, res.comparison))
    if not res.promoted and res.decision is None:
        console.print(f"{res.name}/{res.version} is already the champion; nothing changed")
        return
    if not res.promoted:
        raise ConflictError(f"gate refused {res.name}/{res.version}: {'; '.join(res.decision.reasons)} "
                            f"(champion stays {res.name}/{res.previous}; --force to override)")
    how = "FORCED past the gate" if res.forced else ("gate passed: " + res.decision.summary() if res.decision else "first champion")
    console.print(f"{res.name}@champion: {res.previous or '-'} -> {res.version} ({how}); history {','.join(res.history)}")


def rollback(name: str = typer.Argument(..., help="Registered model name.")) -> None:
    """Restore the previous champion."""
    from .. import promotion

    res = promotion.rollback(name)
    console.print(f"{res.name}@champion: {res.from_version} -> {res.to_version} (rolled back); "
                  f"history {','.join(res.history)}")
