"""The MLflow registry on a real SQLite tracking DB in an isolated VISIONLOOP_HOME."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from visionloop import registry
from visionloop.errors import NotFoundError, ValidationError
from visionloop.registry import ModelRef


@pytest.mark.parametrize(
    ("text", "name", "version", "alias"),
    [
        ("shapes/5", "shapes", "5", None),
        ("shapes@champion", "shapes", None, "champion"),
        ("models:/shapes/5", "shapes", "5", None),
        ("models:/shapes@challenger", "shapes", None, "challenger"),
        ("shapes", "shapes", None, "champion"),
        ("my-model.v2/03", "my-model.v2", "3", None),
    ],
)
def test_parse_refs(text, name, version, alias):
    r = ModelRef.parse(text)
    assert (r.name, r.version, r.alias) == (name, version, alias)


@pytest.mark.parametrize("text", ["shapes/abc", "/5", "@champion", "shapes@", "a/b/3"])
def test_bad_refs(text):
    with pytest.raises(ValidationError, match="bad model reference"):
        ModelRef.parse(text)


def _run(classes):
    return registry.client().create_run(registry.experiment_id("reg-test")).info.run_id


def _tags(classes, **extra):
    return {registry.TAG_CLASSES: json.dumps(classes), registry.TAG_IMGSZ: "160", registry.TAG_TASK: "detect",
            registry.TAG_DATASET: "tiny@1", "metrics.map50": "0.5", **extra}


def test_register_resolve_alias(vl_home, tiny_model):
    onnx_sha = hashlib.sha256(tiny_model.onnx.read_bytes()).hexdigest()
    v1 = registry.register_version("shapes", _run(tiny_model.classes), tiny_model.onnx, _tags(tiny_model.classes))
    assert (v1.version, v1.aliases) == ("1", ["champion"])
    assert v1.tags[registry.TAG_ONNX_SHA256] == onnx_sha
    assert v1.metrics["map50"] == 0.5 and v1.classes == tiny_model.classes
    v2 = registry.register_version("shapes", _run(tiny_model.classes), tiny_model.onnx,
                                   _tags(tiny_model.classes, **{"metrics.map50": "0.7"}))
    assert (v2.version, v2.aliases) == ("2", ["challenger"])  # later versions wait for a promotion

    r = registry.resolve_model("shapes@champion")
    assert (r.name, r.version, r.classes, r.imgsz, r.task) == ("shapes", "1", tiny_model.classes, 160, "detect")
    assert r.onnx_path == vl_home.resolve() / "cache" / "models" / "shapes" / "1" / "model.onnx"
    assert hashlib.sha256(r.onnx_path.read_bytes()).hexdigest() == onnx_sha
    assert r.run_id == v1.run_id and r.aliases == ["champion"]
    assert registry.resolve_model("models:/shapes/2").version == "2"
    assert registry.resolve_model("shapes@latest").version == "2"

    # promotion: the alias moves, the history remembers, a re-resolve follows
    change = registry.set_alias("shapes", "champion", "2")
    assert (change.version, change.previous) == ("2", "1")
    assert registry.get_alias("shapes", "champion") == "2"
    assert registry.get_alias("shapes", "nope") is None
    assert [(h.version, h.previous) for h in registry.alias_history("shapes", "champion")] == [("1", None), ("2", "1")]
    assert registry.resolve_model("shapes@champion").version == "2"
    assert "champion" in registry.get_version("shapes", 2).aliases

    # the cached file is re-downloaded when it disappears or is corrupted
    shutil.rmtree(r.onnx_path.parent)
    assert registry.resolve_model("shapes/1").onnx_path.read_bytes() == tiny_model.onnx.read_bytes()
    r.onnx_path.write_bytes(b"garbage")
    assert registry.resolve_model("shapes/1").onnx_path.read_bytes() == tiny_model.onnx.read_bytes()

    models = registry.list_models()
    assert [(m.name, m.latest_version, m.aliases) for m in models] == [
        ("shapes", "2", {"champion": "2", "challenger": "2"})]
    assert [v.version for v in registry.list_versions("shapes")] == ["1", "2"]
    registry.set_version_tags("shapes", 1, {"note": "x"})
    assert registry.get_version("shapes", "1").tags["note"] == "x"
    assert [v.version for v in registry.find_versions_by_tag("shapes", "note", "x")] == ["1"]


def test_not_found_errors(vl_home, tiny_model):
    with pytest.raises(NotFoundError, match="model 'ghost' is not registered"):
        registry.resolve_model("ghost@champion")
    registry.register_version("shapes", _run(tiny_model.classes), tiny_model.onnx, _tags(tiny_model.classes))
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
    registry.register_version("shapes", _run(tiny_model.classes), tiny_model.onnx, _tags(tiny_model.classes))
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
    registry.register_version("shapes", _run(tiny_model.classes), tiny_model.onnx, _tags(tiny_model.classes))
    registry.register_version("shapes", _run(tiny_model.classes), tiny_model.onnx, _tags(tiny_model.classes))
    out = cli("models", "list")
    assert out.returncode == 0 and "shapes" in out.stdout and "champion→1" in out.stdout
    show = cli("models", "show", "shapes/2")
    assert show.returncode == 0, show.stderr
    assert "shapes/2" in show.stdout and "challenger" in show.stdout and "tiny@1" in show.stdout
    assert "map50" in show.stdout and "0.5000" in show.stdout
    allv = cli("models", "show", "shapes")
    assert allv.returncode == 0 and "champion" in allv.stdout and "challenger" in allv.stdout
    bad = cli("models", "show", "shapes/7")
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == ["error: model shapes has no version 7 (versions: 1, 2)"]
