"""Queries: registered models, their versions, what an alias or a ref points at."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, computed_field

from ..errors import NotFoundError, ValidationError
from .card import METRIC_PREFIX
from .client import client, is_not_found, timestamp
from .refs import CHAMPION, LATEST, ModelRef, parse_ref


class ModelVersion(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    version: str
    aliases: list[str]
    tags: dict[str, str] = Field(description="Search and display tags (the card holds the record).")
    run_id: str | None
    source: str
    created_at: datetime
    description: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    @property
    def metrics(self) -> dict[str, float]:
        """The headline numbers of the ``metrics.*`` tags, for display."""
        out = {}
        for k, v in self.tags.items():
            if k.startswith(METRIC_PREFIX):
                try:
                    out[k[len(METRIC_PREFIX):]] = float(v)
                except ValueError:
                    continue
        return out


class RegisteredModel(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    aliases: dict[str, str] = Field(description="alias -> version")
    latest_version: str | None
    tags: dict[str, str]
    updated_at: datetime | None = None


def _version_from(mv: Any, model_aliases: dict | None = None) -> ModelVersion:
    """``model_aliases`` (alias → version of the registered model) fills in what searches omit."""
    aliases = set(mv.aliases or [])
    if model_aliases:
        aliases |= {a for a, v in model_aliases.items() if str(v) == str(mv.version)}
    return ModelVersion(
        name=mv.name, version=str(mv.version), aliases=sorted(aliases), tags=dict(mv.tags or {}),
        run_id=mv.run_id or None, source=mv.source or "", created_at=timestamp(mv.creation_timestamp),
        description=mv.description or "",
    )


def _model_from(rm: Any, latest: str | None) -> RegisteredModel:
    return RegisteredModel(name=rm.name, aliases={a: str(v) for a, v in (rm.aliases or {}).items()},
                           latest_version=latest, tags=dict(rm.tags or {}),
                           updated_at=timestamp(rm.last_updated_timestamp))


def registered(name: str, c=None) -> Any:
    """MLflow's registered model ``name``; NotFoundError naming the known ones."""
    from mlflow.exceptions import MlflowException

    c = c or client()
    try:
        return c.get_registered_model(name)
    except MlflowException as exc:
        if is_not_found(exc):
            known = ", ".join(m.name for m in list_models(c)) or "none"
            raise NotFoundError(f"model {name!r} is not registered (known: {known})") from None
        raise


def list_models(c=None) -> list[RegisteredModel]:
    c = c or client()
    out = []
    for rm in c.search_registered_models(max_results=1000):
        versions = [int(v.version) for v in (rm.latest_versions or [])]
        out.append(_model_from(rm, str(max(versions)) if versions else None))
    return sorted(out, key=lambda m: m.name)


def get_model(name: str) -> RegisteredModel:
    c = client()
    rm = registered(name, c)
    versions = list_versions(name, c)
    return _model_from(rm, versions[-1].version if versions else None)


def list_versions(name: str, c=None) -> list[ModelVersion]:
    """All versions of ``name``, oldest first."""
    c = c or client()
    aliases = registered(name, c).aliases or {}
    found = c.search_model_versions(f"name = '{name}'")  # its results carry no aliases
    return sorted((_version_from(mv, aliases) for mv in found), key=lambda v: int(v.version))


def get_version(name: str, version: str | int) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    c = client()
    registered(name, c)
    try:
        return _version_from(c.get_model_version(name, str(version)))
    except MlflowException as exc:
        if is_not_found(exc):
            have = ", ".join(v.version for v in list_versions(name, c)) or "none"
            raise NotFoundError(f"model {name} has no version {version} (versions: {have})") from None
        raise


def get_alias(name: str, alias: str) -> str | None:
    """The version ``alias`` points at, or None when the alias is not set."""
    v = (registered(name).aliases or {}).get(alias)
    return str(v) if v is not None else None


def find_versions_by_tag(name: str, key: str, value: str) -> list[ModelVersion]:
    """Versions of ``name`` (possibly none; the model need not exist) with tag ``key`` = ``value``."""
    try:
        versions = list_versions(name)
    except NotFoundError:
        return []
    return [v for v in versions if v.tags.get(key) == value]


def set_version_tags(name: str, version: str | int, tags: dict[str, str]) -> None:
    c = client()
    get_version(name, version)
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), k, str(v))


def _registry_ref(ref: str | ModelRef) -> ModelRef:
    r = parse_ref(ref, files=False) if isinstance(ref, str) else ref
    if r.kind != "registry":
        raise ValidationError(f"bad model reference {str(r)!r}: a registered model is expected here, not a file")
    return r


def version_of(ref: str | ModelRef) -> str:
    """The version number a ref names now, fetching nothing else: one registry call for an
    alias (what a watching server polls), none for ``M/5``."""
    r = _registry_ref(ref)
    if r.version is not None:
        return r.version
    if r.alias == LATEST:
        versions = list_versions(r.name)
        if not versions:
            raise NotFoundError(f"model {r.name} has no versions")
        return versions[-1].version
    aliases = registered(r.name).aliases or {}
    v = aliases.get(r.alias or CHAMPION)
    if v is None:
        known = ", ".join(sorted(aliases)) or "none"
        raise NotFoundError(f"model {r.name} has no alias {r.alias!r} (aliases: {known})")
    return str(v)


def resolve_version(ref: str | ModelRef) -> ModelVersion:
    """The version a registry ref names (``M/5``, ``M@champion``, ``M@latest``, ``M``)."""
    r = _registry_ref(ref)
    return get_version(r.name, version_of(r))
