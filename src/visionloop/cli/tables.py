"""Rich tables shared by several commands (``models compare|promote``, ``loop``, ``demo``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

if TYPE_CHECKING:
    from ..promotion import Comparison


def comparison_table(cmp: Comparison, title: str | None = None, a_label: str | None = None,
                     b_label: str | None = None, color: bool = True) -> Table:
    """metric | A | B | change (green when B gained, red when it lost)."""
    t = Table(title=title or f"{cmp.a} vs {cmp.b} on {cmp.data} ({cmp.split}, {cmp.images} images)")
    t.add_column("metric")
    t.add_column(a_label or f"A: {cmp.a}", justify="right")
    t.add_column(b_label or f"B: {cmp.b}", justify="right")
    t.add_column("change", justify="right")
    for r in cmp.rows:
        style = "green" if r.change > 1e-9 else ("red" if r.change < -1e-9 else "")
        change = f"{r.change:+.4f}"
        t.add_row(r.metric, f"{r.a:.4f}", f"{r.b:.4f}", f"[{style}]{change}[/]" if style and color else change)
    return t
