"""Importing the way a user does (`visionloop data import` as a real process), with validation."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import time

import pytest
from PIL import Image

from conftest import RPS, VISIONLOOP
from datasets_fixtures import bomb_png, jpg, make_zip, png, store_files, summary, write_tree, yolo_files
from visionloop.datasets.catalog import Catalog
from visionloop.datasets.split import assign_split
from visionloop.store import Store


def catalog(home) -> Catalog:
    return Catalog(Store(str(home / "store")))


# -- acceptance: the real Roboflow export -------------------------------------------------------
def test_rps_data_yaml_keeps_splits_counts_background_and_reimport_is_a_noop(vl_home, cli):
    r = cli("data", "import", str(RPS / "data.yaml"), "--name", "rps")
    assert r.returncode == 0, r.stderr
    assert "created rps@1: 335 images (train 294 / val 28 / test 13), classes: paper, rock, scissors" in r.stdout
    assert summary(r.stdout) == {"images imported": 335, "background images (no boxes)": 3, "boxes": 332}
    m = catalog(vl_home).load("rps@1")
    assert len(m.images) == 335 and m.classes == ["paper", "rock", "scissors"]
    assert m.split_counts() == {"train": 294, "val": 28, "test": 13}
    assert m.split_policy.mode == "source"
    assert sum(1 for i in m.images if not i.boxes) == 3
    by_source = {i.source: i.split for i in m.images}
    assert by_source["valid/images/" + sorted(os.listdir(RPS / "valid" / "images"))[0]] == "val"

    again = cli("data", "import", str(RPS / "data.yaml"), "--name", "rps")
    assert again.returncode == 0, again.stderr
    assert "no new version: content equals rps@1" in again.stdout
    assert catalog(vl_home).versions("rps") == [1]

    # a resplit of an existing dataset cannot move images: the test split must never leak
    resplit = cli("data", "import", str(RPS / "data.yaml"), "--name", "rps", "--resplit", "--seed", "3")
    assert "no new version: content equals rps@1" in resplit.stdout, resplit.stderr
    assert "existing images keep their split" in resplit.stderr

    fresh = cli("data", "import", str(RPS / "data.yaml"), "--name", "rps-hash", "--resplit", "--seed", "3")
    assert fresh.returncode == 0, fresh.stderr
    m3 = catalog(vl_home).load("rps-hash")
    assert all(i.split == assign_split(3, i.sha256) for i in m3.images)
    assert m3.split_counts() != {"train": 294, "val": 28, "test": 13}


# -- the flyingthings / Label Studio YOLO zip ---------------------------------------------------
def test_flyingthings_zip_without_final_newline_keeps_every_class(vl_home, cli, tmp_path):
    files = yolo_files(3, classes="rock\npaper\nscissors")  # no newline after the last class
    files["notes.json"] = json.dumps({"categories": [{"id": 0, "name": "ignored-when-classes.txt-exists"}]}).encode()
    z = make_zip(tmp_path / "export.zip", {f"project-7-at-2024/{k}": v for k, v in files.items()})
    r = cli("data", "import", str(z), "--name", "ft")
    assert r.returncode == 0, r.stderr
    m = catalog(vl_home).load("ft@1")
    assert m.classes == ["rock", "paper", "scissors"]
    assert sorted(b.class_id for i in m.images for b in i.boxes) == [0, 1, 2]
    assert sorted(i.source for i in m.images) == [f"project-7-at-2024/images/img{i}.png" for i in range(3)]


def test_class_names_from_notes_json_when_classes_txt_is_missing(vl_home, cli, tmp_path):
    files = yolo_files(3)
    del files["classes.txt"]
    files["notes.json"] = json.dumps({"categories": [{"id": 1, "name": "paper"}, {"id": 0, "name": "rock"},
                                                     {"id": 2, "name": "scissors"}], "info": {}}).encode()
    r = cli("data", "import", str(make_zip(tmp_path / "e.zip", files)), "--name", "ft")
    assert r.returncode == 0, r.stderr
    assert catalog(vl_home).load("ft").classes == ["rock", "paper", "scissors"]

    del files["notes.json"]
    r = cli("data", "import", str(make_zip(tmp_path / "none.zip", files)), "--name", "ft2")
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: {tmp_path / 'none.zip'}: no class names (neither classes.txt nor notes.json exists)"


# -- every bad input: default drops with a warning, --strict refuses and writes nothing ---------
BASE = yolo_files(2)  # img0 (class 0), img1 (class 1), both fine
CASES = {
    "unreadable": ({"images/bad.png": b"not an image at all", "labels/bad.txt": b"0 0.5 0.5 0.2 0.2\n"},
                   "images/bad.png: not a readable image", "unreadable or truncated image"),
    "truncated": ({"images/bad.jpg": jpg(200, 200, seed=9)[:1500], "labels/bad.txt": b"0 0.5 0.5 0.2 0.2\n"},
                  "images/bad.jpg: truncated or corrupt image", "unreadable or truncated image"),
    "field-count": ({"images/x.png": png(seed=50), "labels/x.txt": b"0 0.5 0.5 0.2\n"},
                    "labels/x.txt: line 1: expected 5 fields 'class cx cy w h', got 4", "bad label line"),
    "not-a-number": ({"images/x.png": png(seed=50), "labels/x.txt": b"0 0.5 0.5 0.2 0.2\n1 0.5 abc 0.2 0.2\n"},
                     "labels/x.txt: line 2: 'abc' is not a number", "bad label line"),
    "class-range": ({"images/x.png": png(seed=50), "labels/x.txt": b"7 0.5 0.5 0.2 0.2\n"},
                    "labels/x.txt: line 1: class id 7 is out of range (0..2)", "class id out of range"),
    "coords": ({"images/x.png": png(seed=50), "labels/x.txt": b"0 1.5 0.5 0.2 0.2\n"},
               "labels/x.txt: line 1: coordinates outside [0,1] (cx=1.5 cy=0.5 w=0.2 h=0.2)",
               "coordinates outside [0,1]"),
    "zero-area": ({"images/x.png": png(seed=50), "labels/x.txt": b"0 0.5 0.5 0 0.2\n"},
                  "labels/x.txt: line 1: box has zero area (w=0, h=0.2)", "zero-area box"),
    "label-without-image": ({"labels/ghost.txt": b"0 0.5 0.5 0.2 0.2\n"},
                            "labels/ghost.txt: label file has no matching image in images/", "label without image"),
    "conflicting-duplicate": ({"images/copy.png": BASE["images/img0.png"], "labels/copy.txt": b"2 0.1 0.1 0.1 0.1\n"},
                              "images/img0.png: same image as images/copy.png but different labels (both dropped)",
                              "same image twice with different labels"),
    "decompression-bomb": ({"images/bomb.png": bomb_png(), "labels/bomb.txt": b"0 0.5 0.5 0.2 0.2\n"},
                           "images/bomb.png: image 8000x8000 exceeds the pixel limit of 50000000 (decompression bomb)",
                           "decompression bomb"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_dropped_by_default_refused_when_strict(case, vl_home, cli, tmp_path):
    extra, message, kind = CASES[case]
    folder = write_tree(tmp_path / "ds", {**BASE, **extra})

    strict = cli("data", "import", str(folder), "--name", "bad", "--strict")
    assert strict.returncode == 1
    assert strict.stderr.strip() == f"error: strict import refused, 1 problem: {message}"
    assert store_files(vl_home) == []  # not one blob, no manifest
    assert catalog(vl_home).names() == []

    default = cli("data", "import", str(folder), "--name", "bad")
    assert default.returncode == 0, default.stderr
    assert f"warning: {message} (dropped)" in default.stderr.splitlines()
    assert summary(default.stdout)[kind] == 1
    m = catalog(vl_home).load("bad@1")
    expected = {"images/img1.png"} if case == "conflicting-duplicate" else {"images/img0.png", "images/img1.png"}
    assert {i.source for i in m.images} == expected


def test_images_without_labels_or_with_empty_labels_are_background(vl_home, cli, tmp_path):
    files = {**BASE, "images/nolabel.png": png(seed=70), "images/empty.png": png(seed=71), "labels/empty.txt": b""}
    r = cli("data", "import", str(write_tree(tmp_path / "ds", files)), "--name", "bg", "--strict")
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout)["background images (no boxes)"] == 2
    m = catalog(vl_home).load("bg")
    assert sorted(i.source for i in m.images if not i.boxes) == ["images/empty.png", "images/nolabel.png"]


def test_same_image_twice_with_same_labels_is_stored_once(vl_home, cli, tmp_path):
    files = {**BASE, "images/copy.png": BASE["images/img0.png"], "labels/copy.txt": BASE["labels/img0.txt"]}
    r = cli("data", "import", str(write_tree(tmp_path / "ds", files)), "--name", "dup", "--strict")
    assert r.returncode == 0, r.stderr
    assert summary(r.stdout)["identical duplicates merged"] == 1
    assert len(catalog(vl_home).load("dup").images) == 2
    assert len([p for p in store_files(vl_home) if "blobs" in p.parts]) == 2


# -- archive safety: refused before anything is read ---------------------------------------------
def _absolute_entry_zip(path):
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for k, v in BASE.items():
            zf.writestr(k, v)
        zf.writestr(zipfile.ZipInfo("/etc/evil.txt"), b"x")
    return path


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "total-size", "ratio"])
def test_unsafe_archives_are_refused(kind, vl_home, cli, tmp_path):
    z = tmp_path / f"{kind}.zip"
    env = {}
    if kind == "absolute":
        _absolute_entry_zip(z)
        message = f"unsafe archive {z}: entry '/etc/evil.txt' has an absolute path"
    elif kind == "dotdot":
        make_zip(z, {**BASE, "images/../../escape.png": png(seed=5)})
        message = f"unsafe archive {z}: entry 'images/../../escape.png' points outside the archive (..)"
    elif kind == "symlink":
        make_zip(z, BASE, symlinks={"images/link.png": "/etc/passwd"})
        message = f"unsafe archive {z}: entry 'images/link.png' is a symbolic link"
    elif kind == "total-size":
        make_zip(z, BASE)
        total = sum(len(v) for v in BASE.values())
        env = {"VISIONLOOP_MAX_ARCHIVE_BYTES": "1000"}
        message = f"unsafe archive {z}: {total} bytes uncompressed exceeds the limit of 1000 bytes (zip bomb?)"
    else:
        make_zip(z, {**BASE, "images/zeros.png": bytes(50 * 1024 * 1024)})
        import zipfile

        info = zipfile.ZipFile(z).getinfo("images/zeros.png")
        message = (f"unsafe archive {z}: entry 'images/zeros.png' expands "
                   f"{info.file_size // info.compress_size}x (zip bomb?)")
    r = cli("data", "import", str(z), "--name", "evil", env=env)
    assert r.returncode == 1
    assert r.stderr.strip() == f"error: {message}"
    assert store_files(vl_home) == []
    assert not (tmp_path / "escape.png").exists() and not (tmp_path.parent / "escape.png").exists()


# -- versions -----------------------------------------------------------------------------------
def test_add_images_makes_version_2_and_old_images_keep_their_split(vl_home, cli, tmp_path):
    assert cli("data", "import", str(RPS / "data.yaml"), "--name", "rps").returncode == 0
    v1 = catalog(vl_home).load("rps@1")
    z = make_zip(tmp_path / "more.zip", yolo_files(6, classes="scissors\nlizard\nspock", seed=3))
    r = cli("data", "import", str(z), "--name", "rps", "--add")
    assert r.returncode == 0, r.stderr
    assert "created rps@2: 341 images" in r.stdout
    v2 = catalog(vl_home).load("rps@2")
    assert v2.parent == 1
    assert v2.classes == ["paper", "rock", "scissors", "lizard", "spock"]  # matched by name
    old = {i.sha256: i.split for i in v1.images}
    assert {i.sha256: i.split for i in v2.images if i.sha256 in old} == old
    new = [i for i in v2.images if i.sha256 not in old]
    assert len(new) == 6 and all(i.split == assign_split(0, i.sha256) for i in new)
    # "scissors" in the new zip is class 0 there; it must land on the existing scissors id (2)
    assert {v2.classes[b.class_id] for i in new for b in i.boxes} == {"scissors", "lizard", "spock"}
    assert [b.class_id for i in new if i.source.endswith("img0.png") for b in i.boxes] == [2]


def test_max_width_downscales_keeps_aspect_never_upscales_and_is_recorded(vl_home, cli, tmp_path):
    files = {"classes.txt": b"a\nb\nc\n", "images/wide.jpg": jpg(400, 100, seed=1),
             "labels/wide.txt": b"0 0.25 0.5 0.1 0.4\n", "images/small.png": png(100, 50, seed=2),
             "labels/small.txt": b"1 0.5 0.5 0.5 0.5\n"}
    r = cli("data", "import", str(write_tree(tmp_path / "ds", files)), "--name", "mw", "--max-width", "160")
    assert r.returncode == 0, r.stderr
    store = Store(str(vl_home / "store"))
    m = catalog(vl_home).load("mw")
    assert m.preprocessing.max_width == 160
    recs = {i.source: i for i in m.images}
    wide, small = recs["images/wide.jpg"], recs["images/small.png"]
    assert (wide.width, wide.height) == (160, 40)
    assert Image.open(io.BytesIO(store.get_blob(wide.sha256))).size == (160, 40)
    assert store.get_blob(small.sha256) == files["images/small.png"]  # untouched: same bytes
    assert (small.width, small.height) == (100, 50)
    assert [(b.cx, b.cy, b.w, b.h) for b in wide.boxes] == [(0.25, 0.5, 0.1, 0.4)]  # normalized: still valid
    show = cli("data", "show", "mw@1")
    assert "max_width=160" in show.stdout

    again = cli("data", "import", str(tmp_path / "ds"), "--name", "mw", "--max-width", "320")
    assert "created mw@2" in again.stdout  # a different preprocessing is different content
    bad = cli("data", "import", str(tmp_path / "ds"), "--name", "mw", "--add", "--max-width", "100")
    assert bad.returncode == 1
    assert bad.stderr.strip() == ("error: mw@2 was imported with --max-width 320; images added to it "
                                  "must use the same (got 100)")


def test_sigkill_mid_import_leaves_no_version_and_the_next_import_works(vl_home, tmp_path):
    blobs = vl_home / "store" / "blobs"
    proc = subprocess.Popen([*VISIONLOOP, "data", "synth", "--name", "big", "--images", "3000", "--size", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if blobs.exists() and sum(1 for _ in blobs.rglob("*") if _.is_file()) >= 5:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the import finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert sum(1 for p in blobs.rglob("*") if p.is_file()) >= 5  # it really was mid-way
    assert catalog(vl_home).names() == [] and catalog(vl_home).versions("big") == []

    r = subprocess.run([*VISIONLOOP, "data", "synth", "--name", "big", "--images", "8", "--size", "64"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert catalog(vl_home).versions("big") == [1] and len(catalog(vl_home).load("big@1").images) == 8
