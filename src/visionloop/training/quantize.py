"""Static INT8 quantization of a registered version, kept only if it keeps its accuracy.

``quantize_version("M/5")`` writes a QDQ model with onnxruntime's quantization tools (int8
weights per output channel, uint8 activations), calibrated on the version's own training
images fed through the served preprocessing (the same letterbox or crop the server applies).
Both the fp32 and the int8 file are then evaluated on the version's evaluation split by the
served code path (:func:`run_evaluation`), and the int8 file is registered as a new sibling
version tagged ``precision=int8`` only when its primary metric (mAP50-95, top-1 for
classification) lost at most ``gate.max_quantization_drop``; otherwise
:class:`QuantizationRefused` carries both numbers and nothing is registered.

The detection head's decoding (the DFL softmax, the anchor grid, box and class concatenation)
stays in float: box coordinates in pixels and class scores in [0, 1] meet in one Concat, and
one uint8 scale for both would round every score to 0. The convolutions feeding it, where the
time goes, are quantized. The classifier's final layer and softmax stay in float likewise.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from contextlib import chdir, contextmanager, redirect_stdout
from pathlib import Path
from typing import Callable, Literal

from pydantic import BaseModel, Field

from ..errors import ValidationError, VisionloopError

from ..registry.card import TAG_PRECISION as PRECISION_TAG
from ..registry.card import TAG_QUANTIZED_FROM as QUANTIZED_FROM_TAG

INT8 = "int8"
CALIBRATION_IMAGES = 64
Method = Literal["minmax", "percentile", "entropy"]
METHODS: tuple[str, ...] = ("minmax", "percentile", "entropy")
# The head's branches that stay quantized: box (cv2) and class (cv3) convolutions of a
# detector, the classifier's 1x1 conv. Everything else in the last module is decoding.
_HEAD_QUANTIZED = re.compile(r"^/model\.\d+/(cv2|cv3|cv4|conv)[./]")
_MODULE = re.compile(r"^/model\.(\d+)/")


class QuantizationRefused(VisionloopError):
    """The int8 model lost more than the gate allows; nothing was registered."""


class QuantizationReport(BaseModel):
    """What ``models quantize`` measured; ``version`` is the int8 sibling when it was registered."""

    source: str = Field(description="The fp32 version quantized (M/5).")
    metric: str = Field(description="The compared metric: map50_95 (detect) or top1 (classify).")
    fp32: float
    int8: float
    drop: float = Field(description="fp32 minus int8 on the evaluation split (negative: int8 scored higher).")
    limit: float = Field(description="gate.max_quantization_drop at the time.")
    split: str
    images: int = Field(description="Images in the evaluation split.")
    calibration_images: int
    method: str
    excluded_nodes: int = Field(description="Head decoding nodes kept in float.")
    fp32_bytes: int
    int8_bytes: int
    seconds: float
    version: str | None = Field(default=None, description="The registered int8 version (M/6), None when refused.")

    @property
    def accepted(self) -> bool:
        return self.drop <= self.limit

    def summary(self) -> str:
        return (f"{self.metric} fp32 {self.fp32:.4f} -> int8 {self.int8:.4f} on {self.images} {self.split} images "
                f"(drop {self.drop:+.4f}, limit {self.limit:.4f}); {self.int8_bytes / 1e6:.1f} MB "
                f"from {self.fp32_bytes / 1e6:.1f} MB")


def head_nodes_to_exclude(model) -> list[str]:
    """Names of the last module's non-convolution nodes (the head's decoding), kept in float."""
    modules = [int(m.group(1)) for n in model.graph.node if (m := _MODULE.match(n.name))]
    if not modules:
        return []
    last = f"/model.{max(modules)}/"
    return [n.name for n in model.graph.node if n.name.startswith(last) and not _HEAD_QUANTIZED.match(n.name)]


def calibration_files(data_yaml: Path, task: str, limit: int) -> list[Path]:
    """Up to ``limit`` training images, spread evenly over the sorted split (the same every run)."""
    from .evaluate import split_files

    try:
        files = split_files(data_yaml, "train").files
    except ValidationError:
        files = []
    if not files:
        raise ValidationError("the version's dataset has no training images to calibrate on")
    if len(files) <= limit:
        return list(files)
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


class _Reader:
    """onnxruntime's CalibrationDataReader: one served-path input tensor per image."""

    def __init__(self, model, files: list[Path], on_image: Callable[[int, int], None] | None = None):
        self.model, self.files, self.on_image, self.i = model, files, on_image, 0

    def get_next(self):
        from ..serving.preprocess import decode_image

        if self.i >= len(self.files):
            return None
        tensor, _ = self.model.preprocess(decode_image(self.files[self.i].read_bytes()))
        self.i += 1
        if self.on_image:
            self.on_image(self.i, len(self.files))
        return {self.model.info.input_name: tensor}

    def rewind(self):
        self.i = 0


@contextmanager
def _quiet():
    """onnxruntime's quantizer logs advice on the root logger and its histogram calibrators print to
    stdout (which `--json` owns); the caller reports progress itself."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with open(os.devnull, "w") as sink, redirect_stdout(sink):
            yield
    finally:
        logging.disable(previous)


def quantize_file(fp32: Path, out: Path, files: list[Path], method: Method = "minmax",
                  on_image: Callable[[int, int], None] | None = None) -> int:
    """Write the QDQ int8 model of ``fp32`` to ``out`` (metadata kept); returns the excluded node count."""
    try:
        import onnx
    except ImportError:
        raise VisionloopError("quantizing needs the onnx package: pip install 'visionloop[train]'") from None
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..files import atomic_write_bytes
    from ..serving.runtime import OnnxModel
    from .export import read_metadata, write_metadata

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    served = OnnxModel(fp32, intra_threads=None)
    with tempfile.TemporaryDirectory(prefix="vl-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        try:  # shape inference + graph cleanup: what onnxruntime recommends before quantizing
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)  # symbolic: fails on YOLO
        except Exception:  # noqa: BLE001 - optional step; the plain graph quantizes too
            pre = fp32
        source = onnx.load(str(pre))
        exclude = head_nodes_to_exclude(source)
        staged = Path(tmp) / "int8.onnx"
        # chdir: onnxruntime saves a temporary copy with external data named <uuid>.data in the cwd
        with _quiet(), chdir(tmp):
            quantize_static(str(pre), str(staged), _Reader(served, files, on_image), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], nodes_to_exclude=exclude,
                            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
        write_metadata(staged, {**read_metadata(fp32), PRECISION_TAG: INT8})  # classes, imgsz, task: as served
        atomic_write_bytes(out, staged.read_bytes())
    return len(exclude)


def int8_sibling(ref: str):
    """The int8 version already made from the fp32 version ``ref`` (M/5), or None."""
    from .. import registry

    found = registry.find_versions_by_tag(ref.split("/")[0], QUANTIZED_FROM_TAG, ref)
    return found[-1] if found else None


def quantize_version(ref: str, *, limit: float | None = None, calibration_images: int = CALIBRATION_IMAGES,
                     method: Method = "minmax", config: Path | None = None, force: bool = False,
                     on_progress: Callable[[str], None] | None = None) -> QuantizationReport:
    """Quantize the version ``ref`` names, evaluate both files the served way, register the int8
    sibling when the drop is within ``limit`` (default ``gate.max_quantization_drop``).

    Raises QuantizationRefused (with the report's numbers) when it is not; nothing is registered then.
    A version that has an int8 sibling already is refused unless ``force`` (another method, say).
    """
    from .. import registry
    from ..datasets.catalog import Catalog
    from ..datasets.materialize import materialize
    from ..promotion.gate import Gate
    from ..settings import get_settings
    from ..store import open_store
    from .evaluate import run_evaluation
    from .tracking import Tracker

    say = on_progress or (lambda _msg: None)
    if method not in METHODS:
        raise ValidationError(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if calibration_images < 1:
        raise ValidationError("--calibration-images must be at least 1")
    gate_limit = Gate.load(config).max_quantization_drop if limit is None else limit
    resolved = registry.resolve_model(ref)
    if resolved.tags.get(PRECISION_TAG) == INT8:
        raise ValidationError(f"{resolved.ref} is already an int8 version (quantized from "
                              f"{resolved.tags.get(QUANTIZED_FROM_TAG, '?')}); quantize its fp32 version")
    existing = int8_sibling(resolved.ref)
    if existing is not None and not force:
        raise ValidationError(f"{resolved.ref} already has an int8 version, {existing.ref} (--force makes another)")
    card = resolved.card
    if not card.dataset:
        raise ValidationError(f"{resolved.ref} records no dataset: nothing to calibrate and evaluate on")
    store = open_store()
    manifest = Catalog(store).load(card.dataset)
    data_yaml = materialize(store, manifest, get_settings().cache_dir)
    split = card.eval.split if card.eval is not None else "test"
    files = calibration_files(data_yaml, manifest.task, calibration_images)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vl-int8-") as tmp:
        int8_path = Path(tmp) / "model.onnx"
        say(f"calibrating on {len(files)} training images of {card.dataset} ({method})")
        last = [0.0]

        def tick(i: int, n: int) -> None:
            if time.perf_counter() - last[0] > 2 or i == n:
                last[0] = time.perf_counter()
                say(f"calibration {i}/{n}")

        excluded = quantize_file(resolved.onnx_path, int8_path, files, method, tick)
        say(f"evaluating fp32 and int8 on the {split} split (served path)")
        imgsz = card.imgsz or None
        fp32_ev = run_evaluation(resolved.onnx_path, data_yaml, split, imgsz=imgsz).result
        int8_ev = run_evaluation(int8_path, data_yaml, split, imgsz=imgsz).result
        metric, before, after = fp32_ev.primary, fp32_ev.primary_value, int8_ev.primary_value
        report = QuantizationReport(
            source=resolved.ref, metric=metric, fp32=before, int8=after, drop=round(before - after, 6),
            limit=gate_limit, split=split, images=int8_ev.images, calibration_images=len(files), method=method,
            excluded_nodes=excluded, fp32_bytes=resolved.onnx_path.stat().st_size,
            int8_bytes=int8_path.stat().st_size, seconds=round(time.perf_counter() - t0, 1))
        if not report.accepted:
            raise QuantizationRefused(
                f"int8 refused for {resolved.ref}: {metric} fp32 {before:.4f}, int8 {after:.4f}, drop "
                f"{report.drop:.4f} > gate.max_quantization_drop {gate_limit:.4f}; nothing registered")
        int8_card = card.model_copy(update={
            "eval": int8_ev.model_copy(update={"data": card.dataset}), "parity": None, "precision": INT8,
            "quantized_from": resolved.ref, "cache_key": "",  # not a training: never a training cache hit
        })
        tracker = Tracker(resolved.name)
        run_id = tracker.start(f"{resolved.name}-v{resolved.version}-int8", {
            "visionloop.kind": "quantize", "visionloop.quantized_from": resolved.ref})
        try:
            tracker.params({"calibration_images": len(files), "method": method, "limit": gate_limit,
                            "excluded_nodes": excluded})
            tracker.metrics({f"fp32/{metric}": before, f"int8/{metric}": after, "drop": report.drop})
            mv = registry.register_version(
                resolved.name, run_id, int8_path, int8_card, alias=False,
                description=f"int8 (static QDQ, {method}, {len(files)} calibration images) of {resolved.ref}")
        except Exception:
            tracker.fail("registering the int8 version failed")
            raise
        tracker.end("FINISHED")
    return report.model_copy(update={"version": mv.ref})
