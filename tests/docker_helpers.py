"""Container tests' helpers: docker/build.py loaded by path, one offline build per image and
process, and a running container with its published port on 127.0.0.1.

Builds are real: a debootstrap base (kept in the daemon), wheels from the host's pip (kept in
``~/.cache/visionloop/wheelhouse``), ``docker build --network none``.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from serving_helpers import free_port

ROOT = Path(__file__).resolve().parents[1]
WHEELS = Path(os.environ.get("VISIONLOOP_WHEEL_CACHE", Path.home() / ".cache" / "visionloop" / "wheelhouse"))


def _load_build():
    spec = importlib.util.spec_from_file_location("visionloop_docker_build", ROOT / "docker" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


build = _load_build()


def require_docker() -> None:
    """The container tests need a daemon; `make test` and `.ci/run` start one (scripts/docker.sh)."""
    if not build.daemon_running():
        pytest.fail("no Docker daemon answers: run `bash scripts/docker.sh start` as root (make test does)")


@functools.lru_cache(maxsize=None)
def offline_image(kind: str):
    """docker/<kind>.Dockerfile built with no network on the local base; once per test process."""
    require_docker()
    return build.build_offline(kind, f"visionloop-{kind}:test", WHEELS / kind, log=print)


def docker(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc


class Container:
    """``docker run -d`` of an image with its port 8000 published on 127.0.0.1 only."""

    def __init__(self, image: str, *args: str, env: dict[str, str] | None = None, volumes: tuple[str, ...] = (),
                 read_only: bool = True, port: int = 8000):
        self.name = f"vl-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = ["run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:{port}"]
        if read_only:
            cmd += ["--read-only", "--tmpfs", "/tmp"]
        for key, value in (env or {}).items():
            cmd += ["-e", f"{key}={value}"]
        for volume in volumes:
            cmd += ["-v", volume]
        self.started = time.monotonic()
        docker(*cmd, image, *args)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def __enter__(self) -> Container:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def wait_ready(self, timeout: float = 90) -> float:
        """Seconds from ``docker run`` until ``/ready`` answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.client.get("/ready", timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            except httpx.TransportError:
                pass
            if not self.inspect()["State"]["Running"]:
                raise AssertionError(f"container exited {self.inspect()['State']['ExitCode']}:\n{self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"/ready not 200 after {timeout}s:\n{self.logs()}")

    def wait_health(self, status: str = "healthy", timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        current = ""
        while time.monotonic() < deadline:
            current = self.inspect()["State"].get("Health", {}).get("Status", "")
            if current == status:
                return current
            time.sleep(0.5)
        raise AssertionError(f"health is {current!r}, not {status!r}, after {timeout}s:\n{self.logs()}")

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]

    def exec(self, *cmd: str) -> subprocess.CompletedProcess:
        return docker("exec", self.name, *cmd, check=False)

    def logs(self) -> str:
        proc = docker("logs", self.name, check=False)
        return (proc.stdout + proc.stderr)[-4000:]

    def stop(self, timeout: int = 15) -> int:
        docker("stop", "-t", str(timeout), self.name, timeout=timeout + 30)
        return int(self.inspect()["State"]["ExitCode"])

    def remove(self) -> None:
        self.client.close()
        docker("rm", "-f", "-v", self.name, check=False)
