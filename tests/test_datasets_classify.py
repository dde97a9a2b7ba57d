"""Classification datasets: every importer, every bad input with its message, strict mode,
show/diff, export round trips, generated data and the materialized class-folder layout.

Real data: the boxes of ../shared/datasets/rock-paper-scissors, cropped (tests/classify_fixtures).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from classify_fixtures import RPS_CLASSES, rps_crops
from conftest import RPS
from datasets_fixtures import png, store_files, summary, write_tree
from visionloop.datasets.catalog import Catalog
from visionloop.datasets.formats import open_source
from visionloop.datasets.ingest import ImportOptions, ingest
from visionloop.datasets.materialize import materialize
from visionloop.datasets.synthetic import CLASSES, commit_generated
from visionloop.errors import ValidationError
from visionloop.store import Store


def _catalog(home: Path) -> Catalog:
    return Catalog(Store(str(home / "store")))


def _labels(m) -> dict[str, str]:
    """Image source name → class name."""
    return {i.source: m.classes[i.class_id] for i in m.images}


def _warnings(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("warning: ")]


def _class_tree(root: Path, layout: dict[str, list[int]]) -> Path:
    """``{"train/rock": [seeds]}`` → distinct PNGs under ``root``."""
    files = {f"{folder}/img{s}.png": png(seed=s) for folder, seeds in layout.items() for s in seeds}
    return write_tree(root, files)


# -- importers -----------------------------------------------------------------------------------
def test_import_rps_crops_keeps_splits(vl_home, cli, tmp_path):
    src = rps_crops(tmp_path / "rps", limit_per_split=9)
    r = cli("data", "import", str(src), "--name", "rps")
    assert r.returncode == 0, r.stderr
    m = _catalog(vl_home).load("rps@1")
    assert m.task == "classify" and m.classes == RPS_CLASSES
    assert m.split_policy.mode == "source"
    # every image keeps its folder's split and class (valid/ of RPS is val/ here)
    on_disk = {p.relative_to(src).as_posix(): p for p in src.rglob("*.jpg")}
    assert sorted(i.source for i in m.images) == sorted(on_disk)
    for img in m.images:
        split, cls, _ = img.source.split("/")
        assert (img.split, m.classes[img.class_id], img.boxes) == (split, cls, [])
    assert m.split_counts() == {"train": 9, "val": 9, "test": 9}
    per_class = {f"class {c}": len(list(src.glob(f"*/{c}/*.jpg"))) for c in RPS_CLASSES}
    assert summary(r.stdout) == {"images imported": 27, **per_class} and all(per_class.values())


def test_rps_crops_one_crop_per_box(tmp_path):
    src = rps_crops(tmp_path / "all")
    boxes = {s: sum(len(p.read_text().split("\n")) for p in (RPS / s / "labels").glob("*.txt") if p.read_text().strip())
             for s in ("train", "valid", "test")}
    crops = {s: len(list((src / d).rglob("*.jpg"))) for s, d in (("train", "train"), ("valid", "val"), ("test", "test"))}
    assert crops == boxes and all(crops.values())


def test_import_class_folders_hash_split(vl_home, tmp_path):
    root = _class_tree(tmp_path / "pets", {"dog": [1, 2, 3, 4], "cat": [5, 6, 7], "bird": [8]})
    res = ingest(Store(str(vl_home / "store")), open_source(str(root)), "pets", ImportOptions(seed=3))
    m = res.commit.manifest
    assert m.task == "classify" and m.classes == ["bird", "cat", "dog"]
    assert m.split_policy.mode == "hash" and m.split_policy.seed == 3
    assert _labels(m) == {f"{c}/img{s}.png": c for c, seeds in (("dog", [1, 2, 3, 4]), ("cat", [5, 6, 7]),
                                                                 ("bird", [8])) for s in seeds}
    assert res.report.per_class == {"bird": 1, "cat": 3, "dog": 4}


def test_import_csv_relative_paths(vl_home, tmp_path):
    write_tree(tmp_path / "data", {"pics/a.png": png(seed=1), "pics/b.png": png(seed=2), "c.png": png(seed=3)})
    csv = tmp_path / "data" / "labels.csv"
    csv.write_text("path,label\npics/a.png,rock\npics/b.png,paper\n\nc.png,rock\n")
    m = ingest(Store(str(vl_home / "store")), open_source(str(csv)), "csv").commit.manifest
    assert m.task == "classify" and m.classes == ["paper", "rock"]
    assert _labels(m) == {"pics/a.png": "rock", "pics/b.png": "paper", "c.png": "rock"}
    # the folder holding a single CSV is recognised too, with the same content
    again = ingest(Store(str(vl_home / "store")), open_source(str(tmp_path / "data")), "csv")
    assert not again.created


def _ls_task(tid: int, image: str, choices: list[str] | None) -> dict:
    anns = [] if choices is None else [{"id": tid, "was_cancelled": False, "result": [
        {"type": "choices", "from_name": "choice", "to_name": "image", "value": {"choices": choices}}]}]
    return {"id": tid, "data": {"image": image}, "annotations": anns}


def test_import_labelstudio_choices(vl_home, cli, tmp_path):
    src = rps_crops(tmp_path / "rps", limit_per_split=3)
    crops = sorted(src.rglob("*.jpg"))
    tasks = [_ls_task(n, f"/data/local-files/?d={p.relative_to(src).as_posix()}", [p.parent.name])
             for n, p in enumerate(crops, start=1)]
    tasks.append(_ls_task(99, "/data/local-files/?d=train/rock/none.jpg", None))  # not labeled yet
    export = src / "project.json"
    export.write_text(json.dumps(tasks))
    r = cli("data", "import", str(export), "--name", "ls")
    assert r.returncode == 0, r.stderr
    assert _warnings(r.stderr) == ["warning: /data/local-files/?d=train/rock/none.jpg: task 99 has no annotation yet (skipped)"]
    m = _catalog(vl_home).load("ls@1")
    assert m.task == "classify" and m.classes == RPS_CLASSES and len(m.images) == len(crops) == 9
    assert sorted(_labels(m).values()) == sorted(p.parent.name for p in crops)


def test_synth_classify_show(vl_home, cli):
    r = cli("data", "synth", "--name", "shapes", "--task", "classify", "--images", "15", "--size", "64")
    assert r.returncode == 0, r.stderr
    m = _catalog(vl_home).load("shapes@1")
    assert m.task == "classify" and m.classes == CLASSES == sorted(CLASSES)
    assert all(i.boxes == [] and i.class_id is not None and i.width == 64 for i in m.images)
    show = cli("data", "show", "shapes@1")
    assert show.returncode == 0, show.stderr
    header = next(ln for ln in show.stdout.splitlines() if "split" in ln and "images" in ln)
    assert [c.strip() for c in header.strip("┃ ").split("┃")] == ["split", "images", *CLASSES]
    for split in ("train", "val", "test", "total"):
        row = next(ln for ln in show.stdout.splitlines() if ln.startswith(f"│ {split}"))
        imgs = m.images if split == "total" else m.by_split(split)
        want = [split, str(len(imgs)), *(str(sum(1 for i in imgs if m.classes[i.class_id] == c)) for c in CLASSES)]
        assert [c.strip() for c in row.strip("│ ").split("│")] == want
    assert "task: classify" in show.stdout
    js = json.loads(cli("data", "show", "shapes@1", "--json").stdout)
    assert js["total"]["per_class"] == {c: sum(1 for i in m.images if m.classes[i.class_id] == c) for c in CLASSES}


def test_commit_generated_classify(tmp_path):
    store = Store(str(tmp_path / "store"))
    m = commit_generated(store, "cls", 30, seed=2, size=64, task="classify")
    assert m.task == "classify" and {m.classes[i.class_id] for i in m.images} == set(CLASSES)
    det = commit_generated(store, "det", 3, seed=2, size=64)  # detection unchanged: boxes, no class
    assert det.task == "detect" and all(i.boxes and i.class_id is None for i in det.images)


# -- materialize ---------------------------------------------------------------------------------
def test_materialize_classify_layout(tmp_path):
    store = Store(str(tmp_path / "store"))
    m = commit_generated(store, "cls", 24, seed=4, size=48, task="classify")
    data_yaml = materialize(store, m, tmp_path / "cache")
    root = data_yaml.parent
    cfg = yaml.safe_load(data_yaml.read_text())
    assert cfg == {"path": str(root), "names": dict(enumerate(CLASSES)), "task": "classify"}
    counts = m.split_counts()
    for split in ("train", "val", "test"):
        if counts[split]:
            assert sorted(p.name for p in (root / split).iterdir()) == CLASSES
        else:
            assert not (root / split).exists()
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and p.name != "data.yaml")
    assert files == sorted(f"{i.split}/{m.classes[i.class_id]}/{i.sha256[:20]}.{i.ext}" for i in m.images)
    assert materialize(store, m, tmp_path / "cache") == data_yaml  # cached per version


def test_materialize_empty_class_folder_in_split(tmp_path):
    """A class with no image in a non-empty split still has its (empty) folder."""
    root = _class_tree(tmp_path / "src", {"train/a": [1, 2], "train/b": [3], "val/a": [4]})
    store = Store(str(tmp_path / "store"))
    m = ingest(store, open_source(str(root)), "x").commit.manifest
    out = materialize(store, m, tmp_path / "cache").parent
    assert sorted(p.name for p in (out / "val").iterdir()) == ["a", "b"] and not list((out / "val" / "b").iterdir())
    assert not (out / "test").exists()


def test_generated_classify_set_is_learnable(tmp_path):
    """The materialized folder trains with ultralytics' own classify trainer, from the .yaml, and
    a few CPU epochs at 32 px learn it (what the demo and the training tests rely on)."""
    from ultralytics import YOLO, settings

    settings.update(mlflow=False)  # conftest points the settings at a temporary folder
    store = Store(str(tmp_path / "store"))
    m = commit_generated(store, "learn", 300, seed=1, size=64, task="classify")
    root = materialize(store, m, tmp_path / "cache").parent
    train = m.split_counts()["train"]
    batch = next(b for b in (24, 25, 23, 26) if train % b != 1)  # a last batch of 1 breaks BatchNorm
    model = YOLO("yolo11n-cls.yaml")
    metrics = model.train(data=str(root), imgsz=32, epochs=10, batch=batch, workers=0, device="cpu", seed=0,
                          project=str(tmp_path / "runs"), name="r", plots=False, verbose=False)
    assert metrics.top1 >= 0.9


# -- bad inputs ----------------------------------------------------------------------------------
BAD_CASES = {
    "unknown class": (
        lambda root: (write_tree(root, {"a.png": png(seed=1), "b.png": png(seed=2)}),
                      (root / "labels.csv").write_text("a.png,rock\nb.png,lizard\n")),
        ["--classes", "paper,rock"],
        "labels.csv:2: class 'lizard' is not one of the classes (paper, rock)"),
    "unknown class (classes.txt)": (
        lambda root: (_class_tree(root, {"train/rock": [1], "train/lizard": [2]}),
                      (root / "classes.txt").write_text("paper\nrock\n")),
        [],
        "train/lizard/img2.png: class 'lizard' is not one of the classes (paper, rock)"),
    "same image under two classes": (
        lambda root: (_class_tree(root, {"train/paper": [1], "train/rock": [2]}),
                      shutil.copy(root / "train/paper/img1.png", root / "train/rock/copy.png")),
        [],
        "train/rock/copy.png: same image as train/paper/img1.png but a different class (rock vs paper) (both dropped)"),
    "empty class folder": (
        lambda root: (_class_tree(root, {"train/paper": [1], "train/rock": [2]}), (root / "val/rock").mkdir(parents=True),
                      (root / "val/paper").mkdir(), (root / "val/paper/p.png").write_bytes(png(seed=3))),
        [],
        "val/rock/: class folder has no images"),
    "unreadable image": (
        lambda root: (_class_tree(root, {"paper": [1], "rock": [2]}), (root / "rock/broken.jpg").write_bytes(b"not a jpeg")),
        [],
        "rock/broken.jpg: not a readable image"),
    "bad CSV row": (
        lambda root: (write_tree(root, {"a.png": png(seed=1)}), (root / "l.csv").write_text("a.png,rock\nb.png\n")),
        [],
        "l.csv:2: expected 2 fields 'path,label', got 1"),
    "missing CSV image": (
        lambda root: (write_tree(root, {"a.png": png(seed=1)}), (root / "l.csv").write_text("a.png,rock\nzz.png,rock\n")),
        [],
        "zz.png: cannot read: No such file or directory"),
    "two choices in Label Studio": (
        lambda root: (write_tree(root, {"a.png": png(seed=1), "b.png": png(seed=2)}),
                      (root / "tasks.json").write_text(json.dumps([_ls_task(1, "a.png", ["rock", "paper"]),
                                                                   _ls_task(2, "b.png", ["rock"])]))),
        [],
        "tasks.json: task 1: expected one choice, got 2 (rock, paper)"),
}
_SUFFIX = {"empty class folder": ""}  # an empty folder drops no image


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_input_message_and_strict(vl_home, cli, tmp_path, case):
    make, extra, message = BAD_CASES[case]
    root = tmp_path / "src"
    root.mkdir()
    make(root)
    src = str(root)
    strict = cli("data", "import", src, "--name", "bad", "--strict", *extra)
    assert strict.returncode == 1
    assert strict.stderr.strip() == f"error: strict import refused, 1 problem: {message}"
    assert store_files(vl_home) == []  # no version, not even a blob

    r = cli("data", "import", src, "--name", "bad", *extra)
    assert r.returncode == 0, r.stderr
    assert _warnings(r.stderr) == [f"warning: {message}{_SUFFIX.get(case, ' (dropped)')}"]
    m = _catalog(vl_home).load("bad@1")
    assert m.task == "classify" and message.split(":")[0] not in {i.source for i in m.images}


def test_conflicting_duplicate_drops_both(vl_home, tmp_path):
    make, _, _ = BAD_CASES["same image under two classes"]
    root = tmp_path / "src"
    root.mkdir()
    make(root)
    res = ingest(Store(str(vl_home / "store")), open_source(str(root)), "dup")
    assert _labels(res.commit.manifest) == {"train/rock/img2.png": "rock"}
    assert res.report.counts()["same image twice with different labels"] == 1


def test_classes_option_refused_for_detection(vl_home, cli):
    r = cli("data", "import", str(RPS / "data.yaml"), "--name", "d", "--classes", "rock")
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: --classes applies to classification sources only "
                                "(class folders, a path,label CSV, Label Studio choices)")


def test_task_cannot_change_within_a_dataset(vl_home, cli, tmp_path):
    assert cli("data", "synth", "--name", "mix", "--images", "3", "--size", "64").returncode == 0
    r = cli("data", "synth", "--name", "mix", "--images", "3", "--size", "64", "--task", "classify")
    assert r.returncode == 1
    assert r.stderr.strip() == "error: mix@1 is a detection dataset; import classification data under another name"
    assert _catalog(vl_home).versions("mix") == [1]
    blobs = store_files(vl_home)
    assert cli("data", "synth", "--name", "mix", "--images", "3", "--seed", "8", "--task", "classify").returncode == 1
    assert store_files(vl_home) == blobs  # refused before any image was stored


# -- versions: add, diff, export -----------------------------------------------------------------
def test_add_keeps_classes_sorted(vl_home, tmp_path):
    store = Store(str(vl_home / "store"))
    first = _class_tree(tmp_path / "one", {"scissors": [1, 2], "rock": [3]})
    v1 = ingest(store, open_source(str(first)), "g").commit.manifest
    second = _class_tree(tmp_path / "two", {"paper": [4], "rock": [5]})
    v2 = ingest(store, open_source(str(second)), "g", ImportOptions(add=True)).commit.manifest
    assert v1.classes == ["rock", "scissors"] and v2.classes == ["paper", "rock", "scissors"]
    # the parent's images keep their class by NAME after the re-index
    assert _labels(v2) == {**_labels(v1), "paper/img4.png": "paper", "rock/img5.png": "rock"}


def test_diff_shows_class_changes(vl_home, cli, tmp_path):
    write_tree(tmp_path / "d", {"a.png": png(seed=1), "b.png": png(seed=2), "c.png": png(seed=3)})
    csv = tmp_path / "d" / "labels.csv"
    csv.write_text("a.png,rock\nb.png,paper\nc.png,rock\n")
    assert cli("data", "import", str(csv), "--name", "hand").returncode == 0
    csv.write_text("a.png,paper\nb.png,paper\nc.png,rock\n")
    assert cli("data", "import", str(csv), "--name", "hand").returncode == 0
    d = cli("data", "diff", "hand@1", "hand@2")
    assert d.returncode == 0, d.stderr
    assert "class changes: 1\n  a.png: rock → paper\n" in d.stdout
    assert "added images: 0" in d.stdout and "removed images: 0" in d.stdout
    js = json.loads(cli("data", "diff", "hand@1", "hand@2", "--json").stdout)
    assert [(c["source"], c["old"], c["new"]) for c in js["class_changes"]] == [("a.png", "rock", "paper")]
    assert len(js["relabeled"]) == 1


@pytest.mark.parametrize("fmt", ["folders", "labelstudio"])
def test_export_round_trip(vl_home, cli, tmp_path, fmt):
    src = rps_crops(tmp_path / "rps", limit_per_split=4)
    assert cli("data", "import", str(src), "--name", "rps").returncode == 0
    out = tmp_path / "exported"
    args = ["--format", fmt] if fmt != "folders" else []  # folders is a classify version's default
    ex = cli("data", "export", "rps@1", "--out", str(out), *args)
    assert ex.returncode == 0, ex.stderr
    m = _catalog(vl_home).load("rps@1")
    if fmt == "folders":
        assert (out / "classes.txt").read_text() == "paper\nrock\nscissors\n"
        folders = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
        assert folders == sorted(f"{i.split}/{m.classes[i.class_id]}" for i in m.images)
    back = cli("data", "import", str(out), "--name", "again")
    assert back.returncode == 0, back.stderr
    cat = _catalog(vl_home)
    a, b = cat.load("rps@1"), cat.load("again@1")
    assert (b.task, b.classes, b.content_hash) == (a.task, a.classes, a.content_hash)
    # the splits come back too (class folders as folders; labelstudio as each task's data.split)
    assert b.split_policy.mode == "source"
    assert {i.sha256: i.split for i in a.images} == {i.sha256: i.split for i in b.images}


def test_export_refuses_box_formats(vl_home, cli, tmp_path):
    assert cli("data", "synth", "--name", "s", "--task", "classify", "--images", "4", "--size", "64").returncode == 0
    r = cli("data", "export", "s@1", "--format", "coco", "--out", str(tmp_path / "x"))
    assert r.returncode == 1
    assert r.stderr.strip() == ("error: s@1 is a classification dataset; export it with --format folders "
                                "or labelstudio (coco holds boxes)")
    assert cli("data", "export", "s@1", "--format", "voc", "--out", str(tmp_path / "x")).stderr.strip() == (
        "error: unknown export format 'voc'; choose one of folders, labelstudio")
    assert not (tmp_path / "x").exists()
