"""The page at /ui, in a real headless Chromium against a real `visionloop serve` process.

Each state is saved as a screenshot under the test's temp dir; ``VISIONLOOP_UI_SHOTS`` names a
folder to copy them to (the README's picture is made that way).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from browser_helpers import PageLog, launch
from conftest import RPS
from serving_helpers import TOKEN, Server, constant_model, second_version

RPS_IMAGE = sorted((RPS / "test" / "images").iterdir())[0]
CLASSIFY_META = {"names": "{0: 'rock', 1: 'paper', 2: 'scissors', 3: 'none'}", "imgsz": "[64, 64]", "task": "classify"}
UI_DIR = Path(__file__).resolve().parents[1] / "src" / "visionloop" / "serving" / "ui"


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ui-home")


@pytest.fixture(scope="module")
def server(tiny_model, home, tmp_path_factory):
    """Two detectors (the trained one and a second version of it) and a classifier."""
    tmp = tmp_path_factory.mktemp("ui-models")
    other = second_version(tiny_model.onnx, tmp / "other.onnx")
    probs = np.array([[0.1, 0.6, 0.25, 0.05]], np.float32)
    cls = constant_model(tmp / "cls.onnx", probs, CLASSIFY_META)
    srv = Server([f"shapes={tiny_model.onnx}", f"other={other}", f"rps-cls={cls}"], tmp,
                 env={"VISIONLOOP_HOME": str(home)})
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = launch(p, tmp_path_factory.mktemp("chromium-profile"))
        yield ctx
        ctx.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ui-screenshots")
    yield out
    if target := os.environ.get("VISIONLOOP_UI_SHOTS"):
        shutil.copytree(out, target, dirs_exist_ok=True)


@pytest.fixture
def page(browser, server):
    pg = browser.new_page()
    log = PageLog()
    log.attach(pg)
    pg.goto(server.url + "/")  # the root redirects to the page
    pg.wait_for_function("() => document.querySelectorAll('#model option').length === 3")
    pg.log = log
    yield pg
    pg.close()


def set_slider(page, sel: str, value: float) -> None:
    page.fill(sel, str(value))  # sets the range input and fires `input`, as a drag would


def wait_answer(page, model: str, asked: float, since: int = 0) -> None:
    """Until the page has drawn an answer of ``model`` asked at confidence ``asked``."""
    page.wait_for_function("([m, c, n]) => { const s = document.getElementById('summary');"
                           " return s.dataset.model === m && Number(s.dataset.asked) === c && Number(s.dataset.seq) > n; }",
                           arg=[model, asked, since])


def drawn(page) -> list[tuple[str, float]]:
    rows = page.eval_on_selector_all("#detections li", "els => els.map(e => [e.dataset.class, Number(e.dataset.conf)])")
    return [(c, conf) for c, conf in rows]


def api(server, model: str, path: Path, conf: float) -> list[tuple[str, float]]:
    r = server.client.post(f"/v1/models/{model}/predict", params={"conf": conf},
                           files={"file": (path.name, path.read_bytes(), "image/jpeg")})
    assert r.status_code == 200, r.text
    return [(d["class_name"], d["confidence"]) for d in r.json()["detections"]]


def seq(page) -> int:
    return int(page.eval_on_selector("#summary", "s => Number(s.dataset.seq || 0)"))


def test_page_loads_lists_models_with_a_csp_and_no_console_errors(page, server, shots):
    options = page.eval_on_selector_all("#model option", "os => os.map(o => o.value)")
    assert options == ["shapes", "other", "rps-cls"]
    assert page.url.endswith("/ui")
    labels = page.eval_on_selector_all("#model option", "os => os.map(o => o.textContent)")
    assert "rps-cls" in labels[2] and "classify" in labels[2] and "detect" in labels[0]
    rows = page.eval_on_selector_all("#status tbody tr", "rs => rs.map(r => r.dataset.model)")
    assert rows == options
    resp = server.client.get("/ui")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    page.screenshot(path=shots / "1-loaded.png", full_page=True)
    assert page.log.errors == []


def test_no_inline_handlers_or_eval_and_the_page_is_light():
    html = (UI_DIR / "index.html").read_text()
    js = (UI_DIR / "app.js").read_text()
    assert not re.search(r"\son[a-z]+\s*=", html), "inline event handler in index.html"
    assert "<script>" not in html and "style=" not in html
    assert not re.search(r"\beval\(|new Function\(|setTimeout\(\s*['\"]", js)
    assert "localStorage" not in js and "sessionStorage" not in js  # tokens stay in memory
    from visionloop.serving.ui_routes import page_bytes

    weight = page_bytes()
    print(f"page weight: {weight} bytes uncompressed (html, css, js and the examples)")
    assert weight <= 200 * 1024


def test_upload_draws_what_the_api_returns_and_the_slider_filters_exactly(page, server, shots):
    set_slider(page, "#conf", 0.001)
    page.set_input_files("#file", str(RPS_IMAGE))
    wait_answer(page, "shapes", 0.001)
    expected = api(server, "shapes", RPS_IMAGE, 0.001)
    assert len(expected) >= 2, "the model found nothing: the comparison would compare nothing"
    got = drawn(page)
    assert sorted(got) == sorted(expected)  # same count, classes and confidences
    page.screenshot(path=shots / "2-predicted.png", full_page=True)

    # a threshold between two confidences, inside what was asked: filtered in the page, no new request
    confs = sorted({c for _, c in expected})
    mid = len(confs) // 2
    threshold = round((confs[mid - 1] + confs[mid]) / 2, 6) if len(confs) > 1 else confs[0]
    requests = page.log.finished
    set_slider(page, "#conf", threshold)
    page.wait_for_function("t => document.getElementById('summary').dataset.shown === String(t)", arg=threshold)
    at_threshold = api(server, "shapes", RPS_IMAGE, threshold)
    assert 0 < len(drawn(page)) < len(got)
    assert Counter(c for c, _ in drawn(page)) == Counter(c for c, _ in at_threshold)
    assert sorted(drawn(page)) == sorted(at_threshold)
    assert page.log.finished == requests
    count = page.eval_on_selector("#summary", "s => Number(s.dataset.count)")
    assert count == len(at_threshold)
    timing = page.eval_on_selector_all("#timing td", "tds => tds.map(t => t.textContent)")
    assert all(t.endswith(" ms") for t in timing)
    raw = page.text_content("#json")
    assert '"detections"' in raw and '"timing_ms"' in raw
    marks = page.evaluate("performance.getEntriesByName('vl-answer-to-drawn').map(e => e.duration)")
    assert marks, "the page measures the time from the answer to the drawn boxes"
    print(f"answer→drawn: {marks} ms")
    assert page.log.errors == []


def test_iou_slider_asks_again_and_matches_the_api(page, server):
    set_slider(page, "#conf", 0.001)
    page.set_input_files("#file", str(RPS_IMAGE))
    wait_answer(page, "shapes", 0.001)
    before = seq(page)
    set_slider(page, "#iou", 0.3)
    page.wait_for_function("n => Number(document.getElementById('summary').dataset.seq) > n"
                           " && document.getElementById('summary').dataset.iou === '0.3'", arg=before)
    r = server.client.post("/v1/models/shapes/predict", params={"conf": 0.001, "iou": 0.3},
                           files={"file": ("a.jpg", RPS_IMAGE.read_bytes(), "image/jpeg")})
    assert sorted(drawn(page)) == sorted((d["class_name"], d["confidence"]) for d in r.json()["detections"])


def test_examples_drag_and_drop_and_paste_each_get_a_prediction(page):
    page.click(".example >> nth=1")
    page.wait_for_function("() => document.getElementById('summary').dataset.seq === '1'")
    for event in ("drop", "paste"):  # a real File in a DataTransfer, as a drag or Ctrl+V delivers it
        before = seq(page)
        page.evaluate("""async ([kind]) => {
            const blob = await (await fetch('/ui/examples/shapes-3.jpg')).blob();
            const dt = new DataTransfer();
            dt.items.add(new File([blob], kind + '.jpg', {type: 'image/jpeg'}));
            const target = kind === 'drop' ? document.getElementById('drop') : document;
            target.dispatchEvent(kind === 'drop' ? new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true})
                                                 : new ClipboardEvent('paste', {clipboardData: dt, bubbles: true}));
        }""", [event])
        page.wait_for_function("n => Number(document.getElementById('summary').dataset.seq) > n", arg=before)
    assert page.log.finished == 3 and page.log.errors == []


def test_camera_snapshot_and_live_mode_keep_one_request_in_flight(page, server, shots):
    set_slider(page, "#conf", 0.001)
    page.click("#cam-start")
    page.wait_for_function("() => document.getElementById('video').readyState >= 2")
    page.click("#cam-snap")
    wait_answer(page, "shapes", 0.001)
    assert page.eval_on_selector("#summary", "s => s.textContent").startswith("shapes file:")
    start = page.log.finished
    page.click("#cam-live")
    deadline = time.monotonic() + 60
    while page.log.finished < start + 8 and time.monotonic() < deadline:
        page.wait_for_timeout(200)
    page.screenshot(path=shots / "3-live-camera.png", full_page=True)
    page.click("#cam-live")
    page.click("#cam-stop")
    assert page.log.finished >= start + 8, "live mode sent too few frames"
    assert page.log.max_in_flight == 1
    assert page.log.errors == []


def test_flag_as_wrong_puts_the_image_and_note_in_the_inbox(page, server, home, shots):
    set_slider(page, "#conf", 0.001)
    page.set_input_files("#file", str(RPS_IMAGE))
    wait_answer(page, "shapes", 0.001)
    page.check("input[name=kind][value=missed]")
    page.select_option("#flag-class", "circle")
    page.fill("#flag-note", "the hand in the corner")
    page.click("#flag-send")
    page.wait_for_function("() => document.getElementById('flag-result').dataset.id")
    rec_id = page.eval_on_selector("#flag-result", "e => e.dataset.id")
    page.screenshot(path=shots / "4-flagged.png", full_page=True)

    from visionloop.feedback.inbox import read_capture
    from visionloop.store import Store

    store = Store(str(home / "store"))
    deadline = time.monotonic() + 20
    while (rec := read_capture(store, "shapes", rec_id)) is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert rec is not None and rec.reason == "flagged"
    assert rec.note == "[missed] correct class: circle the hand in the corner"
    assert store.get_blob(rec.image_sha256) == RPS_IMAGE.read_bytes()  # the very bytes the user chose
    assert rec.image_sha256 == hashlib.sha256(RPS_IMAGE.read_bytes()).hexdigest()
    assert sorted((d.class_name, d.confidence) for d in rec.detections) == sorted(drawn(page))


def test_compare_shows_both_models(page, server, shots):
    set_slider(page, "#conf", 0.001)
    page.set_input_files("#file", str(RPS_IMAGE))
    wait_answer(page, "shapes", 0.001)
    page.select_option("#compare-a", "shapes")
    page.select_option("#compare-b", "other")
    page.click("#compare-run")
    page.wait_for_function("() => [...document.querySelectorAll('#compare figure')].every(f => f.dataset.count)")
    counts = page.eval_on_selector_all("#compare figure", "fs => fs.map(f => [f.dataset.model, Number(f.dataset.count)])")
    r = server.client.post("/v1/compare", params={"models": "shapes,other", "conf": 0.001},
                           files={"file": ("a.jpg", RPS_IMAGE.read_bytes(), "image/jpeg")})
    want = [[i["model"], len(i["prediction"]["detections"])] for i in r.json()["results"]]
    assert counts == want and all(n > 0 for _, n in counts)
    page.screenshot(path=shots / "5-compare.png", full_page=True)


def test_api_errors_are_messages_not_a_broken_page(page, server, tmp_path, shots):
    big = tmp_path / "huge.jpg"
    big.write_bytes(b"\xff\xd8" + os.urandom(25 * 1024 * 1024))
    page.set_input_files("#file", str(big))
    page.wait_for_selector("#message:not([hidden])")
    text = page.inner_text("#message")
    assert "too large" in text and "413" in text
    page.screenshot(path=shots / "6-too-large.png", full_page=True)
    bad = tmp_path / "not-an-image.jpg"
    bad.write_bytes(b"this is text, not pixels")
    page.set_input_files("#file", str(bad))
    page.wait_for_function("() => document.getElementById('message').textContent.includes('400')")
    set_slider(page, "#conf", 0.001)
    page.set_input_files("#file", str(RPS_IMAGE))  # the page still works
    wait_answer(page, "shapes", 0.001)
    assert page.is_hidden("#message")
    assert [e for e in page.log.errors if "Failed to load resource" not in e] == []


def test_classification_model_shows_top_k_bars(page, server, shots):
    page.select_option("#model", "rps-cls")
    page.set_input_files("#file", str(RPS_IMAGE))
    page.wait_for_function("() => document.querySelectorAll('#topk .bar-row').length === 4")
    bars = page.eval_on_selector_all("#topk .bar-row", "rs => rs.map(r => [r.dataset.class, Number(r.dataset.conf)])")
    r = server.client.post("/v1/models/rps-cls/predict", files={"file": ("a.jpg", RPS_IMAGE.read_bytes(), "image/jpeg")})
    assert bars == [[c["class_name"], c["confidence"]] for c in r.json()["classes"]]
    assert bars[0][0] == "paper"
    page.screenshot(path=shots / "7-classify.png", full_page=True)


def test_status_and_admin_reload_with_the_token_kept_in_memory(page, server):
    page.fill("#admin-token", "wrong")
    page.click("#reload")
    page.wait_for_function("() => document.getElementById('reload-result').textContent.includes('401')")
    page.fill("#admin-token", TOKEN)
    page.click("#reload")
    page.wait_for_function("() => document.getElementById('reload-result').textContent.includes('already serving')")
    storage = page.evaluate("JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])")
    assert TOKEN not in storage and TOKEN not in page.evaluate("document.cookie")
    versions = page.eval_on_selector_all("#status tbody tr td:nth-child(2)", "tds => tds.map(t => t.textContent)")
    assert all(v.startswith("file:") for v in versions)


def test_usable_on_a_phone_and_by_keyboard(browser, server, shots):
    pg = browser.new_page()
    try:
        pg.set_viewport_size({"width": 390, "height": 844})
        pg.goto(server.url + "/ui")
        pg.wait_for_function("() => document.querySelectorAll('#model option').length === 3")
        assert pg.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        pg.screenshot(path=shots / "8-phone.png", full_page=True)
        seen = set()
        for _ in range(40):  # Tab through the page: every control is reachable
            pg.keyboard.press("Tab")
            seen.add(pg.evaluate("document.activeElement.id || document.activeElement.className"))
        assert {"model", "file", "conf", "iou", "cam-start", "flag-note", "admin-token"} <= seen
    finally:
        pg.close()


def test_page_files_are_only_the_shipped_ones(server):
    assert server.client.get("/ui/app.js").headers["content-type"].startswith("text/javascript")
    for bad in ("/ui/../ui_routes.py", "/ui/%2e%2e/ui_routes.py", "/ui/nope.js"):
        r = server.client.get(bad)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    b64 = base64.b64encode(RPS_IMAGE.read_bytes()).decode()
    assert server.client.post("/v1/compare", params={"models": "ghost"}, json={"image": b64}).status_code == 404
