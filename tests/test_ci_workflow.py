"""`visionloop init --ci github`: the written workflow parsed back and checked property by property."""

from __future__ import annotations

import pytest
import yaml
from conftest import run_cli

from visionloop import ci

WF = ".github/workflows/visionloop.yml"


@pytest.fixture
def workflow(tmp_path) -> tuple[str, dict]:
    r = run_cli("init", "--ci", "github", "--data", "shapes", "--model", "shapes-det", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    text = (tmp_path / WF).read_text()
    return text, yaml.safe_load(text)


def _runs(job: dict) -> str:
    return "\n".join(s.get("run", "") for s in job["steps"])


def test_promotes_the_version_this_commit_registered(workflow):
    _, wf = workflow
    train, promote = wf["jobs"]["train"], wf["jobs"]["promote"]
    # the train job publishes the version its train step registered, as a job output
    step = next(s for s in train["steps"] if s.get("id") == "trained")
    assert "trained_version" in step["run"] and "$GITHUB_OUTPUT" in step["run"]
    assert train["outputs"]["version"] == "${{ steps.trained.outputs.version }}"
    names = [s.get("name", s.get("uses")) for s in train["steps"]]
    assert names.index("Train") < names.index("The version this commit registered")
    # report and promote name that version, never @latest
    assert '--new "$VL_MODEL/${{ steps.trained.outputs.version }}"' in _runs(train)
    assert promote["needs"] == "train"
    assert 'models promote "$VL_MODEL/${{ needs.train.outputs.version }}"' in _runs(promote)
    assert "@latest" not in _runs(train) + _runs(promote)


def test_installs_from_the_repository_being_built(workflow):
    _, wf = workflow
    for job in wf["jobs"].values():
        assert job["steps"][0]["uses"].startswith("actions/checkout@")
        installs = [s["run"] for s in job["steps"] if "pip install" in s.get("run", "")]
        assert installs == ['pip install ".[all]"'], installs  # the checkout, not a PyPI release


def test_least_privilege_permissions(workflow):
    _, wf = workflow
    assert wf["permissions"] == {"contents": "read"}
    assert wf["jobs"]["promote"]["permissions"] == {"contents": "read"}
    train = wf["jobs"]["train"]["permissions"]
    assert set(train) <= {"contents", "pull-requests"}  # only what CML's comment needs
    for perms in [wf["permissions"]] + [j["permissions"] for j in wf["jobs"].values()]:
        assert perms != "write-all" and "actions" not in perms and "id-token" not in perms


def test_no_yaml_anchors_even_with_shared_steps(workflow):
    text, wf = workflow
    assert "&id" not in text and "*id" not in text
    # the two jobs share their setup steps as python objects: dumped twice, not aliased
    a, b = wf["jobs"]["train"]["steps"][:3], wf["jobs"]["promote"]["steps"][:3]
    assert a == b
    shared = {"k": [1, 2]}
    assert "&" not in ci.dump_workflow({"x": shared, "y": shared})
    assert "&id001" in yaml.safe_dump({"x": shared, "y": shared})  # what the plain dumper would do


def test_trained_version_finds_the_registered_training(vl_home, monkeypatch):
    """The CI step's helper answers the version that holds this training (by its cache key)."""
    from visionloop.datasets import synthetic
    from visionloop.errors import NotFoundError
    from visionloop.store import open_store
    from visionloop.training import pipeline
    from visionloop.training.config import load_config

    synthetic.commit_generated(open_store(), "shapes", 12, seed=1, size=64)
    with pytest.raises(NotFoundError, match="did `visionloop train` run"):
        ci.trained_version("shapes@1", "shapes-det")
    seen = []

    def fake(cfg):
        seen.append(cfg)
        return type("MV", (), {"version": "7"})()

    monkeypatch.setattr(pipeline, "registered_version", fake)
    assert ci.trained_version("shapes@1", "shapes-det") == "7"
    assert (seen[0].data, seen[0].name, seen[0].device) == ("shapes@1", "shapes-det", "auto")
    assert seen[0] == load_config(None, data="shapes@1", name="shapes-det", device="auto")
