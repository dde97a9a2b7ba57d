"""The model registry on MLflow: register ONNX versions with their card, move aliases, resolve refs.

One registered model per ``--name``. A version holds ``model/model.onnx`` and
``model/card.json`` (:class:`ModelCard`) in its run; its tags are derived from the card for
search and display. Aliases: ``champion`` (what servers serve by default) and ``challenger``;
each alias has one history stack (promote pushes, rollback pops).

Modules: ``refs`` (the reference grammar, no MLflow), ``client`` (tracking URI, SQLite
bootstrap), ``versions`` (queries), ``aliases`` (aliases and their history), ``card``,
``artifacts`` (register, download, resolve). mlflow is imported inside functions: importing
this package stays cheap.
"""

from __future__ import annotations

from .aliases import HISTORY_PREFIX, AliasChange, alias_history, delete_alias, lineage, rollback_alias, set_alias
from .artifacts import (
    ONNX_ARTIFACT_DIR,
    ONNX_FILE,
    ResolvedModel,
    VersionDetail,
    get_card,
    register_version,
    resolve_model,
)
from .card import (
    CARD_FILE,
    METRIC_PREFIX,
    TAG_BASE_MODEL,
    TAG_CACHE_KEY,
    TAG_DATASET,
    TAG_EPOCHS,
    TAG_GIT_COMMIT,
    TAG_IMGSZ,
    TAG_MANIFEST_HASH,
    TAG_ONNX_SHA256,
    TAG_PRECISION,
    TAG_QUANTIZED_FROM,
    TAG_TASK,
    ModelCard,
    ParitySummary,
)
from .client import TrackingUnavailableError, client, experiment_id, tracking_uri
from .refs import CHALLENGER, CHAMPION, LATEST, ModelRef, check_alias, check_name, parse_ref
from .versions import (
    ModelVersion,
    RegisteredModel,
    find_versions_by_tag,
    get_alias,
    get_model,
    get_version,
    list_models,
    list_versions,
    resolve_version,
    set_version_tags,
    version_of,
)

__all__ = [
    "CARD_FILE", "CHALLENGER", "CHAMPION", "HISTORY_PREFIX", "LATEST", "METRIC_PREFIX", "ONNX_ARTIFACT_DIR",
    "ONNX_FILE", "TAG_BASE_MODEL", "TAG_CACHE_KEY", "TAG_DATASET", "TAG_EPOCHS", "TAG_GIT_COMMIT", "TAG_IMGSZ",
    "TAG_MANIFEST_HASH", "TAG_ONNX_SHA256", "TAG_PRECISION", "TAG_QUANTIZED_FROM", "TAG_TASK", "AliasChange", "ModelCard", "ModelRef", "ModelVersion",
    "ParitySummary", "RegisteredModel", "ResolvedModel", "TrackingUnavailableError", "VersionDetail", "alias_history",
    "check_alias", "check_name", "client", "delete_alias", "experiment_id", "find_versions_by_tag", "get_alias",
    "get_card", "get_model", "get_version",
    "lineage", "list_models", "list_versions", "parse_ref", "register_version", "resolve_model",
    "resolve_version", "rollback_alias", "set_alias", "set_version_tags", "tracking_uri", "version_of",
]
