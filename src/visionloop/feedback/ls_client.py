"""Label Studio's REST API: the few calls visionloop makes (plain httpx; LS 1.x legacy tokens).

Every failure is a :class:`VisionloopError` with one line; the token travels only in the
``Authorization`` header and is never printed, logged or put in an error message.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import httpx
from pydantic import SecretStr

from ..errors import ValidationError, VisionloopError

TOKEN_ENV = "LABEL_STUDIO_API_KEY"


def config_labels(label_config: str) -> list[str]:
    """Label values declared in a project's config (to tell the user what is missing)."""
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError:
        return []
    return [el.get("value", "") for el in root.iter() if el.tag in ("Label", "Choice")]



# -- the client -----------------------------------------------------------------------------
class LabelStudio:
    """A few REST calls; every failure is a VisionloopError with one line and no token."""

    def __init__(self, url: str, token: SecretStr, timeout: float = 60.0):
        if not url.startswith(("http://", "https://")):
            raise ValidationError(f"Label Studio URL must start with http:// or https:// (got {url!r})")
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, timeout=timeout,
                                    headers={"Authorization": f"Token {token.get_secret_value()}"})

    def __enter__(self) -> LabelStudio:
        return self

    def __exit__(self, *exc) -> None:
        self._client.close()

    def _call(self, method: str, path: str, **kw) -> httpx.Response:
        try:
            r = self._client.request(method, path, **kw)
        except httpx.TimeoutException:
            raise VisionloopError(f"Label Studio at {self.url} did not answer in time") from None
        except httpx.HTTPError as exc:
            raise VisionloopError(f"cannot reach Label Studio at {self.url} ({type(exc).__name__})") from None
        if r.status_code in (401, 403):
            raise VisionloopError(
                f"Label Studio at {self.url} refused the token (HTTP {r.status_code}); check {TOKEN_ENV} or --token "
                "(a legacy token: start Label Studio with --enable-legacy-api-token)")
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail") or r.json().get("validation_errors") or ""
            except (ValueError, AttributeError):
                detail = ""
            raise VisionloopError(f"Label Studio answered HTTP {r.status_code} to {method} {path}"
                                  + (f": {str(detail)[:200]}" if detail else ""))
        return r

    def _json(self, method: str, path: str, **kw):
        r = self._call(method, path, **kw)
        try:
            return r.json()
        except ValueError:
            raise VisionloopError(f"{self.url} did not answer {method} {path} with JSON: is it Label Studio?") from None

    def find_project(self, title: str) -> dict | None:
        page = self._json("GET", "/api/projects", params={"title": title, "page_size": 100})
        items = page.get("results", []) if isinstance(page, dict) else page
        return next((p for p in items if p.get("title") == title), None)

    def ensure_project(self, title: str, label_config: str, classes: list[str]) -> tuple[dict, bool]:
        """The project named ``title`` (its config must offer every class), or a new one with ``label_config``."""
        if len(title) < 3:
            raise ValidationError(f"Label Studio project titles need at least 3 characters (got {title!r})")
        found = self.find_project(title)
        if found is not None:
            missing = [c for c in classes if c not in config_labels(found.get("label_config", ""))]
            if missing:
                raise ValidationError(f"project {title!r} has no labels for classes {', '.join(missing)}")
            return found, False
        return self._json("POST", "/api/projects", json={"title": title, "label_config": label_config}), True

    def tasks(self, project_id: int) -> list[dict]:
        out: list[dict] = []
        page = 1
        while True:
            body = self._json("GET", "/api/tasks", params={"project": project_id, "page": page, "page_size": 100})
            batch = body.get("tasks", [])
            out.extend(batch)
            if not batch or len(out) >= int(body.get("total", 0)):
                return out
            page += 1

    def import_tasks(self, project_id: int, tasks: list[dict]) -> int:
        body = self._json("POST", f"/api/projects/{project_id}/import", json=tasks)
        return int(body.get("task_count", len(tasks)))

    def export_annotated(self, project_id: int) -> list[dict]:
        body = self._json("GET", f"/api/projects/{project_id}/export", params={"exportType": "JSON"})
        if not isinstance(body, list):
            raise VisionloopError(f"unexpected export from Label Studio project {project_id}")
        return body
