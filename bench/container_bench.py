"""Serving image benchmark: image size, and seconds from ``docker run`` to ``/ready``.

Builds docker/serve.Dockerfile offline (docker/build.py: debootstrap base, host wheelhouse,
``--network none``), then starts it ``--read-only`` with a model mounted read-only, several
times, against the same model served by ``visionloop serve`` on the host in the same run (the
baseline: the container's own cost is the ratio). The model is yolo11n exported at 640 with
random weights: start-up loads the same graph whatever the weights (throughput is serve_bench's).

Usage: ``python bench/container_bench.py [--rounds 5]`` (needs a Docker daemon: scripts/docker.sh start).
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

from docker_helpers import WHEELS, Container, build  # noqa: E402  (docker/build.py, loaded by path)
from serve_bench import build_model, free_port, run_server, stop  # noqa: E402


def container_ready(image: str, models: Path) -> float:
    with Container(image, env={"VISIONLOOP_MODEL": "m=/models/model.onnx"}, volumes=(f"{models}:/models:ro",)) as box:
        return box.wait_ready(timeout=120)


def host_ready(models: Path, work: Path) -> float:
    port = free_port()
    cmd = [sys.executable, "-m", "visionloop", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--model", f"m={models / 'model.onnx'}"]
    env = {**os.environ, "VISIONLOOP_HOME": str(work / "host-home")}
    proc, seconds = run_server(cmd, f"http://127.0.0.1:{port}/ready", env)
    stop(proc)
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    opts = ap.parse_args()
    if not build.daemon_running():
        sys.exit("no Docker daemon: run `bash scripts/docker.sh start` as root")
    image = build.build_offline("serve", "visionloop-serve:bench", WHEELS / "serve")
    rebuild = build.build_offline("serve", "visionloop-serve:bench", WHEELS / "serve")  # layer cache warm
    with tempfile.TemporaryDirectory(prefix="vl-container-bench-") as tmp:
        work = Path(tmp)
        _, static, _ = build_model(work)
        models = work / "models"
        models.mkdir(mode=0o755)
        (models / "model.onnx").write_bytes(static.read_bytes())
        (models / "model.onnx").chmod(0o644)
        host, boxed = [], []
        for _ in range(opts.rounds):  # interleaved: drift on a noisy machine hits both alike
            host.append(host_ready(models, work))
            boxed.append(container_ready(image.tag, models))
    med_h, med_c = statistics.median(host), statistics.median(boxed)
    print(f"\nserve image {image.tag}: {image.size_bytes / 1e6:.0f} MB, {image.added_bytes / 1e6:.0f} MB above the "
          f"offline base ({image.base_size_bytes / 1e6:.0f} MB); first build in this run {image.seconds:.0f} s, "
          f"rebuild {rebuild.seconds:.0f} s (both include the wheelhouse step)")
    print(f"start to /ready over {opts.rounds} rounds (median, min-max):")
    print(f"  host `visionloop serve`       {med_h:.2f} s ({min(host):.2f}-{max(host):.2f})")
    print(f"  docker run --read-only ...    {med_c:.2f} s ({min(boxed):.2f}-{max(boxed):.2f})")
    print(f"  container / host              {med_c / med_h:.2f}x")


if __name__ == "__main__":
    main()
