"""The FastAPI app: ``create_app(ServeConfig)``.

Handlers stay on the event loop only for cheap work (reading the body, building JSON);
decode + inference + drawing run in the bounded :class:`InferencePool`, so ``/health``
answers while models work and a flood gets 503 + Retry-After instead of an ever-growing queue.
A request is :mod:`.pipeline`'s decode → run_model → encode; the routes are in
:mod:`.predict_routes`, :mod:`.ops_routes` and :mod:`.ui_routes` (the page at /ui); every
error leaves as ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from . import ops_routes, predict_routes, ui_routes
from .config import ServeConfig
from .errors import install_handlers
from .pipeline import ServerState, build_state, close_state


def _load(st: ServerState) -> None:
    st.manager.load_all()
    st.manager.start_watch(st.config.watch)


@asynccontextmanager
async def _lifespan(app: FastAPI):
    """Models load in a background thread, so the port answers (``/health``) at once."""
    st: ServerState = app.state.vl
    threading.Thread(target=_load, args=(st,), name="vl-load", daemon=True).start()
    yield
    close_state(st)


def create_app(config: ServeConfig, state: ServerState | None = None) -> FastAPI:
    """The app; models load at startup (``/ready`` says when)."""
    app = FastAPI(title="visionloop", version=__version__, lifespan=_lifespan,
                  description="ONNX Runtime inference with hot swap. Errors: `{\"error\": {\"code\", \"message\"}}`.")
    app.state.vl = state or build_state(config)
    install_handlers(app)
    app.include_router(ops_routes.router)
    app.include_router(predict_routes.router)
    app.include_router(ui_routes.router)
    return app
