"""`visionloop demo` (what `make demo` runs)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from .console import console, err_console


def demo(
    home: Path = typer.Option(Path(".visionloop/demo"), "--home", help="The demo's own VISIONLOOP_HOME (wiped at start)."),
    v1_epochs: int = typer.Option(10, "--v1-epochs", min=1, help="Epochs of the first, deliberately brief, training."),
    v2_epochs: int = typer.Option(15, "--v2-epochs", min=1, help="Epochs of the retraining on v2."),
    v1_images: int = typer.Option(120, "--v1-images", min=10, help="Generated images in dataset v1."),
    unseen: int = typer.Option(200, "--unseen", min=1, help="Unseen images sent to the server."),
    imgsz: int = typer.Option(96, "--imgsz", help="Image and model input size (a multiple of 32)."),
    port: int = typer.Option(0, "--port", help="Server port (0: a free one)."),
    keep_serving: bool = typer.Option(False, "--keep-serving", help="Leave the server and its page (/ui) running "
                                      "at the end, until Ctrl-C."),
) -> None:
    """The whole loop on generated data, on CPU: data → train → serve → capture → label → retrain → promote → hot swap."""
    from rich.markup import escape
    from rich.table import Table

    from ..demo import DemoOptions, run_demo
    from .progress import RichPipelineEvents

    # ultralytics reads these once, at import: this process is the demo's, so they are set here
    os.environ.setdefault("YOLO_CONFIG_DIR", str(home.expanduser().resolve() / "ultralytics"))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    opts = DemoOptions(home=home, v1_epochs=v1_epochs, v2_epochs=v2_epochs, v1_images=v1_images, unseen=unseen,
                       imgsz=imgsz, port=port, keep_serving=keep_serving)
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
                  f"{res.served_before} before and {res.served_after} now; {res.captured} of {res.sent} images captured; "
                  f"report: {home / 'report.md'}; {res.seconds:.0f} s in all")
    if res.serving is not None:
        console.print(f"the server keeps running: open [bold]{res.url}/ui[/] to try {res.served_after} in the "
                      f"browser (API docs at {res.url}/docs); Ctrl-C stops it")
        sys.stdout.flush()
        res.serving.wait_until_interrupted()
