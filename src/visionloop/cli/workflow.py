"""`visionloop report` and `visionloop init`."""

from __future__ import annotations


def report() -> None:
    """Not implemented yet."""
    raise NotImplementedError


def init() -> None:
    """Not implemented yet."""
    raise NotImplementedError
