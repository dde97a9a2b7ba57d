"""`visionloop loop`: labeled inbox → new dataset version → train → compare → promote → report.

Real training (tiny: generated shapes at 96 px), real registry, the CLI as a user runs it.
"""

from __future__ import annotations

import os

import pytest
from conftest import run_cli
from loop_fixtures import isolated_home, make_dataset, train

from visionloop import registry
from visionloop.datasets import images, synthetic
from visionloop.datasets.catalog import Catalog
from visionloop.feedback.inbox import CaptureRecord, write_capture
from visionloop.predictions import Detection, PixelBox
from visionloop.store import open_store, sha256_bytes

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # real trainings on a busy CPU can be slow


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """loopdata@1 (160 images) and loopm/1, a 1-epoch champion (it knows next to nothing)."""
    home = tmp_path_factory.mktemp("loop-home")
    with isolated_home(home):
        make_dataset("loopdata", 160, seed=21)
        assert train("loopdata@1", "loopm", epochs=1, batch=8) == "1"
    return home


def _labeled_captures(n: int, seed: int) -> list[str]:
    """What the server captured, then someone labeled (here: the generator's exact boxes)."""
    store = open_store()
    shas = []
    for s in synthetic.generate(n, seed=seed, size=96):
        p = images.prepare(s.data)
        rec = CaptureRecord(model="loopm", version="1", reason="no-detection", image_sha256=sha256_bytes(p.data),
                            ext=p.ext, width=p.width, height=p.height, classes=list(synthetic.CLASSES),
                            detections=[Detection(class_id=0, class_name="circle", confidence=0.3,
                                                  box=PixelBox(x1=1, y1=1, x2=20, y2=20))],
                            labels=s.boxes)
        write_capture(store, rec, p.data)
        shas.append(rec.image_sha256)
    return shas


def _env(home) -> dict:
    return {"VISIONLOOP_HOME": str(home), "LABEL_STUDIO_URL": ""}


def test_loop_turn_trains_compares_promotes_then_has_nothing_to_do(champion, tmp_path):
    with isolated_home(champion):
        shas = _labeled_captures(60, seed=77)
    report = tmp_path / "report.md"
    r = run_cli("loop", "--data", "loopdata", "--model", "loopm", "--epochs", "3", "--report", str(report),
                env=_env(champion), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    err = r.stderr
    assert "labels: 60 labeled captures (60 new images) → loopdata@2" in err
    assert "train: loopm/2 trained on loopdata@2" in err
    assert "compare: loopm/1 vs loopm/2 on loopdata@2" in err
    assert "promote: loopm@champion 1 → 2 (gate passed)" in err
    assert f"report: wrote {report}" in err

    with isolated_home(champion):
        v1, v2 = Catalog(open_store()).load("loopdata@1"), Catalog(open_store()).load("loopdata@2")
        assert v2.parent == 1 and {i.sha256 for i in v2.images} == {i.sha256 for i in v1.images} | set(shas)
        assert registry.get_alias("loopm", "champion") == "2"
        mv = registry.get_version("loopm", "2")
        assert mv.tags[registry.TAG_DATASET] == "loopdata@2"
        params = registry.client().get_run(mv.run_id).data.params
        # the champion's parameters, except the one overridden
        assert (params["epochs"], params["batch"], params["imgsz"], params["model"]) == ("3", "8", "96", "yolo11n.yaml")
    text = report.read_text()
    assert "| metric | old | new | change |" in text and "Gate **passed**" in text
    assert "`loopdata@1` → `loopdata@2`" in text

    again = run_cli("loop", "--data", "loopdata", "--model", "loopm", "--report", str(report),
                    env=_env(champion), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already in loopdata@2" in again.stderr and "nothing new to learn" in again.stderr
    with isolated_home(champion):
        assert [v.version for v in registry.list_versions("loopm")] == ["1", "2"]


def test_loop_failure_stops_cleanly(champion, tmp_path):
    with isolated_home(champion):
        _labeled_captures(5, seed=99)
        before_versions = [v.version for v in registry.list_versions("loopm")]
        before_champion = registry.get_alias("loopm", "champion")
        latest_before = Catalog(open_store()).latest("loopdata").version
    report = tmp_path / "report.md"
    r = run_cli("loop", "--data", "loopdata", "--model", "loopm", "--arch", str(tmp_path / "missing.pt"),
                "--report", str(report), env=_env(champion), cwd=tmp_path)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: loop stopped at train") and "missing.pt" in last and "run the loop again" in last
    assert "Traceback" not in r.stderr
    with isolated_home(champion):
        # the labels step finished (a whole, valid version); nothing was registered or promoted
        assert Catalog(open_store()).latest("loopdata").version == latest_before + 1
        assert [v.version for v in registry.list_versions("loopm")] == before_versions
        assert registry.get_alias("loopm", "champion") == before_champion
    assert not report.exists()


def test_loop_with_unreachable_label_studio_writes_nothing(champion, tmp_path):
    with isolated_home(champion):
        latest_before = Catalog(open_store()).latest("loopdata").version
    env = {**_env(champion), "LABEL_STUDIO_API_KEY": "some-token"}
    r = run_cli("loop", "--data", "loopdata", "--model", "loopm", "--url", "http://127.0.0.1:9",
                env=env, cwd=tmp_path)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "loop stopped at labels" in last and "cannot reach Label Studio" in last and "some-token" not in r.stderr
    with isolated_home(champion):
        assert Catalog(open_store()).latest("loopdata").version == latest_before
    assert os.listdir(tmp_path) == []
