"""report.md rendering, the dataset diff in it, and `visionloop init --ci github`."""

from __future__ import annotations

from pathlib import Path

import yaml
from conftest import run_cli

from visionloop import reports
from visionloop.datasets import images, synthetic
from visionloop.datasets.catalog import Catalog, DraftImage
from visionloop.promotion import Comparison, Gate, comparison_rows, decide
from visionloop.store import open_store
from visionloop.evaluation import ClassAP, EvalResult


def _eval(map50_95: float, per_class: dict[str, float]) -> EvalResult:
    return EvalResult(model="m.onnx", data="shapes@2", split="test", images=20, instances=40, imgsz=128,
                      map50=map50_95 + 0.2, map50_95=map50_95, precision=0.5, recall=0.4,
                      per_class=[ClassAP(name=n, ap50=v + 0.1, ap50_95=v) for n, v in per_class.items()],
                      speed_ms={"inference": 3.0})


def _comparison(a: EvalResult, b: EvalResult) -> Comparison:
    return Comparison(a="shapes/1", b="shapes/2", data="shapes@2", split="test", images=20,
                      rows=comparison_rows(a, b), a_eval=a, b_eval=b)


def test_gate_decides_on_delta_and_class_drop():
    old = _eval(0.30, {"circle": 0.3, "square": 0.3})
    better = _eval(0.40, {"circle": 0.5, "square": 0.3})
    assert decide(_comparison(old, better), Gate()).passed
    worse = _eval(0.25, {"circle": 0.3, "square": 0.2})
    d = decide(_comparison(old, worse), Gate())
    assert not d.passed and len(d.reasons) == 2 and d.worst_class == "square"
    # better on average but one class collapses: refused by max_class_drop alone
    lopsided = _eval(0.35, {"circle": 0.6, "square": 0.1})
    d = decide(_comparison(old, lopsided), Gate(max_class_drop=0.05))
    assert not d.passed and "square" in d.reasons[0]
    assert decide(_comparison(old, lopsided), Gate(max_class_drop=0.5)).passed
    assert not decide(_comparison(old, better), Gate(min_delta=0.2)).passed


def test_report_markdown_has_tables_gate_data_and_plots(vl_home, tmp_path):
    store = open_store()
    drafts = []
    for s in synthetic.generate(10, seed=3, size=64):
        p = images.prepare(s.data)
        drafts.append(DraftImage(store.put_blob(p.data), p.ext, p.width, p.height, s.boxes, source=s.name))
    cat = Catalog(store)
    v1 = cat.commit("shapes", synthetic.CLASSES, drafts[:6]).manifest
    v2 = cat.commit("shapes", synthetic.CLASSES, drafts[6:], add_to_parent=True).manifest

    old, new = _eval(0.30, {"circle": 0.3, "square": 0.3}), _eval(0.40, {"circle": 0.5, "square": 0.3})
    cmp = _comparison(old, new)
    rep = reports.Report(title="visionloop: shapes", old="shapes/1", new="shapes/2", comparison=cmp,
                         decision=decide(cmp, Gate()), promoted=True, dataset=reports.dataset_change(v1, v2),
                         plots=["report_assets/results.png"])
    out = reports.write(rep, tmp_path / "report.md")
    text = out.read_text()
    assert "| metric | old | new | change |" in text
    assert "| mAP50-95 | 0.3000 | 0.4000 | +0.1000" in text
    assert "| AP50-95 circle | 0.3000 | 0.5000 | +0.2000" in text
    assert "Gate **passed**" in text and "moved to `shapes/2`" in text
    assert "`shapes@1` → `shapes@2`: 6 → 10 images" in text
    boxes = {c: sum(1 for i in v2.images for b in i.boxes if v2.classes[b.class_id] == c) for c in v2.classes}
    assert f"| circle | {sum(1 for i in v1.images for b in i.boxes if b.class_id == 0)} | {boxes['circle']} |" in text
    assert "![results](report_assets/results.png)" in text
    assert not list(tmp_path.glob(".*.tmp"))


def test_init_ci_github_writes_a_valid_workflow(tmp_path):
    r = run_cli("init", "--ci", "github", "--data", "shapes", "--model", "shapes-det", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wf = yaml.safe_load((tmp_path / ".github" / "workflows" / "visionloop.yml").read_text())
    assert "push" in wf["on"] and wf["env"]["VL_DATA"] == "shapes" and wf["env"]["VL_MODEL"] == "shapes-det"
    train_runs = " ".join(s.get("run", "") for s in wf["jobs"]["train"]["steps"])
    for needle in ("visionloop train", "visionloop report", "cml comment create report.md"):
        assert needle in train_runs
    assert any(s.get("uses", "").startswith("iterative/setup-cml") for s in wf["jobs"]["train"]["steps"])
    promote = wf["jobs"]["promote"]
    assert promote["needs"] == "train" and "refs/heads/main" in promote["if"]
    assert "visionloop models promote" in " ".join(s.get("run", "") for s in promote["steps"])
    # secrets are referenced, never written in
    assert "${{ secrets.MLFLOW_TRACKING_URI }}" == wf["env"]["MLFLOW_TRACKING_URI"]

    again = run_cli("init", "--ci", "github", "--data", "x", "--model", "y", cwd=tmp_path)
    assert again.returncode != 0 and len(again.stderr.strip().splitlines()) == 1 and "--force" in again.stderr
    assert yaml.safe_load((tmp_path / ".github/workflows/visionloop.yml").read_text())["env"]["VL_DATA"] == "shapes"


def test_init_reads_defaults_from_visionloop_yaml(tmp_path):
    Path(tmp_path / "visionloop.yaml").write_text("train:\n  data: rps\n  name: rps-det\n  epochs: 5\n")
    r = run_cli("init", "--ci", "github", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    wf = yaml.safe_load((tmp_path / ".github/workflows/visionloop.yml").read_text())
    assert (wf["env"]["VL_DATA"], wf["env"]["VL_MODEL"]) == ("rps", "rps-det")
    bad = run_cli("init", "--ci", "gitlab", cwd=tmp_path / ".github")
    assert bad.returncode != 0 and "only github" in bad.stderr
