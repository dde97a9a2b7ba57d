"""compare / promote / rollback on models trained here, with a watching server following the alias.

Three real versions of one model on one generated dataset: v1 brief (1 epoch), v2 longer
(10 epochs, clearly better), v3 brief again with another seed (clearly worse than v2).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from loop_fixtures import Server, isolated_home, make_dataset, train

from visionloop import promotion, registry

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # real trainings on a busy CPU can be slow


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    home = tmp_path_factory.mktemp("promotion-home")
    with isolated_home(home):
        data = make_dataset("shapes", 160, seed=11).ref
        v1 = train(data, "shapes", epochs=1)
        v2 = train(data, "shapes", epochs=10)  # past ultralytics' 100-iteration warm-up: it really learns
        v3 = train(data, "shapes", epochs=1, seed=3)
        yield {"home": home, "data": data, "v1": v1, "v2": v2, "v3": v3}


def vl(models, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "VISIONLOOP_HOME": str(models["home"])}
    return subprocess.run([sys.executable, "-m", "visionloop", *args], capture_output=True, text=True, env=env, timeout=600)


def test_compare_prints_table_and_json(models, monkeypatch):
    r = vl(models, "models", "compare", "shapes/1", "shapes/2", "--data", models["data"])
    assert r.returncode == 0, r.stderr
    for needle in ("mAP50", "mAP50-95", "precision", "recall", "AP50-95 circle", "AP50-95 square",
                   "AP50-95 triangle", "shapes/1", "shapes/2", "change"):
        assert needle in r.stdout
    j = vl(models, "models", "compare", "shapes/1", "shapes/2", "--json")  # default data: the models' dataset
    assert j.returncode == 0, j.stderr
    body = json.loads(j.stdout)
    assert body["data"] == models["data"] and body["split"] == "test" and body["images"] > 0
    rows = {r["metric"]: r for r in body["rows"]}
    assert rows["mAP50-95"]["b"] > rows["mAP50-95"]["a"]  # 10 epochs beat 1 on the same images
    assert rows["mAP50-95"]["change"] == pytest.approx(rows["mAP50-95"]["b"] - rows["mAP50-95"]["a"])
    # the numbers are the evaluation's own: training evaluated the same ONNX on the same split
    # independently (its card), and the CLI's evaluation is cached: reading it again evaluates nothing
    from visionloop.training import evaluate

    calls = []
    real = evaluate.run_evaluation
    monkeypatch.setattr(evaluate, "run_evaluation", lambda *a, **k: calls.append(a) or real(*a, **k))
    with isolated_home(models["home"]):
        trained = registry.get_card("shapes/2").eval
        ev = promotion.evaluate_cached(registry.resolve_model("shapes/2"),
                                       promotion.Catalog(promotion.open_store()).load(models["data"]), "test")
    assert calls == []
    assert trained is not None and trained.split == "test" and trained.images == body["images"]
    assert rows["mAP50-95"]["b"] == pytest.approx(trained.map50_95) == ev.map50_95
    assert rows["mAP50"]["b"] == pytest.approx(trained.map50)

    bad = vl(models, "models", "compare", "shapes/1", "shapes/9")
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "no version 9" in bad.stderr


def test_gate_promote_force_rollback_and_a_watching_server_follows(models, tmp_path):
    assert (models["v1"], models["v2"], models["v3"]) == ("1", "2", "3")
    server = Server(["--model", "shapes@champion", "--watch", "0.5"], tmp_path / "server.log")
    try:
        assert server.version("shapes") == "1"

        up = vl(models, "models", "promote", "shapes/2")  # better: the gate lets it through
        assert up.returncode == 0, up.stderr
        assert "1 -> 2" in up.stdout and "gate passed" in up.stdout
        assert server.wait_version("shapes", "2") == "2"

        worse = vl(models, "models", "promote", "shapes/3")  # worse than the champion: refused
        assert worse.returncode != 0
        assert len(worse.stderr.strip().splitlines()) == 1 and "gate refused shapes/3" in worse.stderr
        with isolated_home(models["home"]):
            assert registry.get_alias("shapes", "champion") == "2"

        forced = vl(models, "models", "promote", "shapes/3", "--force")
        assert forced.returncode == 0, forced.stderr
        assert "FORCED" in forced.stdout
        with isolated_home(models["home"]):
            tags = registry.get_version("shapes", "3").tags
            assert promotion.FORCED_TAG in tags and "mAP50-95" in tags[promotion.FORCED_TAG]
            assert promotion.champion_history("shapes") == ["1", "2", "3"]
        assert server.wait_version("shapes", "3") == "3"

        back = vl(models, "models", "rollback", "shapes")
        assert back.returncode == 0, back.stderr
        assert "3 -> 2" in back.stdout
        assert server.wait_version("shapes", "2") == "2"
        back = vl(models, "models", "rollback", "shapes")
        assert back.returncode == 0, back.stderr
        assert "2 -> 1" in back.stdout
        assert server.wait_version("shapes", "1") == "1"
        none_left = vl(models, "models", "rollback", "shapes")
        assert none_left.returncode != 0 and "no previous champion" in none_left.stderr
        with isolated_home(models["home"]):
            assert registry.get_alias("shapes", "champion") == "1"
            assert promotion.champion_history("shapes") == ["1"]
            assert promotion.ROLLED_BACK_TAG in registry.get_version("shapes", "3").tags
    finally:
        server.stop()


def test_report_compares_latest_with_champion(models, tmp_path):
    out = tmp_path / "report.md"
    r = vl(models, "report", "--new", "shapes/2", "--old", "shapes/1", "--out", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "| metric | old | new | change |" in text and "| mAP50-95 |" in text
    assert "Champion `shapes/1` (old) vs challenger `shapes/2` (new)" in text
    assert "Gate **passed**" in text
    links = [line[line.index("(") + 1:-1] for line in text.splitlines() if line.startswith("![")]
    assert links and all((tmp_path / p).is_file() for p in links)  # plots copied beside the report
