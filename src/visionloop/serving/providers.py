"""Which onnxruntime execution providers a session asks for, and how many CPUs it may use.

``--provider auto`` takes CUDA (with TensorRT in front when this onnxruntime has it) on a machine
whose onnxruntime build offers it, else the CPU. A provider asked for by name that this
onnxruntime does not offer is an error before anything loads: onnxruntime itself would quietly
run on the CPU, and a GPU server that is secretly a CPU server is worse than one that refuses.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import ValidationError

CPU, CUDA, TENSORRT, OPENVINO = ("CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider",
                                 "OpenVINOExecutionProvider")
CHAINS: dict[str, list[str]] = {  # what each --provider asks onnxruntime for, best first
    "cpu": [CPU],
    "cuda": [CUDA, CPU],
    "tensorrt": [TENSORRT, CUDA, CPU],
    "openvino": [OPENVINO, CPU],
}
CHOICES: tuple[str, ...] = ("auto", *CHAINS)
INSTALL = {"cuda": "onnxruntime-gpu", "tensorrt": "onnxruntime-gpu with TensorRT", "openvino": "onnxruntime-openvino"}


def available_providers() -> list[str]:
    import onnxruntime as ort

    return list(ort.get_available_providers())


def resolve_providers(choice: str, available: list[str] | None = None) -> list[str]:
    """The provider list for ``choice`` (one of :data:`CHOICES`); a missing one is a ValidationError."""
    if choice not in CHOICES:
        raise ValidationError(f"--provider must be one of {', '.join(CHOICES)}, not {choice!r}")
    have = available_providers() if available is None else available
    if choice == "auto":
        return [p for p in CHAINS["tensorrt"] if p in have] if CUDA in have else [CPU]
    wanted = CHAINS[choice]
    if wanted[0] not in have:
        raise ValidationError(f"--provider {choice}: this onnxruntime has no {wanted[0]} (it has {', '.join(have)}); "
                              f"install {INSTALL.get(choice, 'a build with it')}")
    return [p for p in wanted if p in have]


def _cgroup_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2 ``cpu.max``, v1 ``cfs_quota_us``), None if unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may really use: its affinity mask, capped by a container's CPU quota
    (``docker run --cpus 2`` on a 16-core host: 2, where ``os.cpu_count()`` says 16)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota(root)
    return max(1, min(cpus, math.ceil(quota)) if quota else cpus)
