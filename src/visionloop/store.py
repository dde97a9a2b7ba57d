"""Content-addressed, fsspec-backed store with atomic writes.

One class for every backend: a local directory by default, ``s3://bucket/prefix`` (MinIO or
AWS; endpoint from ``AWS_ENDPOINT_URL``) when configured. Blobs are addressed by their sha256
and written once. Named documents (manifests, reports) are written whole or not at all:
locally via a temp file and ``os.replace``; on S3 a single PUT is already atomic, so a reader
never sees half an object. Callers write blobs first and the manifest that names them last,
so a crash leaves at most unreferenced blobs, never a visible half-written version.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from .errors import NotFoundError, VisionloopError
from .files import temp_beside


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def open_url(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Filesystem and path for a URL; S3 honours ``AWS_ENDPOINT_URL`` (MinIO, moto)."""
    kwargs = {}
    if url.startswith("s3://"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            kwargs["client_kwargs"] = {"endpoint_url": endpoint}
        kwargs["skip_instance_cache"] = True
    try:
        fs, path = fsspec.core.url_to_fs(url, **kwargs)
    except ImportError as exc:  # e.g. s3fs missing
        raise VisionloopError(f"cannot open {url}: {exc} (install visionloop[s3])") from None
    return fs, path


def read_url(url: str) -> bytes:
    """Read a whole file from a local path or a store URL, with a clear error when missing."""
    fs, path = open_url(url)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise NotFoundError(f"not found: {url}") from None


class Store:
    """Blobs by hash plus named documents, under one root URL."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = open_url(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)
        if self.is_local:
            os.makedirs(self.root, exist_ok=True)

    def __repr__(self) -> str:  # the URL never holds credentials; keys come from the env
        return f"Store({self.url!r})"

    def _path(self, key: str) -> str:
        return posixpath.join(self.root, key)

    # -- named documents ------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes, *, durable: bool = True) -> None:
        """Write ``key`` atomically: readers see the old content or the new, never a part.

        ``durable=False`` skips the per-file fsync; the caller then calls :meth:`sync` once
        before anything that names the file is written (bulk imports: one flush, not one per blob).
        """
        path = self._path(key)
        if self.is_local:
            os.replace(temp_beside(path, data, durable), path)
        else:
            self.fs.pipe_file(path, data)

    def create_exclusive(self, key: str, data: bytes) -> bool:
        """Write ``key`` only if it does not exist yet; False when someone else won the race."""
        path = self._path(key)
        if self.is_local:
            tmp = temp_beside(path, data, durable=True)
            try:
                os.link(tmp, path)  # atomic and fails if the name exists
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        if self.exists(key):
            return False
        try:  # conditional PUT (If-None-Match: *) closes the race on S3 and MinIO
            self.fs.pipe_file(path, data, mode="create")
        except (FileExistsError, OSError) as exc:
            if isinstance(exc, FileExistsError) or "PreconditionFailed" in str(exc) or "412" in str(exc):
                return False
            raise
        return True

    def read_bytes(self, key: str) -> bytes:
        try:
            return self.fs.cat_file(self._path(key))
        except FileNotFoundError:
            raise NotFoundError(f"not in store: {key}") from None

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> list[str]:
        """Keys directly below ``prefix`` (names only, sorted); temp files are hidden."""
        path = self._path(prefix)
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        names = [posixpath.basename(e.rstrip("/")) for e in entries]
        return sorted(n for n in names if ".tmp-" not in n)

    def walk_keys(self, prefix: str) -> Iterator[str]:
        base = self._path(prefix)
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return
        for p in found:
            if ".tmp-" not in p:
                yield posixpath.relpath(p, self.root)

    # -- blobs ----------------------------------------------------------------------------
    @staticmethod
    def blob_key(sha: str) -> str:
        return f"blobs/{sha[:2]}/{sha}"

    def put_blob(self, data: bytes, sha: str | None = None, *, durable: bool = True) -> str:
        """Store ``data`` once under its sha256 and return the hash (``durable``: see write_bytes)."""
        sha = sha or sha256_bytes(data)
        key = self.blob_key(sha)
        if not self._has_complete(key, len(data)):
            self.write_bytes(key, data, durable=durable)
        return sha

    def _has_complete(self, key: str, size: int) -> bool:
        """Locally also compare the size: a blob written without fsync right before a power
        loss can survive as an empty file under its final name, and must be written again."""
        if not self.is_local:
            return self.exists(key)
        try:
            return os.stat(self._path(key)).st_size == size
        except FileNotFoundError:
            return False

    def sync(self) -> None:
        """Make every earlier write durable. Local: one ``syncfs`` of the store's filesystem
        (``os.sync`` where that is missing); S3: a finished PUT is already durable."""
        if not self.is_local:
            return
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(self.root, os.O_RDONLY)
            try:
                if libc.syncfs(fd) == 0:
                    return
            finally:
                os.close(fd)
        except (OSError, AttributeError):
            pass
        os.sync()

    def get_blob(self, sha: str) -> bytes:
        return self.read_bytes(self.blob_key(sha))

    def has_blob(self, sha: str) -> bool:
        return self.exists(self.blob_key(sha))

    def blob_local_path(self, sha: str) -> str | None:
        """A filesystem path for the blob when the store is local (lets us hard-link)."""
        return self._path(self.blob_key(sha)) if self.is_local else None


def open_store(url: str | None = None) -> Store:
    from .settings import get_settings

    return Store(url or get_settings().resolved_store_url)
