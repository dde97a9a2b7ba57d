"""One ONNX model in onnxruntime: metadata, session options, predict.

The session is created once per loaded version and shared by every request (``run`` is
thread-safe). Class names, input size, stride and task come from the metadata ultralytics
writes into the ONNX file; a plain ONNX file without it still works (sizes from the graph,
classes named ``class0..``).
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from ..predictions import Detections, Task
from .batching import MicroBatcher, measure_gain
from .errors import ApiError
from .providers import CPU, available_cpus
from .postprocess import decode_end2end, decode_yolo_head_scores, scale_boxes, top_k
from .preprocess import DecodedImage, classify_input, letterbox, to_tensor


class ModelLoadError(Exception):
    """The file is not a model this server can serve (message says why)."""


@dataclass(frozen=True)
class ModelInfo:
    task: Task
    classes: list[str]
    imgsz: tuple[int, int]  # (h, w)
    stride: int
    end2end: bool
    input_name: str
    input_shape: tuple
    output_shape: tuple
    precision: str = "fp32"  # int8: a quantized version (metadata written by `models quantize`)

    @property
    def dynamic(self) -> bool:
        """Input height/width are symbolic: letterbox to the smallest stride multiple, like ultralytics."""
        return not all(isinstance(d, int) for d in self.input_shape[2:])

    @property
    def dynamic_batch(self) -> bool:
        """The batch dimension is symbolic: several images can go through one run."""
        return not isinstance(self.input_shape[0], int)


@dataclass(frozen=True)
class PredictParams:
    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 300
    top_k: int = 5


@dataclass
class RawPrediction:
    """Detections in original pixels, or top-k classes; timings in milliseconds."""

    width: int
    height: int
    detections: Detections | None = None
    classes: list[tuple[int, float]] | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)
    class_scores: np.ndarray | None = None  # (n, nc) per box (YOLO heads), or (nc,) probabilities (classify)
    threshold: float = 0.25  # the request's conf: what close-to-threshold is measured against


def _literal(value: str | None, default):
    if value is None:
        return default
    try:
        return ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return default


def read_info(session) -> ModelInfo:
    """ModelInfo from the ONNX metadata ultralytics writes, cross-checked with the graph."""
    meta = session.get_modelmeta().custom_metadata_map
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1:
        raise ModelLoadError(f"expected one image input, found {len(inputs)}")
    inp, out = inputs[0], outputs[0]
    in_shape, out_shape = tuple(inp.shape), tuple(out.shape)
    if len(in_shape) != 4:
        raise ModelLoadError(f"expected a (batch, 3, h, w) input, found {list(in_shape)}")
    imgsz = _literal(meta.get("imgsz"), None)
    if isinstance(imgsz, int):
        imgsz = [imgsz, imgsz]
    if not imgsz:
        if not all(isinstance(d, int) for d in in_shape[2:]):
            raise ModelLoadError("dynamic input size and no 'imgsz' metadata")
        imgsz = list(in_shape[2:])
    task = meta.get("task") or ("classify" if len(out_shape) == 2 else "detect")
    if task not in ("detect", "classify"):
        raise ModelLoadError(f"task {task!r} is not served (detect and classify are)")
    names = _literal(meta.get("names"), None)
    if isinstance(names, dict):
        classes = [str(names[k]) for k in sorted(names)]
    elif isinstance(names, list):
        classes = [str(n) for n in names]
    else:
        n = out_shape[-1] if task == "classify" else (out_shape[1] - 4 if isinstance(out_shape[1], int) else 0)
        classes = [f"class{i}" for i in range(n)] if isinstance(n, int) else []
    end2end = str(meta.get("end2end", "")).lower() == "true" or (
        task == "detect" and len(out_shape) == 3 and out_shape[-1] == 6 and out_shape[1] != 4 + len(classes)
    )
    return ModelInfo(task, classes, (int(imgsz[0]), int(imgsz[1])), int(_literal(meta.get("stride"), 32) or 32),
                     end2end, inp.name, in_shape, out_shape, meta.get("precision") or "fp32")


def check_output(info: ModelInfo, out: np.ndarray) -> None:
    """Refuse a model whose output does not match what its metadata promises."""
    nc = len(info.classes)
    if info.task == "classify":
        ok = out.ndim == 2 and out.shape[1] == nc
        want = f"(1, {nc})"
    elif info.end2end:
        ok = out.ndim == 3 and out.shape[2] >= 6
        want = "(1, N, 6)"
    else:
        ok = out.ndim == 3 and out.shape[1] == 4 + nc
        want = f"(1, {4 + nc}, N)"
    if not ok:
        raise ModelLoadError(f"output shape {list(out.shape)} does not match {want} for {nc} classes")
    if not np.isfinite(out).all():
        raise ModelLoadError("warm-up output contains NaN or infinity")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an error's message (onnxruntime and MLflow write pages), or its type."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def default_threads(workers: int) -> int:
    """intra-op threads per session so that ``workers`` concurrent runs share the CPUs this
    process may use (its affinity and its container's CPU quota, not the host's core count)."""
    return max(1, available_cpus() // max(1, workers))


def run_session(session, input_name: str, tensor: np.ndarray) -> np.ndarray:
    return session.run(None, {input_name: tensor})[0]


def create_session(path: Path, intra_threads: int, spinning: bool = True, providers: list[str] | None = None,
                   strict: bool = True):
    """A session on ``providers`` (serving.providers; default: the CPU). With ``strict`` (a provider
    asked for by name), one that onnxruntime drops while loading (a CUDA build on a machine
    without a GPU) is an error; ``--provider auto`` takes the fallback."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if not spinning:  # several workers on few cores: spinning threads would steal each other's CPU
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = providers or [CPU]
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own untyped errors for bad files
        raise ModelLoadError(f"cannot load {path.name}: {first_line(exc)}") from None
    if strict and providers[0] not in session.get_providers():
        raise ModelLoadError(f"cannot load {path.name} on {providers[0]}: onnxruntime fell back to "
                             f"{', '.join(session.get_providers())}")
    return session


class OnnxModel:
    """A loaded ONNX model: ``predict`` takes a decoded image and returns a RawPrediction."""

    def __init__(self, path: Path, intra_threads: int | None = None, spinning: bool = True,
                 providers: list[str] | None = None, strict: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        self.intra_threads = intra_threads or default_threads(1)
        self.session = create_session(self.path, self.intra_threads, spinning, providers, strict)
        self.info = read_info(self.session)
        self.providers = list(self.session.get_providers())
        self.batcher: MicroBatcher | None = None  # start_batching: predict's runs go through it
        self.batch_gain: float | None = None  # measure_batching: batched over single images/s

    def start_batching(self, max_batch: int, max_wait_ms: float, observe: Callable[[int], None] | None = None,
                       name: str = "vl-batch", runners: int = 1) -> None:
        """Gather concurrent predicts into batched runs (needs ``info.dynamic_batch``). The batcher
        gets the session, not this object: no reference cycle, so a swapped-out model is freed by
        reference counting the moment its last request ends, not at some later gc pass."""
        if not self.info.dynamic_batch:
            raise ValueError(f"{self.path.name} has a fixed batch dimension {self.info.input_shape[0]}")
        self.batcher = MicroBatcher(partial(run_session, self.session, self.info.input_name), max_batch,
                                    max_wait_ms, observe, name, runners)

    def measure_batching(self, max_batch: int, streams: int) -> float:
        """:func:`.batching.measure_gain` on grey images at the model's input size."""
        self.batch_gain = round(measure_gain(self.run, self._grey(), max_batch, streams), 3)
        return self.batch_gain

    def _grey(self) -> np.ndarray:
        h, w = self.info.imgsz
        return np.full((1, 3, h, w), 114 / 255, dtype=np.float32)

    @property
    def max_batch(self) -> int:
        return self.batcher.max_batch if self.batcher else 1

    def close(self) -> None:
        """Stop batching (the runner thread ends); the session stays usable for requests still
        holding this model, which then run unbatched."""
        if self.batcher is not None:
            self.batcher.close()

    def warmup(self, runs: int = 2) -> None:
        """Run grey images through the model (first runs allocate) and check the output shape."""
        grey = self._grey()
        try:
            for _ in range(runs):
                out = self.run(grey)
        except Exception as exc:  # onnxruntime's own error types: a model that loads but cannot run
            raise ModelLoadError(f"warm-up failed: {type(exc).__name__}: {first_line(exc)}") from None
        check_output(self.info, out)

    def run(self, tensor: np.ndarray) -> np.ndarray:
        """One direct run on the session (warm-up, unbatched serving)."""
        return run_session(self.session, self.info.input_name, tensor)

    def preprocess(self, image: DecodedImage):
        if self.info.task == "classify":
            return classify_input(image.rgb, self.info.imgsz), None
        padded, lb = letterbox(image.rgb, self.info.imgsz, self.info.stride if self.info.dynamic else None)
        return to_tensor(padded), lb

    def predict(self, image: DecodedImage, params: PredictParams) -> RawPrediction:
        t0 = time.perf_counter()
        tensor, lb = self.preprocess(image)
        t1 = time.perf_counter()
        try:
            out = self.batcher.run(tensor) if self.batcher else self.run(tensor)
        except Exception as exc:  # e.g. a model that fails on this input shape
            raise ApiError(500, "inference_failed", f"inference failed: {type(exc).__name__}") from exc
        t2 = time.perf_counter()
        result = RawPrediction(image.width, image.height, threshold=params.conf)
        if self.info.task == "classify":
            result.classes = top_k(out[0], params.top_k)
            result.class_scores = out[0]
        else:
            if self.info.end2end:
                dets = decode_end2end(out[0], params.conf, params.max_det)
            else:
                dets, result.class_scores = decode_yolo_head_scores(out[0], params.conf, params.iou, params.max_det)
            result.detections = Detections.from_rows(scale_boxes(dets, lb))
        t3 = time.perf_counter()
        result.timing_ms = {"preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
                            "postprocess": (t3 - t2) * 1e3}
        return result
