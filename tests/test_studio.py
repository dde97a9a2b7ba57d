"""`visionloop label studio`: the project's own Label Studio, for real (from .ls-venv), then
`label push` and `label pull` with no --url and no --token."""

from __future__ import annotations

import stat

import pytest
from conftest import ROOT, run_cli
from serving_helpers import free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_label_studio_starts_and_push_finds_it_without_flags(tmp_path, monkeypatch):
    if not (ROOT / ".ls-venv" / "bin" / "label-studio").exists():
        pytest.fail("Label Studio is not installed: run `make labelstudio`")
    home = tmp_path / "home"
    env = {"VISIONLOOP_HOME": str(home), "LABEL_STUDIO_API_KEY": ""}
    monkeypatch.delenv("LABEL_STUDIO_URL", raising=False)  # run_cli passes this environment on
    port = free_port()
    try:
        r = run_cli("label", "studio", "--port", str(port), env=env, cwd=tmp_path, timeout=400)
        assert r.returncode == 0, r.stderr[-2000:] + r.stdout
        out = " ".join(r.stdout.split())
        token_file = home / "labelstudio" / "token"
        token = token_file.read_text().strip()
        assert f"started at http://127.0.0.1:{port}" in out and f"API token in {token_file}" in out
        assert token not in r.stdout + r.stderr and len(token) >= 32
        assert token not in (home / "labelstudio" / "server.log").read_text()
        for f in (token_file, home / "labelstudio" / "password"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600
        assert (home / "labelstudio" / "data").is_dir()

        again = run_cli("label", "studio", "--port", str(port), env=env, cwd=tmp_path)
        assert again.returncode == 0 and "already running" in again.stdout

        synth = run_cli("data", "synth", "--name", "shapes", "--images", "10", "--size", "64", env=env)
        assert synth.returncode == 0, synth.stderr
        push = run_cli("label", "push", "--data", "shapes", env=env, cwd=tmp_path)  # no --url, no --token
        assert push.returncode == 0, push.stderr
        assert "project 'visionloop-shapes'" in push.stdout and "created" in push.stdout
        pull = run_cli("label", "pull", "--data", "shapes", env=env, cwd=tmp_path)
        assert pull.returncode == 0, pull.stderr
        assert "no completed annotations in project 'visionloop-shapes'" in pull.stdout
    finally:
        stopped = run_cli("label", "studio", "--stop", env=env, cwd=tmp_path)
    assert stopped.returncode == 0 and "stopped Label Studio" in stopped.stdout
    assert not (home / "labelstudio" / "state.json").exists()
