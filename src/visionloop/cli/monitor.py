"""`visionloop monitor`."""

from __future__ import annotations


def monitor() -> None:
    """Not implemented yet."""
    raise NotImplementedError
