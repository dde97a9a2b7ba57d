"""`visionloop loop`: labeled inbox → new dataset version → train → compare → promote → report.

Real training (tiny: generated shapes at 96 px), real registry, the CLI as a user runs it.
"""

from __future__ import annotations

import os
import re

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
    # a gate that lets any challenger through: this test is the loop's mechanics (the gate's own
    # noise resistance is test_gate.py's); 3 epochs against 1 is no clear gain at this size
    config = tmp_path / "visionloop.yaml"
    config.write_text("gate:\n  min_delta: -1.0\n  max_class_drop: 1.0\n")
    r = run_cli("loop", "--data", "loopdata", "--model", "loopm", "--epochs", "3", "--report", str(report),
                "--config", str(config), env=_env(champion), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    err = r.stderr
    assert "▸ train: loopm on loopdata@2" in err  # each step says when it starts
    assert "labels: 60 labeled captures (60 new images) → loopdata@2" in err
    assert "train: loopm/2 trained on loopdata@2" in err
    assert "compare: loopm/1 vs loopm/2 on loopdata@2" in err
    assert "promote: loopm@champion 1 → 2 (gate passed)" in err, err[-3000:]
    assert re.search(r"compare: .*\[[-+]\d\.\d{4}, [-+]\d\.\d{4}\] \(95% interval\)", err)
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
    # the captures moved to in_dataset (archived, with the version that took them): nothing waits
    assert "no labeled captures in the inbox of loopm" in again.stderr and "nothing new to learn" in again.stderr
    with isolated_home(champion):
        from visionloop.feedback.inbox import list_captures

        taken = list_captures(open_store(), "loopm", archived=True, states={"in_dataset"})
        assert {r.image_sha256 for r in taken} >= set(shas) and {r.dataset for r in taken} == {"loopdata@2"}
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


def _versions(home) -> tuple[list[int], list[str]]:
    with isolated_home(home):
        return Catalog(open_store()).versions("loopdata"), [v.version for v in registry.list_versions("loopm")]


def _kill_at(args: list[str], env: dict, cwd, pattern: str, timeout: float = 300) -> str:
    """Run the real ``visionloop ARGS``, read its stderr line by line and SIGKILL it from outside
    as soon as a line matches ``pattern`` (a step has started); returns what it printed."""
    import signal
    import subprocess
    import threading

    from conftest import VISIONLOOP

    p = subprocess.Popen([*VISIONLOOP, *args], env={**os.environ, **env}, cwd=cwd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    guard = threading.Timer(timeout, p.kill)  # bounded even when the line never comes
    guard.start()
    seen: list[str] = []
    try:
        for line in p.stderr:
            seen.append(line)
            if re.search(pattern, line):
                p.kill()
                break
    finally:
        guard.cancel()
        p.wait()
        p.stderr.close()
    text = "".join(seen)
    assert re.search(pattern, text, re.M) and p.returncode == -signal.SIGKILL, (pattern, p.returncode, text[-3000:])
    return text


def test_sigkill_in_each_step_then_rerun_has_no_duplicates(tmp_path):
    """The real loop process killed with SIGKILL from outside as each step starts (labels, train,
    mid-training, compare + gate + promote, report), each time started again: it finishes, and
    every dataset and model version exists exactly once."""
    from visionloop.feedback.inbox import count_by_state

    home = tmp_path / "home"
    with isolated_home(home):
        make_dataset("loopdata", 40, seed=5)
        assert train("loopdata@1", "loopm", epochs=1, batch=8) == "1"
        _labeled_captures(20, seed=55)
    args = ["loop", "--data", "loopdata", "--model", "loopm", "--epochs", "2", "--report", str(tmp_path / "r.md")]

    def in_dataset() -> int:
        with isolated_home(home):
            counts = count_by_state(open_store(), "loopm")
        assert sum(counts.values()) == 20, counts  # no capture lost, none counted twice
        return counts["in_dataset"]

    _kill_at(args, _env(home), tmp_path, r"^▸ labels:")
    data, models = _versions(home)
    assert data in ([1], [1, 2]) and models == ["1"]  # killed before or while the version was made

    _kill_at(args, _env(home), tmp_path, r"^▸ train: loopm on loopdata@2")
    assert _versions(home) == ([1, 2], ["1"]) and in_dataset() == 20

    _kill_at(args, _env(home), tmp_path, r"^\s*epoch 1/2 ")  # in the middle of the training
    assert _versions(home) == ([1, 2], ["1"]) and in_dataset() == 20

    _kill_at(args, _env(home), tmp_path, r"^▸ compare: loopm/2 against loopm/1")  # trained, registered
    assert _versions(home) == ([1, 2], ["1", "2"])
    with isolated_home(home):
        assert registry.get_alias("loopm", "champion") == "1"

    # the training is found again (registered, by its cache key): compare + gate + promote, then killed
    err = _kill_at(args, _env(home), tmp_path, r"^▸ report:")
    assert "already holds this training" in err or "cached" in err
    assert _versions(home) == ([1, 2], ["1", "2"])

    final = run_cli(*args, env=_env(home), cwd=tmp_path)
    assert final.returncode == 0, final.stderr[-3000:]
    assert _versions(home) == ([1, 2], ["1", "2"]) and in_dataset() == 20
    with isolated_home(home):
        champion = registry.get_alias("loopm", "champion")
    if champion == "2":  # promoted before the kill: nothing left to learn
        assert "nothing new to learn" in final.stderr
    else:  # the gate refused: the same decision again, with the report this time
        assert "gate refused" in final.stderr and (tmp_path / "r.md").is_file()
