"""Runtime settings from the environment (prefix ``VISIONLOOP_``).

Defaults make a laptop work with nothing configured: everything lives under ``./.visionloop``,
MLflow tracks into SQLite there. Secrets are ``SecretStr`` so they never end up in a repr,
a log line or an error message.

Code that needs other settings than the environment's (the demo's own home) passes a
:class:`Settings` with :func:`use_settings` and an explicit ``env`` to child processes, so the
process environment is never edited.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
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

    @classmethod
    def isolated(cls, home: Path) -> Settings:
        """Everything under ``home``, whatever the environment says about store and tracking."""
        home = home.expanduser().resolve()
        return cls(home=home, store_url=str(home / "store"), tracking_uri=f"sqlite:///{home / 'mlflow.db'}")

    def child_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """``base`` (default: this process's environment) with these locations, for a subprocess."""
        env = dict(os.environ if base is None else base)
        env.pop("MLFLOW_TRACKING_URI", None)  # MLflow and ultralytics read it directly
        env.update(VISIONLOOP_HOME=str(self.resolved_home), VISIONLOOP_STORE_URL=self.resolved_store_url,
                   VISIONLOOP_TRACKING_URI=self.resolved_tracking_uri)
        if self.admin_token is not None:
            env["VISIONLOOP_ADMIN_TOKEN"] = self.admin_token.get_secret_value()
        return env


@lru_cache(maxsize=1)
def _cached() -> Settings:
    return Settings()


_overrides: list[Settings] = []  # a plain stack, not a ContextVar: worker threads must see it too


def get_settings(fresh: bool = False) -> Settings:
    """The settings in force: the innermost :func:`use_settings`, else the environment's
    (read once; ``fresh=True`` re-reads it: tests, CLI start)."""
    if fresh:
        _cached.cache_clear()
    return _overrides[-1] if _overrides else _cached()


@contextmanager
def use_settings(settings: Settings) -> Iterator[Settings]:
    """Every :func:`get_settings` in this process returns ``settings`` inside the block."""
    _overrides.append(settings)
    try:
        yield settings
    finally:
        _overrides.pop()
