"""Builders for dataset tests: small real images, YOLO-layout folders and zips, a moto S3 server."""

from __future__ import annotations

import io
import stat
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlflow_s3_helpers import MotoServer, s3_keys  # noqa: F401  (s3_keys: used by importers)


def png(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    """A distinct noisy PNG (different seed → different bytes → different hash)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def jpg(w: int = 64, h: int = 48, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def bomb_png() -> bytes:
    """8000x8000 (64 Mpx, over the 50 Mpx limit) but tiny on disk: 1-bit, all black."""
    buf = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buf, "PNG")
    return buf.getvalue()


def yolo_files(n: int = 3, classes: str = "rock\npaper\nscissors", seed: int = 0) -> dict[str, bytes]:
    """A flyingthings layout: classes.txt (no final newline), images/, labels/, one box per image."""
    files: dict[str, bytes] = {"classes.txt": classes.encode()}
    for i in range(n):
        files[f"images/img{i}.png"] = png(seed=seed * 1000 + i)
        files[f"labels/img{i}.txt"] = f"{i % 3} 0.5 0.5 0.25 0.25\n".encode()
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def make_zip(path: Path, files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
        for rel, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(rel)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return buf.getvalue()


def summary(stdout: str) -> dict[str, int]:
    """The validation summary table printed by ``data import``, as {kind: count}."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2 and cells[1].isdigit():
            rows[cells[0]] = int(cells[1])
    return rows


def store_files(home: Path) -> list[Path]:
    """Every file under the local store (blobs, manifests, temp files)."""
    root = home / "store"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


# -- a real S3-compatible server on loopback (mlflow_s3_helpers.MotoServer) -------------------
@pytest.fixture(scope="session")
def moto_endpoint():
    server = MotoServer()
    yield server.endpoint
    server.stop()


S3_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")


@pytest.fixture
def s3_bucket(moto_endpoint, monkeypatch):
    """A fresh bucket on the moto server; the AWS variables point at it for this test."""
    import boto3

    env = {"AWS_ENDPOINT_URL": moto_endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    bucket = f"vl-{uuid.uuid4().hex[:12]}"
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    return bucket, client
