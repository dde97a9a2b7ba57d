"""`visionloop demo`, miniature: every stage runs for real (training, a server process, captures,
labels, the loop, the hot swap), with few images: v1 gets one epoch (it knows nothing), v2 gets
the captures and enough iterations to get past ultralytics' warm-up (about a minute on 2 cores).
The full-size demo (`make demo`) is timed by hand and recorded in bench/RESULTS.md."""

from __future__ import annotations

import re

import pytest
from conftest import run_cli
from loop_fixtures import isolated_home

from visionloop import registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # real trainings on a busy CPU can be slow


def test_mini_demo_runs_the_whole_loop(tmp_path):
    home = tmp_path / "demo-home"
    r = run_cli("demo", "--home", str(home), "--v1-images", "24", "--v1-epochs", "1", "--unseen", "60",
                "--v2-epochs", "30", "--imgsz", "96", cwd=tmp_path, env={"LABEL_STUDIO_URL": ""})
    assert r.returncode == 0, r.stderr[-3000:]
    err, out = r.stderr, r.stdout
    assert "1. dataset shapes@1: 24 generated images" in err
    assert "2. trained shapes/1" in err
    assert re.search(r"4\. sent 60 unseen images; the server captured \d+", err)
    assert "standing in for a human annotator" in err
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
