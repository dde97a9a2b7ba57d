"""Label Studio round trip against a REAL Label Studio server (scripts/labelstudio.sh).

The server runs on a free port on 127.0.0.1 with a temp data dir, a known user and a legacy
token. Annotations are made through its API the way an annotator's browser makes them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import httpx
import numpy as np
import pytest
from conftest import ROOT, run_cli
from serving_helpers import free_port

from visionloop.datasets import images, synthetic
from visionloop.datasets.catalog import Catalog, DraftImage
from visionloop.datasets.manifest import YoloBox
from visionloop.datasets.split import assign_split
from visionloop.feedback import labelstudio as lsmod
from visionloop.feedback.inbox import CaptureRecord, count_by_state, list_captures, write_capture
from visionloop.predictions import ClassScore, Detection, PixelBox
from visionloop.store import open_store, sha256_bytes

TOKEN = "vl-test-token-0123456789abcdef"
USER, PASSWORD = "annotator@example.com", "vl-test-password-1"


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    """A real Label Studio process; killed (its whole process group) at the end."""
    script = ROOT / "scripts" / "labelstudio.sh"
    if not (ROOT / ".ls-venv" / "bin" / "label-studio").exists():
        pytest.fail("Label Studio is not installed: run `make labelstudio` (scripts/labelstudio.sh install)")
    port = free_port()
    data = tmp_path_factory.mktemp("ls-data")
    log = open(data / "server.log", "wb")
    proc = subprocess.Popen(["bash", str(script), "start", str(port), str(data), USER, PASSWORD, TOKEN],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"Label Studio exited with {proc.returncode}: {(data / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/api/projects", headers={"Authorization": f"Token {TOKEN}"}, timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("Label Studio did not answer within 300 s")
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _api(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60)


def _make_dataset(n: int = 12) -> None:
    store = open_store()
    drafts = []
    for s in synthetic.generate(n, seed=1, size=96):
        p = images.prepare(s.data)
        drafts.append(DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, s.boxes, source=s.name))
    Catalog(store).commit("shapes", synthetic.CLASSES, drafts)


def _capture(n: int, seed: int) -> dict[str, tuple[CaptureRecord, list[YoloBox]]]:
    """Captures as a server would write them; predictions = ground truth shifted a little."""
    store = open_store()
    out = {}
    for s in synthetic.generate(n, seed=seed, size=96):
        p = images.prepare(s.data)
        dets = []
        for b in s.boxes:
            x1, y1, x2, y2 = b.to_xyxy(p.width, p.height)
            dets.append(Detection(class_id=b.class_id, class_name=synthetic.CLASSES[b.class_id], confidence=0.4,
                                  box=PixelBox(x1=x1 + 2, y1=y1, x2=x2, y2=y2 - 2)))
        rec = CaptureRecord(model="m", version="1", reason="low-confidence", image_sha256=sha256_bytes(p.data),
                            ext=p.ext, width=p.width, height=p.height, classes=list(synthetic.CLASSES), detections=dets)
        write_capture(store, rec, p.data)
        out[rec.id] = (rec, s.boxes)
    return out


def _gt_result(boxes: list[YoloBox], names: list[str], w: int, h: int) -> list[dict]:
    """What the LS editor sends when an annotator draws these boxes."""
    res = []
    for b in boxes:
        x1, y1, x2, y2 = b.to_xyxy(w, h)
        res.append({"from_name": "label", "to_name": "image", "type": "rectanglelabels",
                    "original_width": w, "original_height": h, "image_rotation": 0,
                    "value": {"x": 100 * x1 / w, "y": 100 * y1 / h, "width": 100 * (x2 - x1) / w,
                              "height": 100 * (y2 - y1) / h, "rotation": 0, "rectanglelabels": [names[b.class_id]]}})
    return res


def _tasks(url: str, project_id: int) -> list[dict]:
    with _api(url) as c:
        return c.get("/api/tasks", params={"project": project_id, "page_size": 1000}).json()["tasks"]


# -- pure conversions --------------------------------------------------------------------------
def _rect(x, y, w, h, label="circle", rotation=0):
    return {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}}


def test_result_to_boxes_plain_rotated_and_by_name():
    boxes, names = lsmod.result_to_boxes([_rect(10, 20, 30, 40, "square"), _rect(0, 0, 10, 10, "circle")], 200, 100)
    assert names == ["square", "circle"]
    assert [b.class_id for b in boxes] == [0, 1]
    assert (boxes[0].cx, boxes[0].cy, boxes[0].w, boxes[0].h) == pytest.approx((0.25, 0.4, 0.3, 0.4))
    # 90° clockwise about the top-left corner of a 200x100 image: a 20x10 px box becomes 10x20 px
    (b,), _ = lsmod.result_to_boxes([_rect(50, 10, 10, 10, rotation=90)], 200, 100)
    assert (b.w * 200, b.h * 100) == pytest.approx((10, 20))
    assert (b.cx * 200, b.cy * 100) == pytest.approx((95, 20))
    with pytest.raises(lsmod.ValidationError, match="task 7"):  # far outside the image
        lsmod.result_to_boxes([_rect(150, 0, 10, 10)], 200, 100, "task 7")
    with pytest.raises(lsmod.ValidationError, match="exactly one label"):
        lsmod.result_to_boxes([{"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 1, "height": 1,
                                                                      "rectanglelabels": []}}], 10, 10)


def test_detections_round_trip_through_percent():
    d = Detection(class_id=1, class_name="square", confidence=0.5, box=PixelBox(x1=16, y1=8, x2=48, y2=40))
    (r,) = lsmod.detections_to_result([d], 64, 48)
    assert r["value"]["x"] == pytest.approx(25) and r["value"]["height"] == pytest.approx(200 / 3)
    boxes, names = lsmod.result_to_boxes([r], 64, 48)
    assert names == ["square"]
    assert boxes[0].to_xyxy(64, 48) == pytest.approx((16, 8, 48, 40))


def test_capture_records_with_flat_boxes_still_load(vl_home):
    """Records written before the box was nested (x1..y2 beside class_id) load as the one Detection type."""
    store = open_store()
    old = {"id": "old1", "created_at": "2024-01-01T00:00:00+00:00", "model": "m", "version": "1",
           "reason": "low-confidence", "image_sha256": "0" * 64, "ext": "png", "width": 64, "height": 48,
           "classes": ["circle", "square"], "note": "",
           "detections": [{"class_id": 1, "class_name": "square", "confidence": 0.5,
                           "x1": 16, "y1": 8, "x2": 48, "y2": 40}]}
    store.write_bytes("inbox/m/old1.json", json.dumps(old).encode())
    (rec,) = list_captures(store, "m")
    (d,) = rec.detections
    assert isinstance(d, Detection) and d.box == PixelBox(x1=16, y1=8, x2=48, y2=40)
    assert json.loads(rec.model_dump_json())["detections"][0]["box"] == {"x1": 16, "y1": 8, "x2": 48, "y2": 40}
    (r,) = lsmod.detections_to_result(rec.detections, rec.width, rec.height)
    assert r["value"]["width"] == pytest.approx(50)


def test_labeling_config_escapes_names():
    cfg = lsmod.labeling_config(["a<b", 'say "hi"', "rock"])
    assert lsmod.config_labels(cfg) == ["a<b", 'say "hi"', "rock"]


def test_export_offline_writes_tasks(vl_home, tmp_path):
    caps = _capture(3, seed=5)
    out = tmp_path / "tasks.json"
    r = run_cli("label", "export", "--format", "labelstudio-json", "--out", str(out))
    assert r.returncode == 0, r.stderr
    tasks = json.loads(out.read_text())
    assert {t["data"][lsmod.CAPTURE_KEY] for t in tasks} == set(caps)
    for t in tasks:
        assert t["data"]["image"].startswith("data:image/png;base64,")
        assert t["predictions"][0]["model_version"] == "m/1"
    bad = run_cli("label", "export", "--format", "coco", "--out", str(tmp_path / "x.json"))
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.json").exists()


# -- the real server -----------------------------------------------------------------------------
def test_push_annotate_pull_round_trip(label_studio, vl_home):
    url = label_studio
    env = {"LABEL_STUDIO_API_KEY": TOKEN}
    _make_dataset()
    caps = _capture(4, seed=99)
    # the project exists already with the labels in ANOTHER order: mapping must go by name
    reversed_names = list(reversed(synthetic.CLASSES))
    with _api(url) as c:
        pid = c.post("/api/projects", json={"title": "shapes-review",
                                            "label_config": lsmod.labeling_config(reversed_names)}).json()["id"]

    r = run_cli("label", "push", "--url", url, "--project", "shapes-review", "--data", "shapes", env=env)
    assert r.returncode == 0, r.stderr
    assert "pushed 4" in r.stdout and TOKEN not in r.stdout + r.stderr
    tasks = _tasks(url, pid)
    assert sorted(t["data"][lsmod.CAPTURE_KEY] for t in tasks) == sorted(caps)
    assert all(t["total_predictions"] == 1 for t in tasks)
    assert {r.id: r.state for r in list_captures(open_store(), "m")} == dict.fromkeys(caps, "in_labeling")

    again = run_cli("label", "push", "--url", url, "--project", "shapes-review", "--data", "shapes", env=env)
    assert again.returncode == 0, again.stderr
    assert "pushed 0" in again.stdout and "4 already there" in again.stdout
    assert len(_tasks(url, pid)) == 4

    # an annotator completes 3 of the 4 tasks (ground truth), one stays open
    done = {}
    with _api(url) as c:
        for t in sorted(tasks, key=lambda t: t["id"])[:3]:
            rec, gt = caps[t["data"][lsmod.CAPTURE_KEY]]
            res = _gt_result(gt, synthetic.CLASSES, rec.width, rec.height)
            assert c.post(f"/api/tasks/{t['id']}/annotations", json={"result": res}).status_code == 201
            done[rec.image_sha256] = gt

    store = open_store()
    v1 = Catalog(store).load("shapes@1")
    r = run_cli("label", "pull", "--url", url, "--project", "shapes-review", "--data", "shapes", env=env)
    assert r.returncode == 0, r.stderr
    assert "created shapes@2" in r.stdout
    v2 = Catalog(store).load("shapes@2")
    assert v2.parent == 1 and v2.classes == v1.classes
    old = {i.sha256: i for i in v1.images}
    new = {i.sha256: i for i in v2.images}
    assert set(new) == set(old) | set(done)
    for sha, img in old.items():  # old images keep their split and boxes
        assert new[sha].split == img.split and new[sha].boxes == img.boxes
    for sha, gt in done.items():
        img = new[sha]
        assert img.split == assign_split(v2.split_policy.seed, sha, v2.split_policy.ratios)
        assert [b.class_id for b in img.boxes] == [b.class_id for b in gt]
        got = np.array([[b.cx, b.cy, b.w, b.h] for b in img.boxes])
        want = np.array([[b.cx, b.cy, b.w, b.h] for b in gt])
        assert np.allclose(got, want, atol=1e-6)

    # the annotated captures went into shapes@2 (archived); the open one still waits for its annotator
    states = {c.image_sha256: (c.state, c.dataset) for c in list_captures(store, "m", archived=True)}
    assert sorted(states.values()) == [("in_dataset", "shapes@2")] * 3 + [("in_labeling", None)]
    assert all(states[sha] == ("in_dataset", "shapes@2") for sha in done)
    assert count_by_state(store, "m") == {"pending": 0, "in_labeling": 1, "labeled": 0, "in_dataset": 3,
                                          "discarded": 0}

    # pulling again adds nothing and moves nothing
    r = run_cli("label", "pull", "--url", url, "--project", "shapes-review", "--data", "shapes", env=env)
    assert r.returncode == 0 and "unchanged" in r.stdout
    assert Catalog(store).versions("shapes") == [1, 2]
    assert {c.image_sha256: (c.state, c.dataset) for c in list_captures(store, "m", archived=True)} == states


def test_bad_token_unreachable_and_unknown_class(label_studio, vl_home):
    url = label_studio
    _make_dataset(6)
    caps = _capture(2, seed=42)
    store = open_store()

    bad = run_cli("label", "push", "--url", url, "--project", "shapes-bad", "--data", "shapes",
                  env={"LABEL_STUDIO_API_KEY": "wrong-token-xyz"})
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1 and "refused the token" in bad.stderr
    assert "wrong-token-xyz" not in bad.stdout + bad.stderr
    assert lsmod.LabelStudio(url, lsmod.resolve_token(TOKEN)).find_project("shapes-bad") is None

    port = free_port()  # nothing listens there
    down = run_cli("label", "pull", "--url", f"http://127.0.0.1:{port}", "--project", "x-y-z", "--data", "shapes",
                   env={"LABEL_STUDIO_API_KEY": TOKEN})
    assert down.returncode != 0
    assert len(down.stderr.strip().splitlines()) == 1 and "cannot reach Label Studio" in down.stderr
    assert TOKEN not in down.stderr

    missing = run_cli("label", "push", "--url", url, "--data", "shapes", env={"LABEL_STUDIO_API_KEY": ""})
    assert missing.returncode != 0 and "LABEL_STUDIO_API_KEY" in missing.stderr

    # a project whose config knows a class the dataset does not: that label must stop the pull
    with _api(url) as c:
        pid = c.post("/api/projects", json={"title": "shapes-extra",
                                            "label_config": lsmod.labeling_config([*synthetic.CLASSES, "hexagon"])}).json()["id"]
    env = {"LABEL_STUDIO_API_KEY": TOKEN}
    assert run_cli("label", "push", "--url", url, "--project", "shapes-extra", "--data", "shapes", env=env).returncode == 0
    with _api(url) as c:
        for t in _tasks(url, pid):
            rec, gt = caps[t["data"][lsmod.CAPTURE_KEY]]
            names = ["hexagon"] * 3  # the annotator picks a class the dataset does not have
            assert c.post(f"/api/tasks/{t['id']}/annotations",
                          json={"result": _gt_result(gt, names, rec.width, rec.height)}).status_code == 201
    r = run_cli("label", "pull", "--url", url, "--project", "shapes-extra", "--data", "shapes", env=env)
    assert r.returncode != 0
    assert len(r.stderr.strip().splitlines()) == 1 and "hexagon" in r.stderr and "nothing was written" in r.stderr
    assert Catalog(store).versions("shapes") == [1]


def _classify_dataset_and_captures(n: int = 3) -> dict[str, tuple[CaptureRecord, int]]:
    """A classify version of generated images (the first shape names the class) and ``n`` captures
    whose model said the wrong class first."""
    store = open_store()
    drafts = []
    for s in synthetic.generate(8, seed=5, size=64):
        p = images.prepare(s.data)
        drafts.append(DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, class_id=s.boxes[0].class_id,
                                 source=s.name))
    Catalog(store).commit("kinds", synthetic.CLASSES, drafts, task="classify")
    out = {}
    for s in synthetic.generate(n, seed=77, size=64):
        p = images.prepare(s.data)
        truth = s.boxes[0].class_id
        wrong = (truth + 1) % len(synthetic.CLASSES)
        top = [ClassScore(class_id=wrong, class_name=synthetic.CLASSES[wrong], confidence=0.45),
               ClassScore(class_id=truth, class_name=synthetic.CLASSES[truth], confidence=0.4)]
        rec = CaptureRecord(model="cls", version="1", reason="low-margin", image_sha256=sha256_bytes(p.data),
                            ext=p.ext, width=p.width, height=p.height, classes=list(synthetic.CLASSES), top=top)
        write_capture(store, rec, p.data)
        out[rec.id] = (rec, truth)
    return out


def test_classification_push_with_top1_preannotation_and_pull(label_studio, vl_home):
    url, env = label_studio, {"LABEL_STUDIO_API_KEY": TOKEN}
    caps = _classify_dataset_and_captures(3)
    r = run_cli("label", "push", "--url", url, "--project", "kinds-review", "--data", "kinds", env=env)
    assert r.returncode == 0, r.stderr
    assert "created" in r.stdout and "pushed 3" in r.stdout
    with _api(url) as c:
        proj = next(p for p in c.get("/api/projects", params={"page_size": 100}).json()["results"]
                    if p["title"] == "kinds-review")
        assert "<Choices" in proj["label_config"] and "RectangleLabels" not in proj["label_config"]
        tasks = c.get("/api/tasks", params={"project": proj["id"], "page_size": 100, "fields": "all"}).json()["tasks"]
        assert len(tasks) == 3
        for t in tasks:  # the model's top-1 is the pre-annotation an annotator starts from
            rec, _ = caps[t["data"][lsmod.CAPTURE_KEY]]
            preds = c.get("/api/predictions", params={"task": t["id"]}).json()
            preds = preds.get("results", preds) if isinstance(preds, dict) else preds
            assert [p["result"][0]["value"]["choices"] for p in preds] == [[rec.top[0].class_name]]
        labeled = {}
        for t in sorted(tasks, key=lambda t: t["id"])[:2]:  # the annotator corrects two of them
            rec, truth = caps[t["data"][lsmod.CAPTURE_KEY]]
            res = [{"from_name": "label", "to_name": "image", "type": "choices",
                    "value": {"choices": [synthetic.CLASSES[truth]]}}]
            assert c.post(f"/api/tasks/{t['id']}/annotations", json={"result": res}).status_code == 201
            labeled[rec.image_sha256] = truth

    r = run_cli("label", "pull", "--url", url, "--project", "kinds-review", "--data", "kinds", env=env)
    assert r.returncode == 0, r.stderr
    assert "created kinds@2" in r.stdout
    store = open_store()
    v1, v2 = Catalog(store).load("kinds@1"), Catalog(store).load("kinds@2")
    assert v2.task == "classify" and v2.parent == 1 and v2.classes == v1.classes
    new = {i.sha256: i for i in v2.images}
    assert set(new) == {i.sha256 for i in v1.images} | set(labeled)
    assert all(new[sha].class_id == truth and new[sha].boxes == [] for sha, truth in labeled.items())
    states = sorted(c.state for c in list_captures(store, "cls", archived=True))
    assert states == ["in_dataset", "in_dataset", "in_labeling"]


def test_push_by_strategy_sends_exactly_the_chosen_captures_with_scores(label_studio, vl_home):
    """`label push --strategy uncertainty --budget 2`: the two least confident captures go, with
    their scores in the task; the round is recorded; the next round picks from what is left."""
    url, env = label_studio, {"LABEL_STUDIO_API_KEY": TOKEN}
    _make_dataset()
    store = open_store()
    conf_of = {}
    for i, (s, conf) in enumerate(zip(synthetic.generate(5, seed=123, size=96), [0.9, 0.3, 0.7, 0.2, 0.5])):
        p = images.prepare(s.data)
        x1, y1, x2, y2 = s.boxes[0].to_xyxy(p.width, p.height)
        det = Detection(class_id=s.boxes[0].class_id, class_name=synthetic.CLASSES[s.boxes[0].class_id],
                        confidence=conf, box=PixelBox(x1=x1, y1=y1, x2=x2, y2=y2))
        rec = CaptureRecord(model="al", version="1", reason="low-confidence", image_sha256=sha256_bytes(p.data),
                            ext=p.ext, width=p.width, height=p.height, classes=list(synthetic.CLASSES), detections=[det])
        write_capture(store, rec, p.data)
        conf_of[rec.id] = conf
    args = ["label", "push", "--url", url, "--project", "shapes-al", "--data", "shapes", "--model", "al"]

    r = run_cli(*args, "--strategy", "uncertainty", "--budget", "2", "--control", "0", env=env)
    assert r.returncode == 0, r.stderr
    assert "pushed 2" in r.stdout and "2 of 5 waiting" in r.stdout and "least_conf 0.800" in r.stdout
    with _api(url) as c:
        pid = next(p["id"] for p in c.get("/api/projects").json()["results"] if p["title"] == "shapes-al")
    tasks = _tasks(url, pid)
    assert sorted(conf_of[t["data"][lsmod.CAPTURE_KEY]] for t in tasks) == [0.2, 0.3]
    for t in tasks:
        assert t["data"]["visionloop_least_confidence"] == pytest.approx(1 - conf_of[t["data"][lsmod.CAPTURE_KEY]])
        assert t["total_predictions"] == 1
    rounds = [k for k in store.list("rounds/al")]
    assert len(rounds) == 1
    plan = json.loads(store.read_bytes(f"rounds/al/{rounds[0]}"))
    assert plan["strategy"] == "uncertainty" and [p["control"] for p in plan["picked"]] == [False, False]

    # round 2 chooses among the 3 still pending: the most uncertain of them is conf 0.5
    r2 = run_cli(*args, "--strategy", "uncertainty", "--budget", "1", "--control", "0", env=env)
    assert r2.returncode == 0 and "pushed 1" in r2.stdout, r2.stdout + r2.stderr
    assert sorted(conf_of[t["data"][lsmod.CAPTURE_KEY]] for t in _tasks(url, pid)) == [0.2, 0.3, 0.5]

    # no --strategy: the bench's default for one model (no challenger registered): random
    r3 = run_cli(*args, "--budget", "1", env=env)
    assert r3.returncode == 0 and "pushed 1" in r3.stdout and "by random" in r3.stdout, r3.stdout + r3.stderr
    assert len(_tasks(url, pid)) == 4

    bad = run_cli(*args, "--strategy", "smartest", "--budget", "1", env=env)
    assert bad.returncode != 0 and "--strategy must be one of" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert len(_tasks(url, pid)) == 4
