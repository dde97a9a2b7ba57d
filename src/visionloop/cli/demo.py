"""`visionloop demo`."""

from __future__ import annotations


def demo() -> None:
    """Not implemented yet."""
    raise NotImplementedError
