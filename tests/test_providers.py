"""Execution providers and the CPU budget: a provider asked for by name is there or the server
refuses to start; threads follow the affinity mask and a container's CPU quota."""

from __future__ import annotations

import os

import pytest

from conftest import run_cli
from serving_helpers import Server

from visionloop.errors import ValidationError
from visionloop.serving.providers import CPU, CUDA, OPENVINO, TENSORRT, available_cpus, resolve_providers
from visionloop.serving.runtime import default_threads


def test_auto_takes_cuda_and_tensorrt_when_present():
    assert resolve_providers("auto", [CPU]) == [CPU]
    assert resolve_providers("auto", [CUDA, CPU]) == [CUDA, CPU]
    assert resolve_providers("auto", [TENSORRT, CUDA, CPU]) == [TENSORRT, CUDA, CPU]
    assert resolve_providers("cpu", [TENSORRT, CUDA, CPU]) == [CPU]
    assert resolve_providers("cuda", [TENSORRT, CUDA, CPU]) == [CUDA, CPU]
    assert resolve_providers("openvino", [OPENVINO, CPU]) == [OPENVINO, CPU]


@pytest.mark.parametrize("choice, missing, install", [("cuda", CUDA, "onnxruntime-gpu"),
                                                      ("openvino", OPENVINO, "onnxruntime-openvino"),
                                                      ("tensorrt", TENSORRT, "TensorRT")])
def test_a_missing_provider_is_an_error_not_a_cpu_fallback(choice, missing, install):
    with pytest.raises(ValidationError, match=f"no {missing}.*{install}"):
        resolve_providers(choice, [CPU])
    with pytest.raises(ValidationError, match="must be one of auto, cpu, cuda"):
        resolve_providers("gpu", [CPU])


def test_serve_refuses_a_missing_provider_in_one_line(tiny_model):
    r = run_cli("serve", "--model", str(tiny_model.onnx), "--provider", "cuda", "--port", "1")
    assert r.returncode != 0 and "CUDAExecutionProvider" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_models_report_the_provider_in_use(tiny_model, tmp_path):
    srv = Server([f"m={tiny_model.onnx}"], tmp_path, "--provider", "cpu")
    try:
        (m,) = srv.client.get("/v1/models").json()["models"]
        assert m["providers"] == [CPU]
    finally:
        srv.stop()


def _cgroup(root, v2: str | None = None, v1: tuple[int, int] | None = None):
    root.mkdir()
    if v2 is not None:
        (root / "cpu.max").write_text(v2)
    if v1 is not None:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text(str(v1[0]))
        (root / "cpu" / "cpu.cfs_period_us").write_text(str(v1[1]))
    return root


def test_available_cpus_reads_the_cgroup_quota(tmp_path):
    mine = len(os.sched_getaffinity(0))
    assert available_cpus(tmp_path / "none") == mine  # no cgroup files: the affinity mask
    assert available_cpus(_cgroup(tmp_path / "v2max", v2="max 100000")) == mine
    assert available_cpus(_cgroup(tmp_path / "v2", v2="50000 100000")) == 1  # half a CPU rounds up to 1
    assert available_cpus(_cgroup(tmp_path / "v1", v1=(100000, 100000))) == 1
    assert available_cpus(_cgroup(tmp_path / "v1off", v1=(-1, 100000))) == mine


def test_default_threads_share_the_cpus_between_workers():
    cpus = available_cpus()
    assert default_threads(1) == cpus
    assert default_threads(cpus) == 1 and default_threads(cpus * 4) == 1
