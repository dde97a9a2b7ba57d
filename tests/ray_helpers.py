"""A real Ray cluster on 127.0.0.1 for the tests: ``ray start --head`` and nodes joined to it.

Each node is a ``ray start --block`` process in its own process group, so stopping the cluster
kills exactly its processes (never ``ray stop``, which would end every Ray on the machine).
The temp dir is short: Ray's socket paths must fit in 107 characters.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from serving_helpers import free_port

RAY = str(Path(sys.executable).with_name("ray"))


class RayCluster:
    def __init__(self, log_dir: Path, nodes: int = 2, cpus_per_node: int = 1, env: dict | None = None):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.temp = tempfile.mkdtemp(prefix="vlray-", dir="/tmp")
        # Ray 2.60 clusters require its token (~/.ray/auth_token, made by the head); clients say so too
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", **(env or {})}
        self.env.pop("RAY_ADDRESS", None)
        self.procs: list[subprocess.Popen] = []
        self.logs = [log_dir / f"ray-node{i}.log" for i in range(nodes)]
        common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", str(cpus_per_node), "--num-gpus", "0",
                  "--disable-usage-stats"]
        try:
            self._start([RAY, "start", "--head", "--port", str(self.port), "--include-dashboard", "false",
                         "--temp-dir", self.temp, *common], self.logs[0])
            self.wait_nodes(1)
            for i in range(1, nodes):
                self._start([RAY, "start", "--address", self.address, *common], self.logs[i])
            self.wait_nodes(nodes)
        except BaseException:
            self.stop()
            raise

    def client_env(self) -> dict[str, str]:
        """What a client (the visionloop CLI) needs to submit to this cluster."""
        return {"RAY_ADDRESS": self.address, "RAY_AUTH_MODE": "token"}

    def _start(self, cmd: list[str], log: Path) -> None:
        with open(log, "wb") as fh:
            self.procs.append(subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                               start_new_session=True))

    def alive_nodes(self) -> int:
        code = ("import ray; ray.init(address='%s', logging_level='ERROR');"
                "print(sum(1 for n in ray.nodes() if n['Alive']))" % self.address)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=self.env, timeout=60)
        return int(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else 0

    def wait_nodes(self, n: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                raise RuntimeError("a Ray node exited:\n" + "\n".join(p.read_text()[-1500:] for p in self.logs
                                                                       if p.exists()))
            if self.alive_nodes() >= n:
                return
            time.sleep(1)
        raise TimeoutError(f"the Ray cluster did not reach {n} nodes in {timeout:.0f} s")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
        shutil.rmtree(self.temp, ignore_errors=True)
