"""`visionloop report` (markdown for a pull request) and `visionloop init --ci github`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..errors import ValidationError
from .console import console, err_console


def report(
    model: Optional[str] = typer.Option(None, "--model", help="Registered model name: reports NAME@latest vs NAME@champion."),
    new: Optional[str] = typer.Option(None, "--new", help="The new model ref (default: MODEL@latest)."),
    old: Optional[str] = typer.Option(None, "--old", help="The baseline ref (default: the champion)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset N@V to evaluate on (default: the newer training dataset)."),
    out: Path = typer.Option(Path("report.md"), "--out", help="Markdown file to write (plots go to <stem>_assets/)."),
    config: Optional[Path] = typer.Option(None, "--config", help="visionloop.yaml with the gate: section."),
) -> None:
    """Write report.md: old | new | change metrics, the gate's verdict, the data diff, plots."""
    from .. import reports
    from ..promotion import Gate

    if not (model or new):
        raise ValidationError("report needs --model NAME or --new REF")
    gate = Gate.load(config)
    with err_console.status("evaluating on the frozen test split"):
        rep = reports.build(new or f"{model}@latest", old, data, out, gate)
    verdict = "" if rep.decision is None else f" (gate {'passed' if rep.decision.passed else 'refused'})"
    console.print(f"wrote {out}: {rep.old or '-'} vs {rep.new}{verdict}")


def init(
    ci: str = typer.Option("github", "--ci", help="CI system (github)."),
    data: Optional[str] = typer.Option(None, "--data", help="Dataset to train on (default: train.data in visionloop.yaml)."),
    model: Optional[str] = typer.Option(None, "--model", help="Registered model name (default: train.name in visionloop.yaml)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing workflow."),
) -> None:
    """Write .github/workflows/visionloop.yml: train + report on push, promote on merge to main."""
    from ..ci import write_workflow
    from ..training.config import load_file

    if ci != "github":
        raise ValidationError(f"--ci {ci!r}: only github is supported")
    cfg = load_file(None)
    path = write_workflow(Path.cwd(), data or str(cfg.get("data") or ""), model or str(cfg.get("name") or ""), force)
    console.print(f"wrote {path}: on push train, compare with the champion and post report.md (CML); "
                  "on merge to main promote")
