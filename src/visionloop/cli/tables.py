"""Rich tables shared by several commands (``models compare|promote``, ``loop``, ``demo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from ..promotion import Comparison, GateDecision


def _change(value: float, color: bool) -> str:
    style = "green" if value > 1e-9 else ("red" if value < -1e-9 else "")
    text = f"{value:+.4f}"
    return f"[{style}]{text}[/]" if style and color else text


def comparison_table(cmp: Comparison, title: str | None = None, a_label: str | None = None,
                     b_label: str | None = None, color: bool = True) -> Table:
    """metric | A | B | change (green when B gained, red when it lost)."""
    t = Table(title=title or f"{cmp.a} vs {cmp.b} on {cmp.data} ({cmp.split}, {cmp.images} images)")
    t.add_column("metric")
    t.add_column(a_label or f"A: {cmp.a}", justify="right")
    t.add_column(b_label or f"B: {cmp.b}", justify="right")
    t.add_column("change", justify="right")
    for r in cmp.rows:
        t.add_row(r.metric, f"{r.a:.4f}", f"{r.b:.4f}", _change(r.change, color))
    return t


def gate_table(d: GateDecision, cmp: Comparison, color: bool = True) -> Table:
    """The gate's metric (mAP50-95, or top-1) of both models on all test images, the frozen original
    ones and the added ones, with the paired-bootstrap interval of the change."""
    from ..promotion.gate import fmt_interval as _interval  # lazy: the CLI starts without numpy

    how = f"{d.gate.confidence:.0%} interval" if d.bootstrap else "interval (point estimate)"
    verdict = "passed" if d.passed else "refused"
    t = Table(title=f"gate {verdict}: lower bound must exceed {d.gate.min_delta:+.4f}")
    for name, justify in (("test images", "left"), ("images", "right"), (f"A {d.metric}", "right"),
                          (f"B {d.metric}", "right"), ("change", "right"), (how, "right")):
        t.add_column(name, justify=justify)  # type: ignore[arg-type]
    t.add_row(f"all ({cmp.data})", str(cmp.images), f"{cmp.a_eval.primary_value:.4f}",
              f"{cmp.b_eval.primary_value:.4f}", _change(d.delta, color), _interval(d.interval))
    for label, s in ((f"frozen ({d.frozen_data})", d.frozen), ("added since", d.added)):
        if s is not None:
            t.add_row(label, str(s.images), f"{s.champion:.4f}", f"{s.challenger:.4f}", _change(s.delta, color),
                      _interval(s.interval))
    return t
