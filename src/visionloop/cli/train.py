"""`visionloop train`."""

from __future__ import annotations


def train() -> None:
    """Not implemented yet."""
    raise NotImplementedError
