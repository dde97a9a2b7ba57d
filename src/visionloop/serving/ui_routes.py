"""The browser page: ``GET /ui`` and its static files, shipped in the package (``serving/ui/``).

Plain HTML, CSS and one ES module: nothing is built at install time and nothing is fetched
from a CDN, so the page works offline. Every page response carries a Content-Security-Policy
that allows only this origin's scripts and styles (no inline script, no ``eval``); images,
camera frames and canvases may be ``data:``/``blob:`` URLs because the page makes them itself.
Only files that exist under ``serving/ui/`` are served: the path is matched against a listing
made at import, never joined onto the filesystem.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from .errors import ApiError

UI_DIR = Path(__file__).with_name("ui")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob: mediastream:; connect-src 'self'; form-action 'none'; base-uri 'none'; "
       "frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}  # revalidate: a pip upgrade changes the page under the same URL
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".html": "text/html; charset=utf-8", ".svg": "image/svg+xml"}


def _listing() -> dict[str, Path]:
    return {p.relative_to(UI_DIR).as_posix(): p for p in UI_DIR.rglob("*") if p.is_file()}


FILES = _listing()

router = APIRouter(include_in_schema=False)


def _file(rel: str) -> Response:
    path = FILES.get(rel)
    if path is None:
        raise ApiError(404, "not_found", f"no such page file: /ui/{rel}")
    kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return Response(path.read_bytes(), media_type=kind, headers=HEADERS)


@router.get("/")
async def root():
    return RedirectResponse("/ui", status_code=307)


@router.get("/ui")
@router.get("/ui/")
async def page():
    """The page itself (its assets use absolute /ui/... URLs, so both spellings work)."""
    return _file("index.html")


@router.get("/ui/{rel:path}")
async def asset(rel: str):
    return _file(rel)


def page_bytes() -> int:
    """What the page weighs uncompressed: every file it ships (the examples included)."""
    return sum(p.stat().st_size for p in FILES.values())
