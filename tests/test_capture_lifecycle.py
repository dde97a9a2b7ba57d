"""Capture lifecycle: states move, the cap counts only what waits for a human, nothing is lost."""

from __future__ import annotations

import json
import shutil

import pytest

from capture_helpers import CLASSES, detector, metric, png, serving, wait_for
from conftest import run_cli
from visionloop.datasets.manifest import YoloBox
from visionloop.errors import ValidationError
from visionloop.feedback import inbox
from visionloop.feedback.inbox import CaptureRecord, count_by_state, count_waiting, list_captures, set_state
from visionloop.serving.capture import CaptureJob, CapturePolicy, CaptureWriter
from visionloop.serving.metrics import Metrics
from visionloop.store import Store, sha256_bytes


def _write(store: Store, n: int, model: str = "m", start: int = 0) -> list[CaptureRecord]:
    out = []
    for i in range(start, start + n):
        data = png(i)
        rec = CaptureRecord(model=model, version="1", reason="low-confidence", image_sha256=sha256_bytes(data),
                            ext="png", width=48, height=40, classes=CLASSES, created_at=f"2025-01-01T00:00:{i:02d}+00:00")
        out.append(inbox.write_capture(store, rec, data))
    return out


def test_states_move_and_counts_add_up(tmp_path):
    store = Store(str(tmp_path / "store"))
    r = _write(store, 5)
    assert count_by_state(store) == {"pending": 5, "in_labeling": 0, "labeled": 0, "in_dataset": 0, "discarded": 0}
    r[0], r[1] = (set_state(store, x, "in_labeling") for x in r[:2])
    r[1] = set_state(store, r[1], "in_dataset", dataset="shapes@2")
    r[2] = inbox.label_capture(store, r[2], [YoloBox(class_id=1, cx=0.5, cy=0.5, w=0.2, h=0.2)])
    r[3] = set_state(store, r[3], "discarded")
    assert count_by_state(store, "m") == {"pending": 1, "in_labeling": 1, "labeled": 1, "in_dataset": 1, "discarded": 1}
    assert count_waiting(store, "m") == 2
    assert {x.id for x in list_captures(store, "m")} == {r[0].id, r[2].id, r[4].id}  # the hot path only
    everything = {x.id: x for x in list_captures(store, archived=True)}
    assert set(everything) == {x.id for x in r}
    assert everything[r[1].id].dataset == "shapes@2" and everything[r[1].id].state_at
    assert everything[r[2].id].labels[0].class_id == 1 and everything[r[2].id].state == "labeled"
    assert not store.exists(f"inbox/m/{r[1].id}.json") and store.exists(f"inbox-archive/m/in_dataset/{r[1].id}.json")
    assert all(store.has_blob(x.image_sha256) for x in r)  # archived, never deleted
    assert [x.id for x in list_captures(store, "m", states={"discarded"}, archived=True)] == [r[3].id]
    with pytest.raises(ValidationError, match="in_dataset needs"):
        set_state(store, r[0], "in_dataset")
    with pytest.raises(ValidationError, match="outside its 2 classes"):
        inbox.label_capture(store, r[0], [YoloBox(class_id=7, cx=0.5, cy=0.5, w=0.1, h=0.1)])
    restored = set_state(store, r[3], "pending")  # taken back out of the archive: counted once
    assert restored.state == "pending" and count_by_state(store)["discarded"] == 0
    assert sum(count_by_state(store).values()) == 5


def test_old_records_and_crash_twins_load_once(tmp_path):
    store = Store(str(tmp_path / "store"))
    old = {"id": "old1", "created_at": "2024-01-01T00:00:00+00:00", "model": "m", "version": "1",
           "reason": "flagged", "image_sha256": "0" * 64, "ext": "png", "width": 4, "height": 4}
    store.write_bytes("inbox/m/old1.json", json.dumps(old).encode())
    store.write_bytes("inbox/m/old2.json", json.dumps({**old, "id": "old2", "labels": []}).encode())
    states = {x.id: x.state for x in list_captures(store, "m")}
    assert states == {"old1": "pending", "old2": "labeled"}
    (rec,) = _write(store, 1)
    moved = set_state(store, rec, "in_dataset", dataset="d@3")
    inbox.update_capture(store, rec)  # a crash between archive copy and hot delete leaves both
    assert store.exists(f"inbox/m/{rec.id}.json")
    assert count_by_state(store, "m") == {"pending": 1, "in_labeling": 0, "labeled": 1, "in_dataset": 1, "discarded": 0}
    assert rec.id not in {x.id for x in list_captures(store, "m")}  # the archive wins
    assert inbox.read_capture(store, "m", rec.id) == moved


def _job(i: int, model: str = "m") -> CaptureJob:
    return CaptureJob(model, "1", "low-confidence", png(i), CLASSES, [])


def _writer(store: Store, **policy) -> tuple[CaptureWriter, Metrics]:
    metrics = Metrics()
    return CaptureWriter(CapturePolicy(mode="all", recount_s=0, **policy), metrics, store.url), metrics


def _value(metrics: Metrics, name: str, **labels) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_cap_counts_only_waiting_and_the_writer_keeps_capturing(tmp_path):
    store = Store(str(tmp_path / "store"))
    writer, metrics = _writer(store, max_per_model=3)
    for i in range(5):
        assert writer.submit(_job(i))
    writer.flush()
    assert count_waiting(store, "m") == 3
    assert _value(metrics, "visionloop_captures_dropped_total", model="m", why="inbox_full") == 2
    # another process (label pull, the loop) moves captures on: room again, without a restart
    first = list_captures(store, "m")
    set_state(store, first[0], "in_dataset", dataset="d@2")
    set_state(store, first[1], "in_dataset", dataset="d@2")
    inbox.label_capture(store, first[2], [])  # labeled: waits for the loop, not for a human
    for i in range(5, 8):
        writer.submit(_job(i))
    writer.flush()
    writer.close()
    counts = count_by_state(store, "m")
    assert counts["pending"] == 3 and counts["labeled"] == 1 and counts["in_dataset"] == 2
    written = _value(metrics, "visionloop_captures_total", model="m", reason="low-confidence")
    assert written == sum(counts.values()) == 6 > 3  # more than --capture-max in total, every one accounted for
    assert _value(metrics, "visionloop_captures_waiting", model="m") == 3


def test_drop_oldest_discards_the_oldest_pending_never_one_in_labeling(tmp_path):
    store = Store(str(tmp_path / "store"))
    writer, metrics = _writer(store, max_per_model=2, full="drop-oldest")
    for i in range(4):
        writer.submit(_job(i))
        writer.flush()  # one at a time: created_at orders them
    hot = list_captures(store, "m")
    assert [x.image_sha256 for x in hot] == [sha256_bytes(png(i)) for i in (2, 3)]
    discarded = list_captures(store, "m", states={"discarded"}, archived=True)
    assert [x.image_sha256 for x in discarded] == [sha256_bytes(png(i)) for i in (0, 1)]
    set_state(store, hot[0], "in_labeling")  # pushed to Label Studio: a human has it now
    writer.submit(_job(4))
    writer.flush()
    writer.close()
    states = {x.image_sha256: x.state for x in list_captures(store, "m", archived=True)}
    assert states[sha256_bytes(png(2))] == "in_labeling" and states[sha256_bytes(png(3))] == "discarded"
    assert states[sha256_bytes(png(4))] == "pending"
    assert sum(count_by_state(store, "m").values()) == 5
    assert _value(metrics, "visionloop_captures_discarded_total", model="m") == 3


def _predict(client, value: int) -> None:
    r = client.post("/v1/models/det/predict", files={"file": ("a.png", png(value), "image/png")})
    assert r.status_code == 200, r.text


def test_server_keeps_capturing_past_the_cap_and_survives_a_store_failure(tmp_path):
    from visionloop.monitoring.predlog import read_predictions
    from visionloop.serving.config import ServeConfig

    url = str(tmp_path / "store")
    config = ServeConfig(models=[f"det={detector(tmp_path / 'det.onnx')}"], store_url=url,
                         capture=CapturePolicy(mode="all", max_per_model=2, recount_s=0))
    store = Store(url)
    with serving(config) as (client, st):
        for v in (10, 20, 30):
            _predict(client, v)
        assert wait_for(lambda: metric(client, "visionloop_captures_dropped_total", why="inbox_full") == 1)
        assert count_waiting(store, "det") == 2
        for rec in list_captures(store, "det"):  # labeled and taken into a dataset elsewhere
            set_state(store, rec, "in_dataset", dataset="d@2")
        for v in (40, 50):
            _predict(client, v)
        assert wait_for(lambda: metric(client, "visionloop_captures_total", model="det") == 4)
        assert sum(count_by_state(store, "det").values()) == 4 > config.capture.max_per_model

        # the store breaks under the server: the inbox folder becomes a file
        shutil.rmtree(tmp_path / "store" / "inbox" / "det")
        (tmp_path / "store" / "inbox" / "det").write_text("not a folder")
        before = metric(client, "visionloop_captures_dropped_total", why="store_error")
        for v in (60, 70):
            _predict(client, v)
        assert wait_for(lambda: metric(client, "visionloop_captures_dropped_total", why="store_error") == before + 2)
        assert client.get("/health").status_code == 200

        st.predlog.flush()  # every answered prediction has its record, brightness from the pixels
        recs = read_predictions(store, "det")
        assert len(recs) == 7 and {r.version for r in recs} == {st.manager.get("det").version}
        assert [round(r.brightness) for r in recs] == [10, 20, 30, 40, 50, 60, 70]
        assert all(r.classes == {"cat": 1, "dog": 1} and sorted(r.confidences) == pytest.approx([0.4, 0.9])
                   and (r.width, r.height) == (48, 40) for r in recs)


def test_no_prediction_log_writes_none_and_log_failures_are_counted(tmp_path):
    from visionloop.serving.config import ServeConfig

    blocker = tmp_path / "file"
    blocker.write_text("a file where the store should be")
    model = f"det={detector(tmp_path / 'det.onnx')}"
    with serving(ServeConfig(models=[model], store_url=str(tmp_path / "s"), prediction_log=False)) as (client, st):
        _predict(client, 5)
        assert st.predlog is None
    assert not (tmp_path / "s" / "predlog").exists()
    with serving(ServeConfig(models=[model], store_url=str(blocker / "store"))) as (client, st):
        _predict(client, 5)
        st.predlog.flush()
        assert metric(client, "visionloop_predlog_dropped_total", why="write_failed") == 1


def test_data_inbox_shows_counts_that_add_up(vl_home):
    from visionloop.store import open_store

    store = open_store()
    r = _write(store, 4, model="shapes")
    set_state(store, r[0], "in_labeling")
    set_state(store, r[1], "in_dataset", dataset="shapes@2")
    set_state(store, r[2], "discarded")
    env = {"COLUMNS": "250"}
    counts = json.loads(run_cli("data", "inbox", "--counts", "--json", env=env).stdout)
    assert counts["counts"] == {"pending": 1, "in_labeling": 1, "labeled": 0, "in_dataset": 1, "discarded": 1}
    assert counts["total"] == 4
    listed = json.loads(run_cli("data", "inbox", "--model", "shapes", "--json", env=env).stdout)
    assert sorted(x["state"] for x in listed) == ["in_labeling", "pending"]
    gone = json.loads(run_cli("data", "inbox", "--state", "in_dataset", "--json", env=env).stdout)
    assert [(x["id"], x["dataset"]) for x in gone] == [(r[1].id, "shapes@2")]
    table = run_cli("data", "inbox", env=env)
    assert table.returncode == 0 and "4 captured" in table.stdout and "in_labeling" in table.stdout
    bad = run_cli("data", "inbox", "--state", "lost")
    assert bad.returncode != 0 and "lost" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_new_dataset_version_moves_its_labeled_captures_to_in_dataset(tmp_path):
    from visionloop.datasets import images, synthetic
    from visionloop.feedback import relabel

    store = Store(str(tmp_path / "store"))
    v1 = synthetic.commit_generated(store, "shapes", 6, seed=0, size=64)
    recs = []
    for s in synthetic.generate(3, seed=5, size=64):
        p = images.prepare(s.data)
        rec = CaptureRecord(model="m", version="1", reason="flagged", image_sha256=sha256_bytes(p.data), ext=p.ext,
                            width=p.width, height=p.height, classes=synthetic.CLASSES)
        inbox.write_capture(store, rec, p.data)
        recs.append(inbox.label_capture(store, rec, s.boxes))
    items = [relabel.from_capture(r, v1.classes) for r in relabel.labeled_captures(store, "m")]
    res = relabel.commit_labeled(store, v1, items, source="inbox:m")
    assert res.created and res.manifest.ref == "shapes@2"
    taken = list_captures(store, "m", archived=True)
    assert {(r.state, r.dataset) for r in taken} == {("in_dataset", "shapes@2")} and len(taken) == 3
    assert relabel.labeled_captures(store, "m") == [] and count_waiting(store, "m") == 0
    again = relabel.commit_labeled(store, res.manifest, [relabel.from_capture(r, v1.classes) for r in taken], "again")
    assert not again.created  # nothing new; the captures keep the version that took them
    assert {r.dataset for r in list_captures(store, "m", archived=True)} == {"shapes@2"}
