"""The ``test`` reference of ``monitor``: a version's predictions on its own dataset's test split.

Made by the served runtime (the same decode, letterbox and NMS as the server), so the reference
differs from live traffic only by what the images are. At most ``limit`` images (the first by
hash, so the same every run): a reference needs a few hundred records, not the whole split.
"""

from __future__ import annotations

import time

from ..errors import NotFoundError
from .predlog import PredictionRecord, make_record, mean_brightness

DEFAULT_LIMIT = 500


def test_split_predictions(model: str, version: str, *, limit: int = DEFAULT_LIMIT,
                           store_url: str | None = None) -> list[PredictionRecord]:
    """Run ``model/version`` (a registry version) on its dataset's test split, one record per image."""
    from .. import registry
    from ..datasets.catalog import Catalog
    from ..serving.preprocess import decode_image
    from ..serving.runtime import OnnxModel, PredictParams
    from ..store import open_store

    if version.startswith("file:"):
        raise NotFoundError(f"{model} version {version} is a file, not a registry version: it has no dataset "
                            "(use --reference first-window)")
    resolved = registry.resolve_model(f"{model}/{version}")
    if not resolved.card.dataset:
        raise NotFoundError(f"{model}/{version} records no dataset (use --reference first-window)")
    store = open_store(store_url)
    manifest = Catalog(store).load(resolved.card.dataset)
    images = sorted(manifest.by_split("test"), key=lambda r: r.sha256)[:limit]
    runtime = OnnxModel(resolved.onnx_path)
    params, out, ts = PredictParams(), [], time.time()
    for image in images:
        decoded = decode_image(store.get_blob(image.sha256))
        raw = runtime.predict(decoded, params)
        out.append(make_record(model, version, runtime.info.task, raw, runtime.info.classes or resolved.classes,
                               mean_brightness(decoded.rgb), ts=ts))
    return out
