"""A YOLO-layout zip (the flyingthings / Label Studio export) from a local path or a store URL.

The archive is checked as a whole before any member is read: absolute paths, ``..`` entries
and symlinks are refused, and so is a total uncompressed size over the limit or a member that
expands suspiciously (a zip bomb). Members are then read in memory; nothing is extracted to disk.
"""

from __future__ import annotations

import io
import os
import re
import stat
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from ...errors import NotFoundError, ValidationError
from ...store import read_url
from ..ingest import SourceDataset
from .tree import FileTree
from .yolo_folder import source_from_tree

MAX_TOTAL_BYTES = 8 * 1024**3  # override with VISIONLOOP_MAX_ARCHIVE_BYTES
MAX_RATIO = 200  # images barely compress; 200x on a big member means a bomb
RATIO_MIN_BYTES = 10 * 1024**2


def max_total_bytes() -> int:
    raw = os.environ.get("VISIONLOOP_MAX_ARCHIVE_BYTES")
    if not raw:
        return MAX_TOTAL_BYTES
    try:
        return int(raw)
    except ValueError:
        raise ValidationError(f"VISIONLOOP_MAX_ARCHIVE_BYTES must be a number of bytes, got {raw!r}") from None


def check_archive(zf: zipfile.ZipFile, label: str, limit: int) -> None:
    """Refuse an unsafe archive from its central directory alone (nothing read or extracted)."""
    total = 0
    for info in zf.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
            raise ValidationError(f"unsafe archive {label}: entry {name!r} has an absolute path")
        if ".." in PurePosixPath(name.replace("\\", "/")).parts:
            raise ValidationError(f"unsafe archive {label}: entry {name!r} points outside the archive (..)")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ValidationError(f"unsafe archive {label}: entry {name!r} is a symbolic link")
        if info.is_dir():
            continue
        total += info.file_size
        if info.file_size >= RATIO_MIN_BYTES and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise ValidationError(
                f"unsafe archive {label}: entry {name!r} expands {info.file_size // max(info.compress_size, 1)}x "
                f"(zip bomb?)")
    if total > limit:
        raise ValidationError(
            f"unsafe archive {label}: {total} bytes uncompressed exceeds the limit of {limit} bytes (zip bomb?)")


def _reader(zf: zipfile.ZipFile, info: zipfile.ZipInfo, label: str):
    def read() -> bytes:
        try:
            return zf.read(info)  # never more than the declared (already checked) size
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise ValidationError(f"corrupt archive member in {label}: {exc}") from None
    return read


def zip_tree(data: bytes | Path, label: str, limit: int | None = None) -> FileTree:
    try:
        zf = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except (zipfile.BadZipFile, OSError):
        raise ValidationError(f"{label} is not a readable zip archive") from None
    check_archive(zf, label, max_total_bytes() if limit is None else limit)
    files = {i.filename: _reader(zf, i, label) for i in zf.infolist() if not i.is_dir()}
    return FileTree(files, label)


def load(url: str, limit: int | None = None) -> SourceDataset:
    """A local path is opened in place; a store URL (``s3://``) is read into memory."""
    if "://" in url and not url.startswith("file://"):
        return source_from_tree(zip_tree(read_url(url), url, limit))
    path = Path(url.removeprefix("file://"))
    if not path.is_file():
        raise NotFoundError(f"not found: {url}")
    return source_from_tree(zip_tree(path, str(path), limit))
