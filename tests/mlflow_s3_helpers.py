"""Real backing services on 127.0.0.1 for the scale-out tests: a moto S3 server and ``mlflow server``.

Both run as their own processes (started and stopped by the test), so the code under test
talks to them over the network exactly as it would to MinIO/AWS and a shared tracking server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from serving_helpers import free_port

S3_REGION = "us-east-1"


class MotoServer:
    """``python -m moto.server`` on a free loopback port with one fresh bucket (``.bucket``).

    ``.env()``: the variables every S3 client here needs (boto3/s3fs via AWS_ENDPOINT_URL,
    MLflow's S3 artifact repository via MLFLOW_S3_ENDPOINT_URL)."""

    def __init__(self, tmp: Path | None = None, bucket: str | None = None, timeout: float = 30):
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.bucket = bucket or f"vl-{uuid.uuid4().hex[:12]}"
        log = open(tmp / "moto.log", "wb") if tmp is not None else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=log, stderr=subprocess.STDOUT)
        if tmp is not None:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("moto server exited at start")
            try:
                httpx.get(self.endpoint, timeout=0.5)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        else:
            self.stop()
            raise RuntimeError("moto server did not start")
        self.client().create_bucket(Bucket=self.bucket)

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "MLFLOW_S3_ENDPOINT_URL": self.endpoint,
                "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": S3_REGION}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=S3_REGION,
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def keys(self, prefix: str = "", bucket: str | None = None) -> list[str]:
        return s3_keys(self.client(), bucket or self.bucket, prefix)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def s3_keys(client, bucket: str, prefix: str = "") -> list[str]:
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        out += [o["Key"] for o in page.get("Contents", [])]
    return sorted(out)


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 (SQLite behind it), stoppable and restartable on the same port.

    ``artifacts``: where run artifacts go (default a folder under ``root``; ``s3://B/P`` with
    ``env`` holding the S3 variables). ``proxied`` (default): clients upload through the server
    (``--artifacts-destination``, ``mlflow-artifacts:/`` URIs, no S3 credentials on the client);
    otherwise the server only hands out ``s3://`` locations (``--default-artifact-root
    --no-serve-artifacts``) and clients write to S3 themselves."""

    def __init__(self, root: Path, artifacts: str | None = None, env: dict[str, str] | None = None,
                 proxied: bool = True):
        self.root, self.port = root, free_port()
        self.artifacts = artifacts or str(root / "artifacts")
        self.env, self.proxied = env or {}, proxied
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "mlflow-server.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> MlflowServer:
        exe = Path(sys.executable).parent / "mlflow"
        where = (["--artifacts-destination", self.artifacts, "--serve-artifacts"] if self.proxied
                 else ["--default-artifact-root", self.artifacts, "--no-serve-artifacts"])
        cmd = [str(exe), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}", *where,
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
                                     env={**os.environ, **self.env})
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            try:
                if httpx.get(f"{self.uri}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("mlflow server did not start")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # its own session: the server and its uvicorn worker
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
