"""The project's own Label Studio (``visionloop label studio``), for closing the loop by hand.

It runs from ``.ls-venv`` (installed by ``scripts/labelstudio.sh install`` when missing) on
127.0.0.1, with its data under ``VISIONLOOP_HOME/labelstudio/data``. On the first start a user,
a password and an API token are made at random and kept in files only the owner can read
(0600) under ``VISIONLOOP_HOME/labelstudio/``; the secrets reach Label Studio through its
environment, never a command line (``ps`` would show it) nor a log. ``state.json`` says where
it runs, so ``label push/pull`` and ``loop`` find the URL and token with no flags.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from pydantic import BaseModel, SecretStr

from ..errors import NotFoundError, VisionloopError
from ..files import atomic_write_text
from ..settings import Settings, get_settings

USER = "admin@visionloop.local"
SCRIPT = Path("scripts") / "labelstudio.sh"


class StudioPaths(BaseModel):
    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def token_file(self) -> Path:
        return self.root / "token"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def log(self) -> Path:
        return self.root / "server.log"


class StudioState(BaseModel):
    url: str
    pid: int
    user: str = USER


class StudioInfo(BaseModel):
    url: str
    user: str
    token_file: Path
    password_file: Path
    log: Path
    started: bool  # False: it was already running


def paths(settings: Settings | None = None) -> StudioPaths:
    return StudioPaths(root=(settings or get_settings()).resolved_home / "labelstudio")


def _secret_file(path: Path, nbytes: int) -> SecretStr:
    """The secret in ``path``, made on first use; the file is 0600 from its first byte."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(nbytes) + "\n")
    return SecretStr(path.read_text().strip())


def saved_token(settings: Settings | None = None) -> SecretStr | None:
    f = paths(settings).token_file
    return SecretStr(f.read_text().strip()) if f.is_file() else None


def saved_state(settings: Settings | None = None) -> StudioState | None:
    f = paths(settings).state_file
    return StudioState.model_validate_json(f.read_text()) if f.is_file() else None


def saved_url(settings: Settings | None = None) -> str | None:
    st = saved_state(settings)
    return st.url if st else None


def _answers(url: str, token: SecretStr) -> bool:
    try:
        r = httpx.get(f"{url}/api/projects", headers={"Authorization": f"Token {token.get_secret_value()}"}, timeout=5)
    except httpx.HTTPError:
        return False
    return r.status_code == 200


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def find_script(root: Path | None = None) -> Path:
    """scripts/labelstudio.sh of this checkout (an editable install) or of the current directory."""
    for base in ([root] if root else []) + [Path(__file__).resolve().parents[3], Path.cwd()]:
        if (base / SCRIPT).is_file():
            return base / SCRIPT
    raise NotFoundError(f"{SCRIPT} not found: run `visionloop label studio` from the visionloop checkout")


def start(port: int = 8080, *, settings: Settings | None = None, script: Path | None = None, timeout: float = 300,
          say: Callable[[str], None] = lambda line: None) -> StudioInfo:
    """Start it in the background (installed first when missing) and wait until its API answers."""
    p = paths(settings)
    token, password = _secret_file(p.token_file, 20), _secret_file(p.password_file, 12)
    info = dict(user=USER, token_file=p.token_file, password_file=p.password_file, log=p.log)
    st = saved_state(settings)
    if st and _alive(st.pid) and _answers(st.url, token):
        return StudioInfo(url=st.url, started=False, **info)
    script = script or find_script()
    if not (script.parents[1] / ".ls-venv" / "bin" / "label-studio").exists():
        say("installing Label Studio into .ls-venv (a few minutes, once)")
        subprocess.run(["bash", str(script), "install"], check=True)
    p.data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LABEL_STUDIO_USERNAME": USER, "LABEL_STUDIO_PASSWORD": password.get_secret_value(),
           "LABEL_STUDIO_USER_TOKEN": token.get_secret_value()}
    with open(p.log, "ab") as log:
        proc = subprocess.Popen(["bash", str(script), "serve", str(port), str(p.data)], env=env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    atomic_write_text(p.state_file, StudioState(url=url, pid=proc.pid).model_dump_json())
    deadline = time.monotonic() + timeout
    while not _answers(url, token):
        if proc.poll() is not None:
            raise VisionloopError(f"Label Studio exited with {proc.returncode}; see {p.log}")
        if time.monotonic() > deadline:
            raise VisionloopError(f"Label Studio did not answer within {timeout:.0f} s; see {p.log}")
        time.sleep(1)
    return StudioInfo(url=url, started=True, **info)


def stop(settings: Settings | None = None, timeout: float = 20) -> bool:
    """Stop the Label Studio that :func:`start` started (its whole process group); False if none ran."""
    p, st = paths(settings), saved_state(settings)
    if st is None or not _alive(st.pid):
        p.state_file.unlink(missing_ok=True)
        return False
    os.killpg(st.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(st.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(st.pid):
        os.killpg(st.pid, signal.SIGKILL)
    p.state_file.unlink(missing_ok=True)
    return True
