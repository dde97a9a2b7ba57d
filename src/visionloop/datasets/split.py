"""Deterministic train/val/test assignment.

The split of an image is a pure function of (seed, image sha256): the same image lands in the
same split in every dataset version, so the test split never leaks into training and metrics
from different versions stay comparable.
"""

from __future__ import annotations

import hashlib
from typing import Literal

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
DEFAULT_RATIOS: tuple[float, float, float] = (0.7, 0.15, 0.15)


def hash_fraction(seed: int, sha256: str) -> float:
    """A uniform number in [0, 1) derived from (seed, image hash)."""
    digest = hashlib.sha256(f"{seed}:{sha256}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(seed: int, sha256: str, ratios: tuple[float, float, float] = DEFAULT_RATIOS) -> Split:
    total = sum(ratios)
    x = hash_fraction(seed, sha256) * total
    if x < ratios[0]:
        return "train"
    if x < ratios[0] + ratios[1]:
        return "val"
    return "test"
