"""The MLflow registry on a real SQLite tracking DB in an isolated VISIONLOOP_HOME."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from visionloop import registry
from visionloop.errors import ConflictError, NotFoundError, ValidationError
from visionloop.evaluation import ClassAP, EvalResult
from visionloop.registry import ModelCard


def _run():
    return registry.client().create_run(registry.experiment_id("reg-test")).info.run_id


def _eval(map50: float) -> EvalResult:
    return EvalResult(model="m.onnx", data="tiny@1", split="test", images=4, instances=9, imgsz=160, map50=map50,
                      map50_95=map50 / 2, precision=0.6, recall=0.4,
                      per_class=[ClassAP(name="circle", ap50=0.5, ap50_95=0.25)], speed_ms={"inference": 1.5})


def _card(classes, map50: float = 0.5) -> ModelCard:
    return ModelCard(task="detect", classes=classes, imgsz=160, dataset="tiny@1", manifest_hash="mh", cache_key="ck",
                     base_model="yolo11n.yaml", epochs=3, eval=_eval(map50))


def _register(tiny_model, map50: float = 0.5, **kw):
    return registry.register_version("shapes", _run(), tiny_model.onnx, _card(tiny_model.classes, map50), **kw)


def test_register_resolve_alias(vl_home, tiny_model):
    onnx_sha = hashlib.sha256(tiny_model.onnx.read_bytes()).hexdigest()
    v1 = _register(tiny_model, tags={"note": "first"}, description="v1")
    assert (v1.version, v1.aliases, v1.description) == ("1", ["champion"], "v1")
    # search/display tags come from the card; structured data stays in the card
    assert v1.tags[registry.TAG_ONNX_SHA256] == onnx_sha and v1.tags["note"] == "first"
    assert (v1.tags["dataset"], v1.tags["task"], v1.tags["imgsz"], v1.tags["cache_key"]) == ("tiny@1", "detect", "160", "ck")
    assert v1.metrics["map50"] == 0.5 and v1.metrics["map50_95"] == 0.25
    assert "classes" not in v1.tags and not any("per_class" in k for k in v1.tags)
    assert registry.get_card(v1) == _card(tiny_model.classes)
    assert registry.get_card("shapes@champion").eval.per_class[0].ap50_95 == 0.25
    v2 = _register(tiny_model, 0.7)
    assert (v2.version, v2.aliases) == ("2", ["challenger"])  # later versions wait for a promotion

    r = registry.resolve_model("shapes@champion")
    assert (r.name, r.version, r.classes, r.imgsz, r.task) == ("shapes", "1", tiny_model.classes, 160, "detect")
    assert r.card == _card(tiny_model.classes) and r.ref == "shapes/1"
    assert r.onnx_path == vl_home.resolve() / "cache" / "models" / "shapes" / "1" / "model.onnx"
    assert (r.onnx_path.parent / "card.json").is_file()
    assert hashlib.sha256(r.onnx_path.read_bytes()).hexdigest() == onnx_sha
    assert r.run_id == v1.run_id and r.aliases == ["champion"]
    assert registry.resolve_model("models:/shapes/2").version == "2"
    assert registry.resolve_model("shapes@latest").version == "2"
    assert registry.resolve_model("models:/shapes/2").card.eval.map50 == 0.7

    # promotion: the alias moves, the history remembers, a re-resolve follows
    change = registry.set_alias("shapes", "champion", "2")
    assert (change.version, change.previous) == ("2", "1")
    assert registry.get_alias("shapes", "champion") == "2"
    assert registry.get_alias("shapes", "nope") is None
    assert [(h.version, h.previous) for h in registry.alias_history("shapes", "champion")] == [("1", None), ("2", "1")]
    assert registry.set_alias("shapes", "champion", "2").previous == "2"  # no move: nothing pushed
    assert registry.lineage("shapes", "champion") == ["1", "2"]
    assert registry.resolve_model("shapes@champion").version == "2"
    assert "champion" in registry.get_version("shapes", 2).aliases

    # the cached file is re-downloaded when it disappears or is corrupted
    shutil.rmtree(r.onnx_path.parent)
    assert registry.resolve_model("shapes/1").onnx_path.read_bytes() == tiny_model.onnx.read_bytes()
    r.onnx_path.write_bytes(b"garbage")
    assert registry.resolve_model("shapes/1").onnx_path.read_bytes() == tiny_model.onnx.read_bytes()
    (r.onnx_path.parent / "card.json").unlink()
    assert registry.resolve_model("shapes/1").card == _card(tiny_model.classes)

    models = registry.list_models()
    assert [(m.name, m.latest_version, m.aliases) for m in models] == [
        ("shapes", "2", {"champion": "2", "challenger": "2"})]
    assert [v.version for v in registry.list_versions("shapes")] == ["1", "2"]
    registry.set_version_tags("shapes", 1, {"note": "x"})
    assert registry.get_version("shapes", "1").tags["note"] == "x"
    assert [v.version for v in registry.find_versions_by_tag("shapes", "note", "x")] == ["1"]
    assert [v.version for v in registry.find_versions_by_tag("shapes", registry.TAG_CACHE_KEY, "ck")] == ["1", "2"]


def test_one_alias_history_push_pop_follow(vl_home, tiny_model):
    for _ in range(3):
        _register(tiny_model)
    registry.set_alias("shapes", "champion", "2")
    registry.set_alias("shapes", "champion", "3")
    assert registry.lineage("shapes", "champion") == ["1", "2", "3"]
    back = registry.rollback_alias("shapes", "champion")  # pops: the one before the current comes back
    assert (back.version, back.previous) == ("2", "3")
    assert registry.get_alias("shapes", "champion") == "2" and registry.lineage("shapes", "champion") == ["1", "2"]

    registry.client().set_registered_model_alias("shapes", "champion", "3")  # moved by someone else
    assert registry.lineage("shapes", "champion") == ["1", "2", "3"]  # followed
    assert registry.rollback_alias("shapes", "champion").version == "2"
    assert registry.rollback_alias("shapes", "champion").version == "1"
    with pytest.raises(ConflictError, match="no previous champion .history: 1."):
        registry.rollback_alias("shapes", "champion")
    assert registry.get_alias("shapes", "champion") == "1"
    registry.delete_alias("shapes", "challenger")
    assert registry.get_alias("shapes", "challenger") is None
    assert "challenger" not in registry.get_version("shapes", "3").aliases


def test_version_without_card_is_read_from_its_legacy_tags(vl_home, tiny_model, tmp_path):
    c = registry.client()
    run_id = _run()
    staged = tmp_path / "model.onnx"
    shutil.copyfile(tiny_model.onnx, staged)
    c.log_artifact(run_id, str(staged), "model")
    c.create_registered_model("old")
    source = f"{c.get_run(run_id).info.artifact_uri}/model"
    c.create_model_version("old", source, run_id=run_id, tags={
        "classes": json.dumps(tiny_model.classes), "imgsz": "160", "task": "detect", "dataset": "tiny@1"})
    r = registry.resolve_model("old/1")
    assert (r.classes, r.imgsz, r.task, r.card.dataset, r.card.eval) == (tiny_model.classes, 160, "detect", "tiny@1", None)
    assert registry.get_card("old/1") == r.card
    assert r.onnx_path.read_bytes() == tiny_model.onnx.read_bytes()


def test_not_found_errors(vl_home, tiny_model):
    with pytest.raises(NotFoundError, match="model 'ghost' is not registered"):
        registry.resolve_model("ghost@champion")
    _register(tiny_model)
    with pytest.raises(NotFoundError, match="no version 9 .versions: 1."):
        registry.resolve_model("shapes/9")
    with pytest.raises(NotFoundError, match="no alias 'gold'"):
        registry.resolve_model("shapes@gold")
    with pytest.raises(NotFoundError):
        registry.set_alias("shapes", "champion", "7")
    with pytest.raises(ValidationError):
        registry.set_alias("shapes", "latest", "1")
    assert registry.find_versions_by_tag("ghost", "cache_key", "x") == []


def test_tracking_uri_override(vl_home, tmp_path, monkeypatch, tiny_model):
    db = tmp_path / "elsewhere" / "track.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    from visionloop.settings import get_settings

    get_settings(fresh=True)
    _register(tiny_model)
    assert db.exists()
    assert not (vl_home / "mlflow.db").exists()
    # artifacts live under VISIONLOOP_HOME, never in ./mlruns of the current directory
    c = registry.client()
    for exp in c.search_experiments():
        assert exp.artifact_location.startswith((vl_home.resolve() / "mlartifacts").as_uri()), exp
    assert registry.resolve_model("shapes").version == "1"


def test_models_cli(vl_home, tiny_model, cli):
    empty = cli("models", "list")
    assert empty.returncode == 0 and "no registered models" in empty.stdout
    _register(tiny_model)
    _register(tiny_model)
    out = cli("models", "list")
    assert out.returncode == 0 and "shapes" in out.stdout and "champion→1" in out.stdout
    show = cli("models", "show", "shapes/2")
    assert show.returncode == 0, show.stderr
    assert "shapes/2" in show.stdout and "challenger" in show.stdout and "tiny@1" in show.stdout
    assert "map50" in show.stdout and "0.5000" in show.stdout
    allv = cli("models", "show", "shapes")
    assert allv.returncode == 0 and "champion" in allv.stdout and "challenger" in allv.stdout
    assert "AP50-95 circle" in show.stdout and "0.2500" in show.stdout  # per-class AP from the card
    assert ", ".join(tiny_model.classes) in show.stdout
    bad = cli("models", "show", "shapes/7")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == ["error: model shapes has no version 7 (versions: 1, 2)"]


def test_models_cli_json(vl_home, tiny_model, cli):
    assert json.loads(cli("models", "list", "--json").stdout) == []
    _register(tiny_model)
    _register(tiny_model, 0.7)
    listed = cli("models", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    (m,) = json.loads(listed.stdout)
    assert (m["name"], m["latest_version"], m["aliases"]) == ("shapes", "2", {"champion": "1", "challenger": "2"})
    assert m["champion_metrics"]["map50"] == 0.5  # the champion's, not the newest version's

    one = cli("models", "show", "models:/shapes@challenger", "--json")
    assert one.returncode == 0, one.stderr
    v = json.loads(one.stdout)
    assert (v["ref"], v["version"], v["aliases"], v["run_id"]) == ("shapes/2", "2", ["challenger"],
                                                                   registry.get_version("shapes", 2).run_id)
    card = ModelCard.model_validate(v["card"])
    assert card == _card(tiny_model.classes, 0.7) and card.eval.map50 == 0.7

    every = json.loads(cli("models", "show", "shapes", "--json").stdout)
    assert [(x["version"], x["aliases"]) for x in every] == [("1", ["champion"]), ("2", ["challenger"])]
    assert every[1]["tags"]["metrics.map50"] == "0.70000"
