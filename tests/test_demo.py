"""`visionloop demo`, miniature: every stage runs for real (training, a server process, captures,
labels, the loop, the hot swap), with few images: v1 gets one epoch (it knows nothing), v2 gets
the captures and enough iterations to get past ultralytics' warm-up (about a minute on 2 cores).
The full-size demo (`make demo`) is timed by hand and recorded in bench/RESULTS.md."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time

import httpx
import pytest
from conftest import VISIONLOOP, run_cli
from loop_fixtures import isolated_home

from visionloop import registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # real trainings on a busy CPU can be slow


def test_mini_demo_runs_the_whole_loop(tmp_path):
    home = tmp_path / "demo-home"
    proc = subprocess.Popen([*VISIONLOOP, "demo", "--home", str(home), "--v1-images", "24", "--v1-epochs", "1",
                             "--unseen", "60", "--v2-epochs", "30", "--imgsz", "96", "--budget", "50", "--keep-serving"],
                            cwd=tmp_path, env={**os.environ, "LABEL_STUDIO_URL": "", "COLUMNS": "200"},
                            stdout=subprocess.PIPE, stderr=open(tmp_path / "demo.err", "wb"), text=True)
    try:
        out = ""
        while (line := proc.stdout.readline()) and "Ctrl-C stops it" not in line:
            out += line
        out += line
        url = re.search(r"open (http://127\.0\.0\.1:\d+)/ui", out)
        assert url, out + (tmp_path / "demo.err").read_text()[-3000:]
        # --keep-serving: the demo's server and its page are still up, serving the promoted model
        page = httpx.get(url.group(1) + "/ui")
        assert page.status_code == 200 and "visionloop" in page.text
        assert httpx.get(url.group(1) + "/v1/models").json()["models"][0]["version"] == "2"
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(30) == 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                httpx.get(url.group(1) + "/health", timeout=1)
            except httpx.TransportError:
                break  # the server went with the demo
            time.sleep(0.3)
        else:
            raise AssertionError("the demo's server outlived Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
    err = (tmp_path / "demo.err").read_text()
    assert "1. dataset shapes@1: 24 generated images" in err
    assert "2. trained shapes/1" in err
    assert re.search(r"4\. sent 60 unseen images; the server captured \d+", err)
    assert "standing in for a human annotator" in err
    # the labeling round: at most the budget, chosen by the default strategy, with the picks' scores
    picked = re.search(r"5\. picked (\d+) of (\d+) captures by random \(ranked by least_confidence, (\d+) random", err)
    assert picked and int(picked.group(1)) == min(50, int(picked.group(2))) and 1 <= int(picked.group(3)) <= 5, err[-3000:]
    assert re.search(r"least_confidence of the picks: max [01]\.\d{3}", err)
    assert f"labeled {picked.group(1)} captures from the generator" in err
    assert "train: shapes/2 trained on shapes@2" in err
    assert "v1 shapes/1" in out and "v2 shapes/2" in out and "mAP50-95" in out
    # what the demo is built for: v2 (more data, longer training) passes the gate, becomes the
    # champion, and the watching server hot-swaps to it by itself
    gain = re.search(r"compare: shapes/1 vs shapes/2 on shapes@2 \(\d+ test images\): "
                     r"mAP50-95 change ([-+]\d+\.\d+)", err)
    assert gain and float(gain.group(1)) > 0.05, err[-3000:]  # measured: +0.47
    assert "promote: shapes@champion 1 → 2 (gate passed)" in err
    with isolated_home(home):
        assert registry.get_alias("shapes", "champion") == "2"
    said = " ".join(out.split())
    assert "promoted: yes;" in said and "the server answered with shapes/1 before and shapes/2 now" in said
    assert "10. the server now answers with shapes/2 (champion shapes/2)" in err
    assert (home / "report.md").is_file() and (home / ".visionloop-demo").is_file()

    again = run_cli("demo", "--home", str(tmp_path), cwd=tmp_path)  # not a demo home: refused, untouched
    assert again.returncode != 0 and "not made by the demo" in again.stderr
    assert home.is_dir()


def test_mini_classify_demo_runs_the_same_loop_with_classes(tmp_path):
    """`demo --task classify`: yolo11n-cls, captures by low top-1 / small margin, class labels,
    a classify v2, the gate on top-1, promotion and the hot swap."""
    home = tmp_path / "cls-home"
    r = run_cli("demo", "--task", "classify", "--home", str(home), "--v1-images", "30", "--unseen", "60",
                cwd=tmp_path, env={"LABEL_STUDIO_URL": "", "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-3000:]
    err, out = r.stderr, r.stdout
    assert "1. dataset shape-kinds@1: 30 generated images" in err
    assert "capturing a top-1 up to 0.6 or a top-1/top-2 margin under 0.1" in err
    assert re.search(r"4\. sent 60 unseen images; the server captured [1-9]\d*", err)
    assert re.search(r"labels: \d+ labeled captures \(\d+ new images\) → shape-kinds@2", err)
    gain = re.search(r"compare: shape-kinds/1 vs shape-kinds/2 on shape-kinds@2 \(\d+ test images\): "
                     r"top-1 change ([-+]\d+\.\d+)", err)
    assert gain and float(gain.group(1)) > 0.2, err[-3000:]
    assert "top-1" in out and "accuracy circle" in out and "mAP" not in out
    said = " ".join(out.split())
    assert "promoted: yes;" in said and "shape-kinds/1 before and shape-kinds/2 now" in said
    with isolated_home(home):
        assert registry.get_alias("shape-kinds", "champion") == "2"
        assert registry.get_card("shape-kinds/2").task == "classify"
