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


def test_read_commands_print_exactly_one_json_document(vl_home, cli, tmp_path):
    assert json.loads(cli("data", "list", "--json").stdout) == []
    assert cli("data", "synth", "--name", "shapes", "--images", "12", "--seed", "5", "--size", "96").returncode == 0
    z = make_zip(tmp_path / "more.zip", yolo_files(4, classes="hexagon\nsquare\ncircle", seed=9))
    assert cli("data", "import", str(z), "--name", "shapes", "--add").returncode == 0
    store = Store(str(vl_home / "store"))
    m1, m2 = Catalog(store).load("shapes@1"), Catalog(store).load("shapes@2")

    listed = json.loads(cli("data", "list", "--json").stdout)
    assert listed == [{"name": "shapes", "versions": [1, 2], "latest": "shapes@2", "images": 16,
                       "splits": m2.split_counts(), "classes": ["circle", "square", "triangle", "hexagon"]}]

    show = json.loads(cli("data", "show", "shapes@1", "--json").stdout)
    assert (show["ref"], show["parent"], show["classes"]) == ("shapes@1", None, m1.classes)
    assert {s: show["splits"][s]["images"] for s in ("train", "val", "test")} == m1.split_counts()
    assert {s: show["splits"][s]["boxes"] for s in ("train", "val", "test")} == {
        s: {c: m1.box_counts().get(s, {}).get(c, 0) for c in m1.classes} for s in ("train", "val", "test")}
    assert show["total"]["images"] == 12 and show["total"]["background"] == 0
    assert sum(show["total"]["boxes"].values()) == sum(len(i.boxes) for i in m1.images)

    d = json.loads(cli("data", "diff", "shapes@1", "shapes@2", "--json", "--limit", "1").stdout)
    assert (d["old"], d["new"], d["unchanged"]) == ("shapes@1", "shapes@2", False)
    assert sorted(i["sha256"] for i in d["added"]) == sorted({i.sha256 for i in m2.images} - {i.sha256 for i in m1.images})
    assert d["removed"] == [] and d["relabeled"] == [] and d["classes_added"] == ["hexagon"]
    assert json.loads(cli("data", "diff", "shapes@2", "shapes@2", "--json").stdout)["unchanged"] is True

    from visionloop.feedback.inbox import CaptureRecord, write_capture

    assert json.loads(cli("data", "inbox", "--json").stdout) == []
    img = m1.images[0]
    rec = CaptureRecord(model="shapes", version="1", reason="flagged", image_sha256=img.sha256, ext=img.ext,
                        width=img.width, height=img.height)
    write_capture(store, rec, store.get_blob(img.sha256))
    inbox = json.loads(cli("data", "inbox", "--model", "shapes", "--json").stdout)
    assert [(r["id"], r["reason"], r["image_sha256"]) for r in inbox] == [(rec.id, "flagged", img.sha256)]


@pytest.mark.parametrize("args, usage, message", [
    (["data", "list", "--nope"], "Usage: visionloop data list [OPTIONS]", "No such option: --nope"),
    (["nope"], "Usage: visionloop [OPTIONS] COMMAND [ARGS]...", "No such command 'nope'."),
    (["data", "show"], "Usage: visionloop data show [OPTIONS]", "Missing argument 'NAME@VERSION'."),
    (["data", "synth", "--name", "x", "--images", "zero"], "Usage: visionloop data synth [OPTIONS]",
     "Invalid value for '--images'"),
])
def test_usage_errors_keep_the_usage_message_and_exit_2(vl_home, cli, args, usage, message):
    r = cli(*args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith(usage) and message in r.stderr
    assert "error:" not in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


def test_debug_shows_the_traceback(vl_home, cli):
    quiet, loud = cli("data", "show", "nope@1"), cli("--debug", "data", "show", "nope@1")
    assert quiet.returncode == loud.returncode == 1
    assert "Traceback" not in quiet.stderr
    assert "Traceback" in loud.stderr and "NotFoundError: dataset 'nope' does not exist" in loud.stderr
