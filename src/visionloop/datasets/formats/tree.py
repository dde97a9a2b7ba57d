"""Read-side and write-side file trees shared by the importers and exporters.

A :class:`FileTree` maps relative POSIX paths to loaders, so one layout parser serves a folder
on disk and a zip archive read in memory. An :class:`OutputTree` writes an export into a folder
or a zip, built under a temporary name and renamed into place, so a failed export never leaves
a half-written result.
"""

from __future__ import annotations

import os
import shutil
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath

from ...errors import NotFoundError, ValidationError
from ...store import Store

IMAGE_EXTS = {"jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff", "mpo"}


def read_json_file(path: Path):
    """Parse a JSON document (BOM tolerated) with one-line errors for missing or invalid files."""
    import json

    try:
        return json.loads(Path(path).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise NotFoundError(f"not found: {path}") from None
    except ValueError as exc:
        raise ValidationError(f"{path}: not valid JSON ({exc})") from None


def is_image_name(path: str) -> bool:
    return PurePosixPath(path).suffix.lower().lstrip(".") in IMAGE_EXTS


@dataclass
class FileTree:
    """Relative paths → loaders; ``label`` names the whole tree in messages."""

    files: dict[str, Callable[[], bytes]]
    label: str

    def read_text(self, path: str) -> str:
        data = self.files[path]()
        try:
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationError(f"{self.label}: {path} is not UTF-8 text") from None


def folder_tree(root: Path) -> FileTree:
    files = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            files[p.relative_to(root).as_posix()] = partial(p.read_bytes)
    return FileTree(files, str(root))


class OutputTree:
    """Collects files for an export; ``out`` ending in ``.zip`` gives an archive, else a folder."""

    def __init__(self, out: Path):
        self.out = Path(out)
        if self.out.exists() and (self.out.is_file() or any(self.out.iterdir())):
            raise ValidationError(f"{self.out} already exists; choose a new --out path")
        self.is_zip = self.out.suffix.lower() == ".zip"
        self.tmp = self.out.with_name(f".{self.out.name}.tmp-{uuid.uuid4().hex[:8]}")
        if self.is_zip:
            self._zip: zipfile.ZipFile | None = zipfile.ZipFile(self.tmp, "w", zipfile.ZIP_STORED)
        else:
            self._zip = None
            self.tmp.mkdir(parents=True)

    def write(self, path: str, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if self._zip is not None:
            self._zip.writestr(path, raw)
            return
        dst = self.tmp / path
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(raw)

    def write_blob(self, path: str, store: Store, sha: str) -> None:
        """Add an image from the store. Copied, never hard-linked: the user may edit the export."""
        self.write(path, store.get_blob(sha))

    def __enter__(self) -> OutputTree:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._zip is not None:
            self._zip.close()
        if exc_type is not None:
            if self.is_zip:
                self.tmp.unlink(missing_ok=True)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.out.exists():  # an empty folder the user made for us
            self.out.rmdir()
        os.replace(self.tmp, self.out)
