"""`visionloop data ...` as a user runs it: synth, list, show, diff, export, and its errors."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import pytest

from conftest import RPS
from datasets_fixtures import make_zip, summary, yolo_files
from visionloop.datasets.catalog import Catalog
from visionloop.store import Store


def test_synth_list_show_diff_export(vl_home, cli, tmp_path):
    assert "no datasets yet" in cli("data", "list").stdout

    r = cli("data", "synth", "--name", "shapes", "--images", "12", "--seed", "5", "--size", "96")
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout)["images imported"] == 12
    m1 = Catalog(Store(str(vl_home / "store"))).load("shapes@1")
    assert m1.classes == ["circle", "square", "triangle"] and len(m1.images) == 12
    assert all(i.width == 96 and i.boxes for i in m1.images)

    # a second version: the same shapes plus 4 images of a new class from a zip
    z = make_zip(tmp_path / "more.zip", yolo_files(4, classes="hexagon\nsquare\ncircle", seed=9))
    assert cli("data", "import", str(z), "--name", "shapes", "--add").returncode == 0

    listed = cli("data", "list").stdout
    assert "shapes" in listed and "1, 2" in listed and "shapes@2" in listed

    show = cli("data", "show", "shapes@1")
    assert show.returncode == 0
    counts = m1.split_counts()
    boxes = m1.box_counts()
    row = next(line for line in show.stdout.splitlines() if line.startswith("│ train"))
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells == ["train", str(counts["train"]), "0",
                     *(str(boxes.get("train", {}).get(c, 0)) for c in m1.classes),
                     str(sum(boxes.get("train", {}).values()))]
    assert "parent: -" in show.stdout and "classes: circle, square, triangle" in show.stdout

    diff = cli("data", "diff", "shapes@1", "shapes@latest")
    assert diff.returncode == 0, diff.stderr
    assert "added images: 4" in diff.stdout and "removed images: 0" in diff.stdout
    assert "classes added: hexagon; removed: -" in diff.stdout
    assert "+ images/img0.png" in diff.stdout
    assert "no differences" in cli("data", "diff", "shapes@2", "shapes@2").stdout

    out = tmp_path / "exp.zip"
    ex = cli("data", "export", "shapes@2", "--format", "coco", "--out", str(out))
    assert ex.returncode == 0, ex.stderr
    doc = json.loads(zipfile.ZipFile(out).read("annotations.json"))
    assert [c["name"] for c in doc["categories"]] == ["circle", "square", "triangle", "hexagon"]
    assert len(doc["images"]) == 16
    again = cli("data", "export", "shapes@2", "--format", "coco", "--out", str(out))
    assert again.returncode == 1 and again.stderr.strip() == f"error: {out} already exists; choose a new --out path"


@pytest.mark.parametrize("args, message", [
    (["show", "nope@1"], "error: dataset 'nope' does not exist (known: none)"),
    (["show", "bad name!"], "error: bad dataset reference 'bad name!': expected NAME, NAME@VERSION or NAME@latest"),
    (["import", "/no/such/data.yaml", "--name", "x"], "error: not found: /no/such/data.yaml"),
    (["import", "README.md", "--name", "x"],
     "error: README.md: unsupported input; give a .zip, a data.yaml, a COCO or Label Studio .json, or a folder"),
    (["import", str(RPS / "data.yaml"), "--name", "x", "--max-width", "0"],
     "error: --max-width must be a positive number of pixels, got 0"),
    (["import", str(RPS / "data.yaml"), "--name", "x", "--images", "/no/dir"], "error: --images folder not found: /no/dir"),
    (["synth", "--name", "../evil", "--images", "2"],
     "error: bad dataset reference '../evil': expected NAME, NAME@VERSION or NAME@latest"),
])
def test_errors_are_one_line_and_nonzero(vl_home, cli, args, message):
    r = cli("data", *args)
    assert r.returncode == 1
    assert r.stderr.strip() == message
    assert "Traceback" not in r.stderr


def test_unknown_version_and_format(vl_home, cli, tmp_path):
    assert cli("data", "synth", "--name", "s", "--images", "3", "--size", "64").returncode == 0
    r = cli("data", "show", "s@7")
    assert (r.returncode, r.stderr.strip()) == (1, "error: dataset s has no version 7 (versions: 1)")
    r = cli("data", "export", "s@1", "--format", "voc", "--out", str(tmp_path / "o"))
    assert r.stderr.strip() == "error: unknown export format 'voc'; choose one of yolo, coco, labelstudio"
    assert not (tmp_path / "o").exists()


def test_data_help_does_not_import_heavy_libraries():
    code = ("import sys; from visionloop.cli import main; main(['data', '--help']); "
            "heavy = [m for m in ('ultralytics', 'torch', 'mlflow', 'onnxruntime', 's3fs', 'PIL') if m in sys.modules]; "
            "print('HEAVY', heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "import" in r.stdout and "synth" in r.stdout and "export" in r.stdout
    assert "HEAVY []" in r.stdout
