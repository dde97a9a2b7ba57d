"""Helpers for the serving tests: a real `visionloop serve` process, model variants, parity matching."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m visionloop serve ...`` on a free port; ``url``, ``client``, ``stop()``."""

    def __init__(self, models: list[str], tmp: Path, *args: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}.log"
        cmd = [sys.executable, "-m", "visionloop", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        for m in models:
            cmd += ["--model", m]
        full_env = {**os.environ, "VISIONLOOP_ADMIN_TOKEN": TOKEN, **(env or {})}
        self._fh = open(self.log, "wb")
        self.proc = subprocess.Popen([*cmd, *args], stdout=self._fh, stderr=subprocess.STDOUT, env=full_env)
        self.client = httpx.Client(base_url=self.url, timeout=60)
        try:
            self.wait("/health")
            self.wait("/ready")
        except BaseException:
            self.stop()  # never leave a server behind when start-up fails
            raise

    def wait(self, path: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.client.get(path, timeout=2).status_code == 200:
                    return
                failed = [m for m in self.client.get("/v1/models", timeout=2).json()["models"] if m["state"] == "failed"]
                if failed:
                    raise RuntimeError(f"model {failed[0]['name']} failed to load: {failed[0]['last_error']}")
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"{path} not 200 after {timeout}s:\n{self.log.read_text()[-3000:]}")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels``."""
        total = 0.0
        for line in self.client.get("/metrics").text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._fh.close()


def jpeg_bytes(arr: np.ndarray, quality: int = 95, **save) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality, **save)
    return buf.getvalue()


def second_version(onnx_path: Path, dest: Path) -> Path:
    """The same network with different metadata: another file hash, so another served version."""
    import onnx

    model = onnx.load(str(onnx_path))
    model.metadata_props.append(onnx.StringStringEntryProto(key="visionloop_test", value="v2"))
    onnx.save(model, str(dest))
    return dest


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of one box ``a`` (4,) against boxes ``b`` (n, 4)."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter + 1e-9)


def as_rows(detections: list[dict]) -> np.ndarray:
    return np.array([[d["box"]["x1"], d["box"]["y1"], d["box"]["x2"], d["box"]["y2"], d["confidence"], d["class_id"]]
                     for d in detections], dtype=np.float64).reshape(-1, 6)


def det_rows(dets) -> np.ndarray:
    """``predictions.Detections`` → ``(n, 6)`` float64 rows x1, y1, x2, y2, confidence, class_id."""
    return np.column_stack([dets.xyxy, dets.conf, dets.cls]).astype(np.float64).reshape(-1, 6)


def assert_parity(server: np.ndarray, reference: np.ndarray, min_iou: float = 0.99, conf_tol: float = 0.01) -> None:
    """Same count; every reference box has a same-class server box with IoU >= min_iou and close confidence."""
    assert len(reference) > 0, "reference produced no detections: the comparison would be empty"
    assert len(server) == len(reference), f"{len(server)} detections vs ultralytics {len(reference)}"
    used = np.zeros(len(server), dtype=bool)
    for row in reference[np.argsort(-reference[:, 4])]:
        cand = np.where((server[:, 5] == row[5]) & ~used)[0]
        assert len(cand), f"no server box of class {int(row[5])} left for {row}"
        ious = iou(row[:4], server[cand, :4])
        conf_ok = np.abs(server[cand, 4] - row[4]) <= conf_tol
        score = np.where(conf_ok, ious, -1)
        best = int(np.argmax(score))
        assert score[best] >= min_iou, f"best match IoU {ious[best]:.4f} / conf {server[cand[best], 4]} for {row}"
        used[cand[best]] = True


def constant_model(path: Path, output: np.ndarray, meta: dict[str, str], imgsz: int = 64,
                   channel: int | None = None) -> Path:
    """A real ONNX file whose output is ``output`` plus 0 * mean(input) (so the input is used).

    ``channel`` first gathers that input channel: one past the 3 channels loads fine and
    raises inside onnxruntime at run time (a model whose warm-up fails)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(output.astype(np.float32), "const"),
             numpy_helper.from_array(np.array(0, np.float32), "zero")]
    nodes = [helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
             helper.make_node("Mul", ["m", "zero"], ["z"]),
             helper.make_node("Add", ["const", "z"], ["output0"])]
    if channel is not None:
        inits.append(numpy_helper.from_array(np.array(channel, np.int64), "idx"))
        nodes = [helper.make_node("Gather", ["images", "idx"], ["g"], axis=1),
                 helper.make_node("ReduceMean", ["g"], ["m"], keepdims=0), *nodes[1:]]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, imgsz, imgsz])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(output.shape))],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    for k, v in meta.items():
        model.metadata_props.append(onnx.StringStringEntryProto(key=k, value=v))
    onnx.save(model, str(path))
    return path
