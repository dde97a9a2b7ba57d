"""`visionloop loop`."""

from __future__ import annotations


def loop() -> None:
    """Not implemented yet."""
    raise NotImplementedError
