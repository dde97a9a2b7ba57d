"""The page at /ui: from the API's answer to the boxes drawn, measured in the browser.

The page marks ``vl-answer`` when the prediction JSON has arrived and ``vl-drawn`` when the
canvas, the detection list and the numbers are updated; ``vl-answer-to-drawn`` is the measure.
The baseline in the same run is the server's own ``timing_ms.total`` for the same requests, so
the ratio says what drawing adds to a prediction. Debian's headless Chromium via Playwright,
a ``visionloop serve`` process and an RPS test image (640x640). Two models: ``serve_bench``'s
untrained yolo11n exported at 640 (the real compute; its random weights find no box) and a
constant ONNX graph that answers 300 boxes (the most ``max_det`` lets through: the most there
is to draw). Usage: ``python bench/ui_bench.py [--rounds 20]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from browser_helpers import launch  # noqa: E402
from serve_bench import RPS, build_model, free_port, run_server, stop  # noqa: E402
from serving_helpers import constant_model  # noqa: E402


def many_boxes(path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 560, (n, 2))
    rows = np.column_stack([xy, xy + rng.uniform(20, 80, (n, 2)), rng.uniform(0.3, 0.9, n), rng.integers(0, 3, n)])
    return constant_model(path, rows[None].astype(np.float32), {"names": "{0: 'rock', 1: 'paper', 2: 'scissors'}",
                                                                "imgsz": "[640, 640]", "task": "detect"}, imgsz=640)


def measure(page, model: str, image: Path, rounds: int) -> dict:
    page.select_option("#model", model)
    draws, totals, networks, counts = [], [], [], []
    for i in range(rounds):
        page.evaluate("performance.clearMeasures('vl-answer-to-drawn')")
        before = int(page.eval_on_selector("#summary", "s => Number(s.dataset.seq || 0)"))
        page.set_input_files("#file", [])
        page.set_input_files("#file", str(image))
        page.wait_for_function("n => Number(document.getElementById('summary').dataset.seq) > n", arg=before)
        draws.append(page.evaluate("performance.getEntriesByName('vl-answer-to-drawn').at(-1).duration"))
        cells = page.eval_on_selector_all("#timing td", "tds => tds.map(t => parseFloat(t.textContent))")
        totals.append(cells[4])
        networks.append(cells[5])
        counts.append(int(page.eval_on_selector("#summary", "s => Number(s.dataset.count)")))
    return {"model": model, "boxes": statistics.median(counts), "draw": statistics.median(draws),
            "server": statistics.median(totals), "network": statistics.median(networks)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    image = sorted((RPS / "test" / "images").iterdir())[0]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _pt, onnx, _ = build_model(work)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc, _ = run_server([sys.executable, "-m", "visionloop", "serve", "--port", str(port), "--model",
                              f"yolo11n={onnx}", "--model", f"many={many_boxes(work / 'many.onnx')}",
                              "--no-prediction-log"], url + "/ready", {**os.environ, "VISIONLOOP_HOME": str(work / "h")})
        try:
            with sync_playwright() as p:
                ctx = launch(p, work / "profile")
                page = ctx.new_page()
                page.goto(url + "/ui")
                page.wait_for_function("() => document.querySelectorAll('#model option').length === 2")
                rows = [measure(page, m, image, args.rounds) for m in ("yolo11n", "many")]
                ctx.close()
        finally:
            stop(proc)
    print(f"answer → drawn in the page, median of {args.rounds} uploads of {image.name[:24]}… (640x640):")
    print("| model | boxes drawn | answer→drawn ms | server total ms | network ms | drawn / server |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['boxes']:.0f} | {r['draw']:.1f} | {r['server']:.1f} | {r['network']:.1f} | "
              f"{r['draw'] / r['server']:.2f}x |")


if __name__ == "__main__":
    main()
