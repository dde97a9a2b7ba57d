"""The serving image, built for real with no network (docker/build.py) and run hardened: a
read-only root filesystem, a non-root user, the model mounted read-only, the port on 127.0.0.1.
Its answers must equal the host server's on the same model and images.

Also: docker/compose.yml validates with docker compose.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from docker_helpers import ROOT, Container, docker, offline_image
from serving_helpers import TOKEN, Server, as_rows, assert_parity, jpeg_bytes

pytestmark = pytest.mark.slow

CONF = 0.001  # a model trained for a few epochs scores every box under 0.01
ADDED_LIMIT = 370e6  # what serve.Dockerfile may add above the offline base (issue 15)


@pytest.fixture(scope="module")
def serve_image():
    return offline_image("serve")


@pytest.fixture
def model_dir(tiny_model, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_model.onnx, models / "shapes.onnx")
    models.chmod(0o755)
    (models / "shapes.onnx").chmod(0o644)  # readable by the image's user 10001
    return models


def test_serve_image_is_torch_free_and_small(serve_image):
    assert serve_image.added_bytes <= ADDED_LIMIT, f"serve image adds {serve_image.added_bytes / 1e6:.0f} MB"
    listed = docker("run", "--rm", "--entrypoint", "pip", serve_image.tag, "list", "--format", "json").stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"visionloop", "onnxruntime", "fastapi", "uvicorn", "mlflow-skinny"} <= names
    assert not names & {"torch", "torchvision", "ultralytics", "mlflow"}, names


def test_serve_container_answers_like_the_host(serve_image, tiny_model, model_dir, tmp_path):
    env = {"VISIONLOOP_MODEL": "shapes=/models/shapes.onnx", "VISIONLOOP_ADMIN_TOKEN": TOKEN}
    with Container(serve_image.tag, env=env, volumes=(f"{model_dir}:/models:ro",)) as box:
        box.wait_ready()
        info = box.inspect()
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        bindings = info["HostConfig"]["PortBindings"]["8000/tcp"]
        assert [b["HostIp"] for b in bindings] == ["127.0.0.1"]
        assert box.exec("id", "-u").stdout.strip() == "10001"
        assert box.exec("sh", "-c", "echo x > /opt/visionloop/x").returncode != 0  # read-only root
        assert box.exec("sh", "-c", "echo x > /models/x").returncode != 0  # read-only model mount
        assert box.exec("sh", "-c", "echo x > /tmp/x").returncode == 0  # the writable temp
        models = box.client.get("/v1/models").json()["models"]
        assert [(m["name"], m["state"], m["task"]) for m in models] == [("shapes", "ready", "detect")]

        host = Server([f"shapes={model_dir / 'shapes.onnx'}"], tmp_path)
        try:
            compared = 0
            # the test images at their size, and one as a 1280x720 JPEG (letterbox, scaling back)
            from PIL import Image
            wide = jpeg_bytes(np.asarray(Image.open(tiny_model.test_images[0]).convert("RGB").resize((1280, 720))))
            for data in [p.read_bytes() for p in tiny_model.test_images[:5]] + [wide]:
                url = "/v1/models/shapes/predict"
                ours = box.client.post(url, params={"conf": CONF}, files={"file": ("a.jpg", data)})
                theirs = host.client.post(url, params={"conf": CONF}, files={"file": ("a.jpg", data)})
                assert ours.status_code == theirs.status_code == 200, ours.text
                assert ours.json()["image"] == theirs.json()["image"]
                a, b = ours.json()["detections"], theirs.json()["detections"]
                assert len(a) == len(b)
                if a:
                    assert_parity(as_rows(a), as_rows(b), min_iou=0.999, conf_tol=1e-4)
                    assert [d["class_name"] for d in a] == [d["class_name"] for d in b]
                compared += len(a)
            assert compared > 0, "no detections compared"
        finally:
            host.stop()

        # the admin token comes from the environment, like the CLI's
        reload = "/v1/models/shapes/reload"
        assert box.client.post(reload, json={"path": "/models/shapes.onnx"}).status_code == 401
        ok = box.client.post(reload, json={"path": "/models/shapes.onnx"}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, ok.text
        bad = box.client.post("/v1/models/shapes/predict", files={"file": ("a.jpg", b"not an image")})
        assert bad.status_code == 400 and bad.json()["error"]["code"]

        assert box.wait_health("healthy") == "healthy"
        assert box.stop() == 0  # SIGTERM: uvicorn shuts down cleanly as PID 1


def test_serve_container_refuses_a_missing_model_in_one_line(serve_image, tmp_path):
    with Container(serve_image.tag, env={"VISIONLOOP_MODEL": "/models/nope.onnx"}) as box:
        proc = docker("wait", box.name, timeout=120)
        assert proc.stdout.strip() != "0"
        logs = box.logs().strip().splitlines()
        assert logs and "nope.onnx" in logs[-1] and "Traceback" not in box.logs()


def test_compose_file_validates():
    compose = shutil.which("docker-compose")
    cmd = [compose] if compose else ["docker", "compose"]
    proc = subprocess.run([*cmd, "-f", str(ROOT / "docker" / "compose.yml"), "config"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    config = yaml.safe_load(proc.stdout)
    services = config["services"]
    assert set(services) == {"minio", "buckets", "mlflow", "labelstudio", "serve", "trainer"}
    assert set(config["volumes"]) >= {"minio", "mlflow", "labelstudio", "serve", "trainer"}
    for name, service in services.items():
        for port in service.get("ports", []):
            published = port if isinstance(port, str) else f"{port.get('host_ip')}:{port.get('published')}"
            assert published.startswith("127.0.0.1:"), (name, port)
    serve = services["serve"]
    assert serve["read_only"] is True and serve["build"]["dockerfile"] == "docker/serve.Dockerfile"
    wiring = ("MLFLOW_TRACKING_URI", "VISIONLOOP_STORE_URL", "AWS_ENDPOINT_URL")
    assert all(serve["environment"][k] == services["trainer"]["environment"][k] for k in wiring)
    assert "--watch" in services["trainer"]["command"] and serve["environment"]["VISIONLOOP_WATCH"] == "10"
    assert "s3://mlflow" in " ".join(services["mlflow"]["command"])
