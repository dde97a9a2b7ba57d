"""Local files written whole or not at all, and hashed in one way.

Every local write that a reader may see half-done (caches, reports, exports, workflow files)
goes through :func:`atomic_write_bytes`: a hidden temp name beside the target, then
``os.replace``. Listings of the store skip names holding ``.tmp-``.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path


def temp_beside(path: str | os.PathLike, data: bytes, durable: bool = False) -> str:
    """Write ``data`` under a hidden temp name next to ``path``; returns that name."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    return tmp


def atomic_write_bytes(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    """Readers see the old content or the new, never a part (``durable``: fsync first)."""
    tmp = temp_beside(path, data, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, durable: bool = False) -> None:
    atomic_write_bytes(path, text.encode(), durable)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (ONNX files can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
