"""One loop per model: an exclusive ``fcntl`` lock on ``VISIONLOOP_HOME/locks/loop-MODEL.lock``.

The kernel drops the lock when the process dies (even by SIGKILL), so a crashed loop never
leaves a stale lock behind. It guards the loops of one machine's home; loops on several
machines sharing one store need a lock in that store instead.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import ConflictError
from ..settings import get_settings


def lock_path(model: str) -> Path:
    return get_settings().resolved_home / "locks" / f"loop-{model}.lock"


@contextmanager
def model_lock(model: str) -> Iterator[Path]:
    """Hold the model's loop lock for the block; a second holder gets a one-line ConflictError."""
    path = lock_path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ConflictError(f"another loop for model {model!r} is running (pid {holder}; lock {path})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing releases the lock
