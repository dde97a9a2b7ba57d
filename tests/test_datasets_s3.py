"""Datasets on a real S3-compatible server (moto, started on 127.0.0.1 by the test)."""

from __future__ import annotations

import pytest
import yaml

from datasets_fixtures import make_zip, moto_endpoint, s3_bucket, s3_keys, yolo_files  # noqa: F401
from visionloop.datasets.catalog import Catalog
from visionloop.datasets.materialize import materialize
from visionloop.store import Store


def test_zip_from_s3_into_an_s3_store_then_list_show_materialize(vl_home, cli, tmp_path, s3_bucket, monkeypatch):
    bucket, client = s3_bucket
    z = make_zip(tmp_path / "export.zip", yolo_files(5, classes="rock\npaper\nscissors"))
    client.put_object(Bucket=bucket, Key="incoming/export.zip", Body=z.read_bytes())
    monkeypatch.setenv("VISIONLOOP_STORE_URL", f"s3://{bucket}/vl")

    r = cli("data", "import", f"s3://{bucket}/incoming/export.zip", "--name", "ft")
    assert r.returncode == 0, r.stderr
    assert "created ft@1: 5 images" in r.stdout
    assert "testing" not in r.stdout + r.stderr  # credentials never printed
    keys = s3_keys(client, bucket, "vl/")
    assert "vl/datasets/ft/v000001.json" in keys
    assert sum(k.startswith("vl/blobs/") for k in keys) == 5
    assert not (vl_home / "store").exists()  # nothing went to the local default

    again = cli("data", "import", f"s3://{bucket}/incoming/export.zip", "--name", "ft")
    assert "no new version: content equals ft@1" in again.stdout, again.stderr

    listed = cli("data", "list")
    assert listed.returncode == 0 and "ft@1" in listed.stdout
    show = cli("data", "show", "ft@1")
    assert show.returncode == 0 and "rock, paper, scissors" in show.stdout
    assert "│ total │      5 │" in show.stdout

    store = Store(f"s3://{bucket}/vl")
    m = Catalog(store).load("ft@1")
    assert m.classes == ["rock", "paper", "scissors"]
    data_yaml = materialize(store, m, tmp_path / "cache")
    cfg = yaml.safe_load(data_yaml.read_text())
    assert cfg["names"] == {0: "rock", 1: "paper", 2: "scissors"}
    imgs = sorted((data_yaml.parent / "images").rglob("*.png"))
    assert len(imgs) == 5
    assert {p.read_bytes() for p in imgs} == {store.get_blob(i.sha256) for i in m.images}

    missing = cli("data", "import", f"s3://{bucket}/incoming/nope.zip", "--name", "x")
    assert missing.returncode == 1
    assert missing.stderr.strip() == f"error: not found: s3://{bucket}/incoming/nope.zip"


def test_s3_import_killed_before_the_manifest_leaves_no_version(s3_bucket, tmp_path):
    """Blobs first, manifest last: blobs without a manifest are invisible."""
    from visionloop.datasets.formats import synthetic_source
    from visionloop.datasets.ingest import ingest

    bucket, client = s3_bucket
    store = Store(f"s3://{bucket}/vl")
    src = synthetic_source(6, seed=0, size=64)

    class Crash(Exception):
        pass

    def crash_after_three(done, total):
        if done == 4:
            raise Crash

    with pytest.raises(Crash):
        ingest(store, src, "crash", progress=crash_after_three)
    assert sum(k.startswith("vl/blobs/") for k in s3_keys(client, bucket)) == 3
    assert Catalog(store).names() == []
    res = ingest(Store(f"s3://{bucket}/vl"), synthetic_source(6, seed=0, size=64), "crash")
    assert res.created and res.commit.manifest.version == 1 and len(res.commit.manifest.images) == 6
