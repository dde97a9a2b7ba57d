"""Runtime settings from the environment (prefix ``VISIONLOOP_``).

Defaults make a laptop work with nothing configured: everything lives under ``./.visionloop``,
MLflow tracks into SQLite there. Secrets are ``SecretStr`` so they never end up in a repr,
a log line or an error message.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VISIONLOOP_", extra="ignore")

    home: Path = Field(default=Path(".visionloop"), description="Local state: store, caches, MLflow DB.")
    store_url: str | None = Field(default=None, description="fsspec URL of the store; default <home>/store.")
    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI; default SQLite in <home>.")
    admin_token: SecretStr | None = Field(default=None, description="Bearer token for admin endpoints.")

    @property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or str(self.resolved_home / "store")

    @property
    def resolved_tracking_uri(self) -> str:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return uri or f"sqlite:///{self.resolved_home / 'mlflow.db'}"

    @property
    def cache_dir(self) -> Path:
        return self.resolved_home / "cache"


@lru_cache(maxsize=1)
def _cached() -> Settings:
    return Settings()


def get_settings(fresh: bool = False) -> Settings:
    """The process-wide settings; ``fresh=True`` re-reads the environment (tests, CLI start)."""
    if fresh:
        _cached.cache_clear()
    return _cached()
