"""COCO, Label Studio and data.yaml variants; exports that import back to the same content."""

from __future__ import annotations

import json
import zipfile

import pytest

from datasets_fixtures import png, write_tree, yolo_files
from visionloop.datasets.catalog import Catalog
from visionloop.datasets.diff import diff_manifests
from visionloop.datasets.formats import export_version, open_source, synthetic_source
from visionloop.datasets.ingest import ImportOptions, ingest
from visionloop.errors import NotFoundError, ValidationError
from visionloop.store import Store


@pytest.fixture
def store(tmp_path):
    return Store(str(tmp_path / "store"))


def coco_doc() -> dict:
    return {
        "images": [{"id": 10, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 11, "file_name": "sub/b.png", "width": 64, "height": 48},
                   {"id": 12, "file_name": "c.png", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [16, 12, 32, 24], "iscrowd": 0},
            {"id": 2, "image_id": 11, "category_id": 3, "bbox": [0, 0, 64, 48]},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        ],
        "categories": [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }


def test_coco_import_converts_pixels_and_maps_categories_by_sorted_id(store, tmp_path):
    write_tree(tmp_path / "coco", {"images/a.png": png(seed=1), "b.png": png(seed=2), "images/c.png": png(seed=3)})
    (tmp_path / "coco" / "instances.json").write_text(json.dumps(coco_doc()))
    res = ingest(store, open_source(str(tmp_path / "coco" / "instances.json")), "coco")
    m = res.commit.manifest
    assert m.classes == ["cat", "dog"]  # id 3 → 0, id 7 → 1
    recs = {i.source: i for i in m.images}
    a = recs["a.png"].boxes[0]
    assert (a.class_id, a.cx, a.cy, a.w, a.h) == (1, 0.5, 0.5, 0.5, 0.5)
    assert [(b.class_id, b.w, b.h) for b in recs["sub/b.png"].boxes] == [(0, 1.0, 1.0)]  # crowd skipped
    assert recs["c.png"].boxes == [] and res.report.background == 1


def test_coco_problems_name_the_annotation(store, tmp_path):
    doc = coco_doc()
    doc["annotations"] += [{"id": 4, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]},
                           {"id": 5, "image_id": 12, "category_id": 42, "bbox": [0, 0, 1, 1]}]
    doc["images"].append({"id": 13, "file_name": "missing.png"})
    write_tree(tmp_path / "coco", {"a.png": png(seed=1), "b.png": png(seed=2), "c.png": png(seed=3)})
    (tmp_path / "coco" / "ann.json").write_text(json.dumps(doc))
    src = open_source(str(tmp_path / "coco"))  # a folder with one COCO json
    with pytest.raises(ValidationError) as exc:
        ingest(store, src, "c", ImportOptions(strict=True))
    assert str(exc.value) == ("strict import refused, 3 problems: ann.json: annotation 4: refers to image id 99, "
                              "which is not in 'images'; ann.json: image 12 (c.png): annotation 5: unknown "
                              "category_id 42; missing.png: cannot read: image file missing.png not found")
    assert list(store.walk_keys("")) == []
    res = ingest(store, open_source(str(tmp_path / "coco")), "c")
    assert sorted(i.source for i in res.commit.manifest.images) == ["a.png", "sub/b.png"]


def labelstudio_tasks() -> list:
    def rect(x, y, w, h, label, rotation=0):
        return {"type": "rectanglelabels", "original_width": 64, "original_height": 48,
                "value": {"x": x, "y": y, "width": w, "height": h, "rotation": rotation, "rectanglelabels": [label]}}
    return [
        {"id": 1, "data": {"image": "/data/upload/3/1a2b3c4d-one.png"},
         "annotations": [{"result": [rect(25, 25, 50, 50, "rock")], "was_cancelled": False}]},
        {"id": 2, "data": {"image": "/data/local-files/?d=pics/two.png"},
         "annotations": [{"result": [rect(0, 0, 10, 10, "paper")], "was_cancelled": False},
                         {"result": [rect(0, 0, 100, 100, "paper"), {"type": "choices", "value": {}}],
                          "was_cancelled": False}]},
        {"id": 3, "data": {"image": "three.png"}, "annotations": [{"result": [], "was_cancelled": False}]},
        {"id": 4, "data": {"image": "four.png"}, "annotations": [{"result": [rect(0, 0, 5, 5, "rock")],
                                                                  "was_cancelled": True}]},
    ]


def test_labelstudio_json_percent_boxes_classes_by_name(store, tmp_path):
    write_tree(tmp_path / "imgs", {"one.png": png(seed=1), "pics/two.png": png(seed=2), "three.png": png(seed=3),
                                   "four.png": png(seed=4)})
    (tmp_path / "export.json").write_text(json.dumps(labelstudio_tasks()))
    src = open_source(str(tmp_path / "export.json"), images_dir=tmp_path / "imgs")
    res = ingest(store, src, "ls")
    m = res.commit.manifest
    assert m.classes == ["paper", "rock"]
    recs = {i.source: i for i in m.images}
    one = recs["/data/upload/3/1a2b3c4d-one.png"].boxes[0]
    assert (one.class_id, one.cx, one.cy, one.w, one.h) == (1, 0.5, 0.5, 0.5, 0.5)
    two = recs["/data/local-files/?d=pics/two.png"].boxes  # the last annotation counts
    assert [(b.class_id, b.w, b.h) for b in two] == [(0, 1.0, 1.0)]
    assert recs["three.png"].boxes == []  # annotated, nothing there: background
    assert "four.png" not in recs  # only a cancelled annotation: not labeled yet
    assert [(p.kind.value, str(p)) for p in res.report.problems] == [
        ("not labeled yet", "four.png: task 4 has no annotation yet (skipped)")]


def test_labelstudio_missing_image_says_how_to_fix(store, tmp_path):
    (tmp_path / "export.json").write_text(json.dumps(labelstudio_tasks()[:1]))
    with pytest.raises(ValidationError) as exc:
        ingest(store, open_source(str(tmp_path / "export.json")), "ls", ImportOptions(strict=True))
    assert str(exc.value) == ("strict import refused, 1 problem: /data/upload/3/1a2b3c4d-one.png: cannot read: "
                              "image /data/upload/3/1a2b3c4d-one.png not found (pass --images DIR)")


def test_data_yaml_with_path_key_names_dict_and_list_file(store, tmp_path):
    root = tmp_path / "ds"
    files = yolo_files(4)
    write_tree(root / "images" / "tr", {k[7:]: v for k, v in files.items() if k.startswith("images/img") and k[10] in "01"})
    write_tree(root / "labels" / "tr", {k[7:]: v for k, v in files.items() if k.startswith("labels/img") and k[10] in "01"})
    write_tree(root / "images" / "va", {"img2.png": files["images/img2.png"], "img3.png": files["images/img3.png"]})
    write_tree(root / "labels" / "va", {"img2.txt": files["labels/img2.txt"], "img3.txt": files["labels/img3.txt"]})
    (root / "val.txt").write_text("images/va/img2.png\n./images/va/img3.png\n")
    cfg = tmp_path / "cfg" / "my.yaml"
    cfg.parent.mkdir()
    cfg.write_text("path: ../ds\ntrain: images/tr\nval: val.txt\nnames: {0: rock, 2: scissors, 1: paper}\n")
    m = ingest(store, open_source(str(cfg)), "y").commit.manifest
    assert m.classes == ["rock", "paper", "scissors"]
    assert m.split_counts() == {"train": 2, "val": 2, "test": 0}


@pytest.mark.parametrize("text, message", [
    ("train: images\nnames: [a, b]\nnc: 3\n", "'nc: 3' does not match the 2 names"),
    ("train: images\nnames: {0: a, 2: b}\n", "'names' keys must be class ids 0..1, got [0, 2]"),
    ("names: [a]\n", "no 'train' entry"),
    ("train: nowhere\nnames: [a]\n", "data.yaml 'train': image folder"),
    ("[1, 2\n", "not valid YAML"),
])
def test_bad_data_yaml_is_one_clear_error(tmp_path, text, message):
    (tmp_path / "data.yaml").write_text(text)
    with pytest.raises((ValidationError, NotFoundError)) as exc:
        open_source(str(tmp_path / "data.yaml"))
    assert message in str(exc.value) and str(tmp_path) in str(exc.value)


@pytest.mark.parametrize("fmt", ["yolo", "coco", "labelstudio"])
@pytest.mark.parametrize("as_zip", [False, True])
def test_export_then_import_gives_the_same_images_and_boxes(store, tmp_path, fmt, as_zip):
    m = ingest(store, synthetic_source(12, seed=4, size=96), "shapes", ImportOptions(seed=4)).commit.manifest
    out = tmp_path / (f"out-{fmt}.zip" if as_zip else f"out-{fmt}")
    export_version(store, m, fmt, out)
    if as_zip:
        names = zipfile.ZipFile(out).namelist()
        assert sum(n.startswith("images/") for n in names) == 12
        if fmt != "yolo":  # only the YOLO layout is importable from a zip; unpack the others
            zipfile.ZipFile(out).extractall(tmp_path / "unzipped")
            out = tmp_path / "unzipped"
    back = ingest(store, open_source(str(out)), f"back-{fmt}", ImportOptions(seed=4)).commit.manifest
    d = diff_manifests(m, back)
    assert d.unchanged, d
    assert back.classes == m.classes


def test_export_refuses_to_overwrite(store, tmp_path):
    m = ingest(store, synthetic_source(2, seed=0, size=64), "s").commit.manifest
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    with pytest.raises(ValidationError, match="already exists"):
        export_version(store, m, "yolo", tmp_path / "taken")
    assert (tmp_path / "taken" / "file").read_text() == "mine"
    with pytest.raises(ValidationError, match="unknown export format 'voc'"):
        export_version(store, m, "voc", tmp_path / "x")


def test_catalog_names_versions(store):
    ingest(store, synthetic_source(3, seed=0, size=64), "a")
    ingest(store, synthetic_source(3, seed=1, size=64), "a")
    ingest(store, synthetic_source(3, seed=0, size=64), "b")
    cat = Catalog(store)
    assert cat.names() == ["a", "b"] and cat.versions("a") == [1, 2]
    assert cat.load("a@latest").version == 2 and cat.load("a@2").parent == 1
