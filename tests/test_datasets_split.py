"""The split is a pure function of (seed, image hash), in every version."""

from __future__ import annotations

import hashlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from visionloop.datasets.catalog import Catalog, DraftImage
from visionloop.datasets.split import assign_split
from visionloop.store import Store

shas = st.binary(min_size=1, max_size=16).map(lambda b: hashlib.sha256(b).hexdigest())


@settings(database=None)  # no .hypothesis/ folder in the working tree
@given(seed=st.integers(0, 2**31), sha=shas)
def test_assign_split_is_pure(seed, sha):
    assert assign_split(seed, sha) == assign_split(seed, sha)
    assert assign_split(seed, sha) in ("train", "val", "test")


def test_ratios_are_respected_on_many_images():
    rng = random.Random(0)
    hashes = [hashlib.sha256(rng.randbytes(8)).hexdigest() for _ in range(20000)]
    counts = {s: 0 for s in ("train", "val", "test")}
    for h in hashes:
        counts[assign_split(0, h)] += 1
    assert abs(counts["train"] / 20000 - 0.70) < 0.02
    assert abs(counts["val"] / 20000 - 0.15) < 0.02
    assert abs(counts["test"] / 20000 - 0.15) < 0.02
    other = sum(assign_split(1, h) != assign_split(0, h) for h in hashes)
    assert other > 5000  # the seed matters


@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.lists(st.binary(min_size=1, max_size=8), min_size=2, max_size=12, unique=True),
       seed=st.integers(0, 1000), cut=st.integers(1, 11))
def test_split_depends_on_nothing_but_seed_and_hash(tmp_path_factory, data, seed, cut):
    """Whatever else is in a version, and in whatever order, an image gets the same split."""
    from visionloop.datasets.manifest import SplitPolicy

    store = Store(str(tmp_path_factory.mktemp("s")))
    drafts = [DraftImage(store.put_blob(d), "png", 8, 8, source=f"{i}.png") for i, d in enumerate(data)]
    cat = Catalog(store)
    policy = SplitPolicy(seed=seed)
    whole = cat.commit("all", ["x"], drafts, split_policy=policy).manifest
    part = cat.commit("part", ["x"], list(reversed(drafts[: cut % len(drafts) + 1])), split_policy=policy).manifest
    grown = cat.commit("part", ["x"], drafts, split_policy=policy, add_to_parent=True).manifest
    split_of = {i.sha256: i.split for i in whole.images}
    assert all(split_of[i.sha256] == assign_split(seed, i.sha256) for i in whole.images)
    assert all(split_of[i.sha256] == i.split for i in part.images)
    assert {i.sha256: i.split for i in grown.images} == split_of
