"""`visionloop demo` (what `make demo` runs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from .console import console, err_console


def demo(
    home: Path = typer.Option(Path(".visionloop/demo"), "--home", help="The demo's own VISIONLOOP_HOME (wiped at start)."),
    task: str = typer.Option("detect", "--task", help="detect (shapes with boxes, yolo11n) or classify (one shape "
                             "per image, yolo11n-cls, top-1)."),
    v1_epochs: Optional[int] = typer.Option(None, "--v1-epochs", min=1, help="Epochs of the first, deliberately brief, "
                                            "training (detect 10, classify 1)."),
    v2_epochs: Optional[int] = typer.Option(None, "--v2-epochs", min=1, help="Epochs of the retraining on v2 "
                                            "(detect 15, classify 10)."),
    v1_images: Optional[int] = typer.Option(None, "--v1-images", min=10, help="Generated images in dataset v1 "
                                            "(detect 120, classify 60)."),
    unseen: Optional[int] = typer.Option(None, "--unseen", min=1, help="Unseen images sent to the server "
                                         "(detect 200, classify 100)."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", help="Image and model input size, a multiple of 32 "
                                        "(detect 96, classify 64)."),
    budget: Optional[int] = typer.Option(None, "--budget", min=1, help="Captures labeled in the round, picked by "
                                         "the default strategy (detect 120, classify 60)."),
    port: int = typer.Option(0, "--port", help="Server port (0: a free one)."),
    keep_serving: bool = typer.Option(False, "--keep-serving", help="Leave the server and its page (/ui) running "
                                      "at the end, until Ctrl-C."),
) -> None:
    """The whole loop on generated data, on CPU: data → train → serve → capture → label → retrain → promote → hot swap."""
    from rich.markup import escape
    from rich.table import Table

    from ..demo import DemoOptions, run_demo
    from ..errors import ValidationError
    from .progress import RichPipelineEvents

    if task not in ("detect", "classify"):
        raise ValidationError(f"--task must be detect or classify, not {task!r}")
    # ultralytics reads these once, at import: this process is the demo's, so they are set here
    os.environ.setdefault("YOLO_CONFIG_DIR", str(home.expanduser().resolve() / "ultralytics"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    given = {"v1_epochs": v1_epochs, "v2_epochs": v2_epochs, "v1_images": v1_images, "unseen": unseen, "imgsz": imgsz,
             "budget": budget}
    opts = DemoOptions.for_task(task, home=home, port=port, keep_serving=keep_serving,  # type: ignore[arg-type]
                                **{k: v for k, v in given.items() if v is not None})
    res = run_demo(opts, lambda line: err_console.print(escape(line), highlight=False, soft_wrap=True),
                   RichPipelineEvents(err_console))
    t = Table(title=f"v1 vs v2 on the same frozen test split ({res.comparison.data if res.comparison else '-'})")
    t.add_column("metric")
    t.add_column(f"v1 {res.v1}", justify="right")
    t.add_column(f"v2 {res.v2}", justify="right")
    t.add_column("change", justify="right")
    for r in res.comparison.rows if res.comparison else []:
        t.add_row(r.metric, f"{r.a:.4f}", f"{r.b:.4f}", f"{r.change:+.4f}")
    console.print(t)
    console.print(f"promoted: {'yes' if res.promoted else 'no (the gate refused)'}; the server answered with "
                  f"{res.served_before} before and {res.served_after} now; {res.captured} of {res.sent} images captured, "
                  f"{res.labeled} labeled; "
                  f"report: {home / 'report.md'}; {res.seconds:.0f} s in all")
    if res.serving is not None:
        console.print(f"the server keeps running: open [bold]{res.url}/ui[/] to try {res.served_after} in the "
                      f"browser (API docs at {res.url}/docs); Ctrl-C stops it")
        sys.stdout.flush()
        res.serving.wait_until_interrupted()
