"""/v1/feedback cannot be abused: a token when set, a rate limit per client, bounded bodies,
class ids checked against the model, and the capture cap. Errors keep the one JSON shape."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from capture_helpers import detector, metric, png, serving, wait_for
from conftest import run_cli
from visionloop.feedback.inbox import count_by_state, list_captures
from visionloop.serving.capture import CapturePolicy
from visionloop.serving.config import ServeConfig
from visionloop.serving.ratelimit import Rate, RateLimiter, parse_rate
from visionloop.store import Store

GOOD = [{"class_id": 1, "class_name": "dog", "confidence": 0.9, "box": {"x1": 1, "y1": 2, "x2": 30, "y2": 20}}]


def _config(tmp_path, **kw) -> ServeConfig:
    kw.setdefault("capture", CapturePolicy(mode="none"))
    return ServeConfig(models=[f"det={detector(tmp_path / 'det.onnx')}"], store_url=str(tmp_path / "store"), **kw)


def _body(value: int = 1, detections=GOOD, **extra) -> dict:
    return {"model": "det", "image": base64.b64encode(png(value)).decode(), "detections": detections, **extra}


def _error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert set(r.json()) == {"error"} and r.json()["error"]["code"] == code and r.json()["error"]["message"]


def test_feedback_needs_the_token_when_the_server_has_one(tmp_path):
    with serving(_config(tmp_path, feedback_token=SecretStr("fb-secret"))) as (client, _):
        _error(client.post("/v1/feedback", json=_body()), 401, "unauthorized")
        _error(client.post("/v1/feedback", json=_body(), headers={"Authorization": "Bearer nope"}), 401, "unauthorized")
        ok = client.post("/v1/feedback", json=_body(), headers={"Authorization": "Bearer fb-secret"})
        assert ok.status_code == 202, ok.text
        assert "fb-secret" not in client.get("/metrics").text + client.get("/v1/models").text
        assert metric(client, "visionloop_feedback_refused_total", why="unauthorized") == 2
    (rec,) = list_captures(Store(str(tmp_path / "store")), "det")
    assert rec.id == ok.json()["id"] and rec.reason == "flagged" and rec.state == "pending"
    (tmp_path / "open").mkdir()
    with serving(_config(tmp_path / "open")) as (client, _):
        assert client.post("/v1/feedback", json=_body()).status_code == 202  # no token configured: open


def test_feedback_over_the_rate_gets_429_with_retry_after(tmp_path):
    with serving(_config(tmp_path, feedback_rate="2/min")) as (client, _):
        assert [client.post("/v1/feedback", json=_body(i)).status_code for i in range(2)] == [202, 202]
        r = client.post("/v1/feedback", json=_body(3))
        _error(r, 429, "rate_limited")
        assert 1 <= int(r.headers["retry-after"]) <= 30  # one token back every 30 s
        assert metric(client, "visionloop_feedback_refused_total", why="rate_limited") == 1
        # predictions are not limited by the feedback rate
        assert client.post("/v1/models/det/predict", files={"file": ("a.png", png(1))}).status_code == 200


def test_unknown_class_ids_are_422_and_nothing_is_captured(tmp_path):
    with serving(_config(tmp_path)) as (client, st):
        wrong_id = [{**GOOD[0], "class_id": 7}]
        wrong_name = [{**GOOD[0], "class_id": 0}]  # id 0 is cat, not dog
        _error(client.post("/v1/feedback", json=_body(detections=wrong_id)), 422, "unknown_class")
        r = client.post("/v1/feedback", json=_body(detections=wrong_name))
        _error(r, 422, "unknown_class")
        assert "0:dog" in r.json()["error"]["message"] and "cat, dog" in r.json()["error"]["message"]
        _error(client.post("/v1/feedback", json=_body(detections=GOOD * 1001)), 422, "bad_parameter")
        assert client.post("/v1/feedback", json=_body()).status_code == 202
        st.captures.flush()
        assert metric(client, "visionloop_feedback_refused_total", why="bad_class") == 2
    assert len(list_captures(Store(str(tmp_path / "store")), "det")) == 1


def test_feedback_body_has_its_own_smaller_limit(tmp_path):
    big = png(9, size=(600, 600)) + b"\0" * 80_000  # a valid PNG with trailing bytes: decodes fine
    with serving(_config(tmp_path, feedback_max_body_bytes=64 * 1024)) as (client, _):
        doc = {"model": "det", "image": base64.b64encode(big).decode()}
        _error(client.post("/v1/feedback", json=doc), 413, "too_large")
        assert client.post("/v1/models/det/predict", json={"image": doc["image"]}).status_code == 200


@pytest.mark.parametrize("full", ["refuse", "drop-oldest"])
def test_feedback_counts_against_the_capture_cap(tmp_path, full):
    cfg = _config(tmp_path, capture=CapturePolicy(mode="none", max_per_model=1, full=full, recount_s=3600))
    store = Store(str(tmp_path / "store"))
    with serving(cfg) as (client, st):
        assert client.post("/v1/feedback", json=_body(1)).status_code == 202
        st.captures.flush()
        second = client.post("/v1/feedback", json=_body(2))
        st.captures.flush()
        if full == "refuse":
            _error(second, 503, "inbox_full")
            assert second.headers["retry-after"]
            assert metric(client, "visionloop_feedback_refused_total", why="inbox_full") == 1
        else:  # the older flag makes room: discarded (archived), not deleted
            assert second.status_code == 202
            assert wait_for(lambda: count_by_state(store, "det")["discarded"] == 1)
        assert sum(count_by_state(store, "det").values()) == (1 if full == "refuse" else 2)


def test_rate_limiter_refills_and_stays_bounded():
    now = [0.0]
    lim = RateLimiter(parse_rate("3/min"), max_clients=2, clock=lambda: now[0])
    assert [lim.check("a") for _ in range(3)] == [0, 0, 0]
    wait = lim.check("a")
    assert wait == pytest.approx(20.0) and lim.retry_after(wait) == "20"
    now[0] = 20.0
    assert lim.check("a") == 0 and lim.check("a") > 0  # one token back after 20 s, not more
    lim.check("b"), lim.check("c")
    assert len(lim._buckets) == 2 and "a" not in lim._buckets  # least recently seen evicted
    assert parse_rate("0") == Rate(0.0, 0.0) and RateLimiter(parse_rate("off")).check("x") == 0
    assert parse_rate("10/s").per_second == 10 and parse_rate("120/h").burst == 120
    assert parse_rate("5/day").per_second == 5 / 86400  # capture caps per day
    for bad in ("fast", "5/week", "-1/min"):
        with pytest.raises(ValueError, match="N/s, N/min, N/h or N/d"):
            parse_rate(bad)


def test_cli_refuses_a_bad_feedback_rate_or_capture_full(tmp_path, vl_home):
    for args, words in [(["--feedback-rate", "5/week"], "--feedback-rate '5/week'"),
                        (["--capture-caps", "5/week"], "--capture-caps '5/week'"),
                        (["--capture-aggregate", "median"], "--capture-aggregate must be one of"),
                        (["--capture-full", "sometimes"], "--capture-full")]:
        r = run_cli("serve", "--model", str(tmp_path / "m.onnx"), *args, "--port", "1")
        assert r.returncode != 0 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_served_cli_takes_the_token_from_the_environment(tmp_path):
    from serving_helpers import Server

    srv = Server([f"det={detector(tmp_path / 'det.onnx')}"], tmp_path, "--feedback-rate", "100/min",
                 env={"VISIONLOOP_HOME": str(tmp_path / "home"), "VISIONLOOP_FEEDBACK_TOKEN": "env-secret-42"})
    try:
        _error(srv.client.post("/v1/feedback", json=_body()), 401, "unauthorized")
        ok = srv.client.post("/v1/feedback", json=_body(), headers={"Authorization": "Bearer env-secret-42"})
        assert ok.status_code == 202, ok.text
    finally:
        srv.stop()
    assert "env-secret-42" not in srv.log.read_text()
