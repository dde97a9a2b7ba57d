"""`visionloop serve`."""

from __future__ import annotations


def serve() -> None:
    """Not implemented yet."""
    raise NotImplementedError
