"""Drift: PSI on known distributions, and `visionloop monitor` on a real inbox."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from visionloop.errors import ValidationError
from visionloop.feedback.inbox import CaptureRecord, write_capture
from visionloop.monitoring.drift import CONF_BINS, DriftReport, drift_report, parse_since, psi
from visionloop.predictions import Detection, PixelBox
from visionloop.store import open_store


def test_psi_zero_for_same_distribution_and_large_for_shifted():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.0, 2000)
    b = rng.uniform(0.5, 1.0, 2000)
    c = rng.uniform(0.0, 0.4, 2000)
    assert psi(a, b, CONF_BINS) < 0.05
    assert psi(a, c, CONF_BINS) > 1.0
    assert psi(a, np.array([]), CONF_BINS) == 0.0


def test_parse_since():
    assert parse_since("24h") == timedelta(hours=24)
    assert parse_since("30m") == timedelta(minutes=30)
    with pytest.raises(ValidationError, match="bad --since"):
        parse_since("yesterday")


def _record(conf: float, when: datetime) -> CaptureRecord:
    det = Detection(class_id=0, class_name="a", confidence=conf, box=PixelBox(x1=0, y1=0, x2=5, y2=5))
    return CaptureRecord(model="m", version="1", reason="all", image_sha256="0" * 64, ext="png",
                         width=10, height=10, detections=[det], created_at=when.isoformat())


def test_drift_report_splits_windows():
    now = datetime.now(timezone.utc)
    old = [_record(0.9, now - timedelta(days=2)) for _ in range(50)]
    new = [_record(0.2, now - timedelta(minutes=5)) for _ in range(50)]
    rep = drift_report("m", old + new, timedelta(hours=1), threshold=0.25, now=now)
    assert rep.reference.images == 50 and rep.current.images == 50
    assert rep.drifted and rep.psi_confidence > 0.25
    stable = drift_report("m", old, timedelta(hours=1), now=now)
    assert not stable.drifted


def _capture(n: int, conf: float, age: timedelta, tag: str) -> None:
    """``n`` inbox records of one confidence, ``age`` old (distinct images: ``tag`` + index)."""
    store, now = open_store(), datetime.now(timezone.utc)
    for i in range(n):
        write_capture(store, _record(conf, now - age), f"{tag}{i}".encode())


def test_monitor_cli_exit_codes(vl_home, cli):
    _capture(20, 0.9, timedelta(days=2), "old")
    ok = cli("monitor", "--model", "m", "--since", "1h")
    assert ok.returncode == 0, ok.stderr
    assert "no drift" in ok.stdout
    _capture(20, 0.15, timedelta(0), "new")
    drifted = cli("monitor", "--model", "m", "--since", "1h")
    assert drifted.returncode == 3
    assert "drift detected" in drifted.stdout
    missing = cli("monitor", "--model", "nobody")
    assert missing.returncode == 1
    assert missing.stderr.strip().startswith("error: no captured predictions")
    assert "Traceback" not in missing.stderr


def test_monitor_json_is_one_document(vl_home, cli):
    _capture(10, 0.9, timedelta(days=2), "old")
    stable = cli("monitor", "--model", "m", "--since", "1h", "--json")
    assert stable.returncode == 0, stable.stderr
    assert json.loads(stable.stdout)["drifted"] is False and json.loads(stable.stdout)["current"]["images"] == 0
    _capture(10, 0.15, timedelta(0), "new")
    r = cli("monitor", "--model", "m", "--since", "1h", "--json")
    assert r.returncode == 3, r.stderr  # drift: still the exit code a scheduler acts on
    doc = json.loads(r.stdout)  # the whole of stdout is one JSON document
    report = DriftReport.model_validate(doc)
    assert doc["drifted"] is True and report.drifted
    assert (report.reference.images, report.current.images) == (10, 10)
    assert report.psi_confidence > 0.25 and report.current.mean_confidence == pytest.approx(0.15)
