"""The store on a local directory and on a real S3-compatible server (moto, on loopback)."""

from __future__ import annotations

import threading

import pytest

from datasets_fixtures import moto_endpoint, s3_bucket, s3_keys  # noqa: F401  (fixtures)
from visionloop.errors import NotFoundError
from visionloop.store import Store, read_url, sha256_bytes


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return Store(str(tmp_path / "store"))
    bucket, _ = request.getfixturevalue("s3_bucket")
    return Store(f"s3://{bucket}/prefix")


def test_blobs_are_content_addressed_and_written_once(store):
    data = b"hello image"
    sha = store.put_blob(data)
    assert sha == sha256_bytes(data)
    assert store.has_blob(sha) and store.get_blob(sha) == data
    assert store.put_blob(data) == sha  # second put: same key, no error
    assert list(store.walk_keys("blobs")) == [f"blobs/{sha[:2]}/{sha}"]
    assert not store.has_blob("0" * 64)
    with pytest.raises(NotFoundError, match="not in store"):
        store.get_blob("0" * 64)


def test_write_read_list_delete(store):
    store.write_bytes("docs/a.json", b"1")
    store.write_bytes("docs/a.json", b"22")  # overwrite is whole
    store.write_bytes("docs/b.json", b"3")
    assert store.read_bytes("docs/a.json") == b"22"
    assert store.list("docs") == ["a.json", "b.json"]
    assert store.list("nothing-here") == []
    store.delete("docs/a.json")
    store.delete("docs/a.json")  # deleting twice is fine
    assert store.list("docs") == ["b.json"]
    assert not store.exists("docs/a.json")


def test_create_exclusive_never_overwrites(store):
    assert store.create_exclusive("datasets/x/v000001.json", b"first")
    assert not store.create_exclusive("datasets/x/v000001.json", b"second")
    assert store.read_bytes("datasets/x/v000001.json") == b"first"


def test_local_create_exclusive_race_has_one_winner(tmp_path):
    store = Store(str(tmp_path / "store"))
    wins: list[int] = []
    barrier = threading.Barrier(8)

    def attempt(i: int) -> None:
        barrier.wait()
        if store.create_exclusive("k/v1.json", str(i).encode()):
            wins.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.read_bytes("k/v1.json") == str(wins[0]).encode()
    assert not [p for p in (tmp_path / "store" / "k").iterdir() if ".tmp-" in p.name]  # temp files cleaned


def test_local_atomic_write_hides_temp_files(tmp_path):
    store = Store(str(tmp_path / "store"))
    # a crash between writing the temp file and the rename leaves only a temp file: invisible
    (tmp_path / "store" / "docs").mkdir(parents=True)
    (tmp_path / "store" / "docs" / "a.json.tmp-deadbeef").write_bytes(b"half")
    assert store.list("docs") == []
    assert list(store.walk_keys("docs")) == []
    store.write_bytes("docs/a.json", b"whole")
    assert store.list("docs") == ["a.json"]


def test_read_url_local_and_s3(tmp_path, s3_bucket):
    bucket, client = s3_bucket
    (tmp_path / "f.bin").write_bytes(b"abc")
    assert read_url(str(tmp_path / "f.bin")) == b"abc"
    client.put_object(Bucket=bucket, Key="in/f.bin", Body=b"xyz")
    assert read_url(f"s3://{bucket}/in/f.bin") == b"xyz"
    with pytest.raises(NotFoundError, match=f"not found: s3://{bucket}/in/missing.bin"):
        read_url(f"s3://{bucket}/in/missing.bin")


def test_s3_store_layout_and_repr_has_no_secrets(s3_bucket, monkeypatch):
    bucket, client = s3_bucket
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "very-secret-value")
    store = Store(f"s3://{bucket}/root")
    sha = store.put_blob(b"img")
    store.write_bytes("datasets/d/v000001.json", b"{}")
    assert s3_keys(client, bucket) == [f"root/blobs/{sha[:2]}/{sha}", "root/datasets/d/v000001.json"]
    assert "very-secret-value" not in repr(store)


def test_bulk_blobs_without_per_file_fsync_then_one_sync(store):
    shas = [store.put_blob(f"blob {i}".encode(), durable=False) for i in range(5)]
    store.sync()  # one flush for the lot (local: syncfs; S3: PUTs are already durable)
    assert [store.get_blob(s) for s in shas] == [f"blob {i}".encode() for i in range(5)]
    assert sorted(store.walk_keys("blobs")) == sorted(store.blob_key(s) for s in shas)


def test_a_blob_cut_short_by_a_crash_is_written_again(tmp_path):
    store = Store(str(tmp_path / "store"))
    sha = sha256_bytes(b"full content")
    path = tmp_path / "store" / store.blob_key(sha)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")  # what an unsynced file can look like after a power loss
    assert store.put_blob(b"full content", durable=False) == sha
    assert store.get_blob(sha) == b"full content"


def test_create_exclusive_loses_a_race_it_cannot_see(store, monkeypatch):
    """Even when the existence check misses a concurrent writer, the first manifest survives."""
    assert store.create_exclusive("datasets/y/v000001.json", b"winner")
    monkeypatch.setattr(store, "exists", lambda key: False)  # the racer checked before we wrote
    assert not store.create_exclusive("datasets/y/v000001.json", b"loser")
    assert store.read_bytes("datasets/y/v000001.json") == b"winner"


def test_use_settings_points_this_process_elsewhere_without_touching_the_environment(vl_home, tmp_path, monkeypatch):
    import os

    from visionloop.settings import Settings, get_settings, use_settings
    from visionloop.store import open_store

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://elsewhere:5000")
    before = dict(os.environ)
    other = Settings.isolated(tmp_path / "other")
    with use_settings(other):
        assert get_settings() is other and get_settings(fresh=True) is other
        assert open_store().url == str(tmp_path / "other" / "store")
        assert other.resolved_tracking_uri == f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
        env = other.child_env()
    assert dict(os.environ) == before
    assert get_settings().resolved_home == vl_home.resolve()
    assert env["VISIONLOOP_HOME"] == str(tmp_path / "other")
    assert env["VISIONLOOP_STORE_URL"] == str(tmp_path / "other" / "store")
    assert env["VISIONLOOP_TRACKING_URI"] == other.resolved_tracking_uri and "MLFLOW_TRACKING_URI" not in env
    assert env["PATH"] == os.environ["PATH"]  # the rest of the environment is passed on
