"""ONNX export with metadata, and the parity check that gates registration.

The exported file is only trusted once onnxruntime, fed the same letterboxed images, finds
the same boxes as the PyTorch model: same class, IoU >= 0.99, confidence within 0.01. The
check runs at a very low confidence threshold so that even a 2-epoch model (whose scores are
all below 0.01) yields boxes to compare, and it fails if nothing was compared at all.

A classification export must give every image the same top-1 class and every class a
probability within 1e-3 of PyTorch's; ``compared`` counts images, ``max_conf_diff`` is the
largest probability difference.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from ..errors import VisionloopError
from ..files import atomic_write_bytes
from ..predictions import Detections, Task, box_iou
from ..registry.card import ParitySummary

# Opset 17 runs on every onnxruntime our dependency bound allows (>= 1.17 supports up to 20)
# and is what ultralytics itself picks for recent torch; pinned so exports are reproducible.
ONNX_OPSET = 17
PARITY_CONF = 0.001
PARITY_IOU = 0.99
PARITY_CONF_TOL = 0.01
PARITY_TOP_K = 50  # compare each image's strongest boxes; the tail near max_det is arbitrary
NMS_IOU = 0.7  # ultralytics' predict default
# A kept neighbour scoring within this of a box may legitimately have suppressed it (an NMS tie).
TIE_CONF = 1e-3
PARITY_PROB_TOL = 1e-3  # classification: per-class probability


@dataclass(frozen=True)
class ExportResult:
    onnx_path: Path
    opset: int
    metadata: dict[str, str]


class ParityReport(ParitySummary):
    """PyTorch vs onnxruntime on the same images, both ways; ``ties`` counts boxes whose twin
    lost an NMS tie to a near-identical neighbour. The card keeps the summary without the
    mismatches (a version is only registered when there are none)."""

    compared: int = 0
    task: Task = "detect"
    mismatches: list[str] = Field(default_factory=list)

    def card_summary(self) -> ParitySummary:
        return ParitySummary.model_validate(self.model_dump(exclude={"mismatches", "task"}))

    @property
    def ok(self) -> bool:
        return self.compared > 0 and not self.mismatches

    def summary(self) -> str:
        if self.task == "classify":
            return (f"parity on {self.images} images: top-1 equal on {self.compared - len(self.mismatches)}, "
                    f"max probability diff {self.max_conf_diff:.2g}")
        return (f"parity on {self.images} images: {self.compared} boxes, "
                f"min IoU {self.min_iou:.4f}, max conf diff {self.max_conf_diff:.2g}")


class ExportOutcome(BaseModel):
    """What the export step produced: the checked ONNX file (the export step's done-marker)."""

    onnx: Path
    opset: int
    parity: ParityReport

    def summary(self) -> str:
        return f"opset {self.opset}; {self.parity.summary()}"


def read_metadata(onnx_path: Path) -> dict[str, str]:
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    return {p.key: p.value for p in m.metadata_props}


def write_metadata(onnx_path: Path, extra: dict[str, str]) -> dict[str, str]:
    """Add (or replace) metadata_props entries; returns the full metadata."""
    import onnx

    m = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in m.metadata_props}
    props.update({k: str(v) for k, v in extra.items()})
    del m.metadata_props[:]
    for k, v in props.items():
        m.metadata_props.add(key=k, value=v)
    atomic_write_bytes(onnx_path, m.SerializeToString())
    return props


def export_onnx(best_pt: Path, imgsz: int, out_path: Path, extra_metadata: dict[str, str] | None = None) -> ExportResult:
    """Export ``best_pt`` to ``out_path`` (dynamic batch and size, simplified) with full metadata.

    A dynamic input lets the server letterbox a 16:9 image to 640x384 instead of 640x640, as
    ultralytics does for PyTorch models: ~1.5x less compute per image (bench/serve_bench.py).

    ultralytics writes ``names``, ``imgsz``, ``stride``, ``task``, ``batch`` (as Python reprs);
    we add ``classes`` as a JSON list (no eval needed to read it) plus ``extra_metadata``.
    """
    from ultralytics import YOLO

    model = YOLO(str(best_pt))
    try:
        produced = Path(model.export(format="onnx", imgsz=imgsz, simplify=True, opset=ONNX_OPSET,
                                     dynamic=True, device="cpu"))
    except Exception as exc:
        raise VisionloopError(f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(produced), out_path)
    names = model.names
    classes = [names[i] for i in sorted(names)]
    meta = write_metadata(out_path, {"classes": json.dumps(classes), "input_size": str(imgsz),
                                     "opset": str(ONNX_OPSET), **(extra_metadata or {})})
    missing = [k for k in ("names", "imgsz", "stride", "task", "classes") if k not in meta]
    if missing:
        raise VisionloopError(f"exported ONNX lacks metadata {missing}")
    return ExportResult(out_path, ONNX_OPSET, meta)


# -- parity -------------------------------------------------------------------------------------
def _twin(ref: Detections, i: int, other: Detections, iou_row: np.ndarray, iou_min: float, conf_tol: float) -> np.ndarray:
    return (other.cls == ref.cls[i]) & (iou_row >= iou_min) & (np.abs(other.conf - ref.conf[i]) <= conf_tol)


def match_detections(ref: Detections, other: Detections, other_raw: Detections | None = None,
                     top_k: int = PARITY_TOP_K, iou_min: float = PARITY_IOU,
                     conf_tol: float = PARITY_CONF_TOL) -> tuple[int, float, float, int, int]:
    """Every one of ``ref``'s ``top_k`` strongest boxes must have a twin in ``other``.

    A twin has the same class, IoU >= ``iou_min`` and confidence within ``conf_tol``. A box
    without a twin after NMS is an NMS tie, not a difference, when ``other_raw`` (other's
    candidates before NMS) holds its twin and ``other`` kept an overlapping box of the same
    class scoring at least as high (minus ``TIE_CONF``): both models computed the same box,
    and float noise (~1e-6) decided which of two near-equal scores NMS kept.
    Returns (compared, min IoU of twins, max confidence difference, ties, unmatched).
    """
    order = np.argsort(-ref.conf)[:top_k]
    compared, ties, unmatched, min_iou, max_diff = 0, 0, 0, 1.0, 0.0
    ious = box_iou(ref.xyxy[order], other.xyxy)
    raw_ious = box_iou(ref.xyxy[order], other_raw.xyxy) if other_raw is not None else None
    for row, i in enumerate(order):
        compared += 1
        ok = _twin(ref, i, other, ious[row], iou_min, conf_tol)
        if ok.any():
            j = int(np.argmax(np.where(ok, ious[row], -1)))
            min_iou = min(min_iou, float(ious[row, j]))
            max_diff = max(max_diff, float(abs(other.conf[j] - ref.conf[i])))
            continue
        suppressor = (other.cls == ref.cls[i]) & (ious[row] >= NMS_IOU) & (other.conf >= ref.conf[i] - TIE_CONF)
        if raw_ious is not None and suppressor.any() and _twin(ref, i, other_raw, raw_ious[row], iou_min, conf_tol).any():
            ties += 1
        else:
            unmatched += 1
    return compared, min_iou, max_diff, ties, unmatched


def _predict(model, images: list[Path], imgsz: int, nms: bool = True) -> list[Detections]:
    # nms=False: IoU threshold 1.0 suppresses nothing, so every candidate above PARITY_CONF stays
    kw = {"iou": 0.7, "max_det": 300} if nms else {"iou": 1.0, "max_det": 100_000}
    out = []
    for r in model.predict([str(p) for p in images], imgsz=imgsz, conf=PARITY_CONF, device="cpu",
                           rect=False, verbose=False, stream=False, **kw):
        b = r.boxes
        out.append(Detections(b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy().astype(int)))
    return out


def _probs(model, images: list[Path], imgsz: int) -> list[np.ndarray]:
    return [r.probs.data.cpu().numpy() for r in model.predict([str(p) for p in images], imgsz=imgsz, device="cpu",
                                                                verbose=False, stream=False)]


def check_classify_parity(best_pt: Path, onnx_path: Path, images: list[Path], imgsz: int) -> ParityReport:
    """Same top-1 and every probability within PARITY_PROB_TOL, image by image (same preprocessing)."""
    from ultralytics import YOLO

    t_probs = _probs(YOLO(str(best_pt)), images, imgsz)
    o_probs = _probs(YOLO(str(onnx_path), task="classify"), images, imgsz)
    rep = ParityReport(images=len(images), task="classify")
    for path, t, o in zip(images, t_probs, o_probs):
        rep.compared += 1
        diff = float(np.abs(t - o).max())
        rep.max_conf_diff = max(rep.max_conf_diff, diff)
        if int(t.argmax()) != int(o.argmax()):
            rep.mismatches.append(f"{path.name}: top-1 {int(t.argmax())} (pytorch) vs {int(o.argmax())} (onnx)")
        elif diff > PARITY_PROB_TOL:
            rep.mismatches.append(f"{path.name}: probabilities differ by {diff:.2g}")
    return rep


def check_parity(best_pt: Path, onnx_path: Path, images: list[Path], imgsz: int,
                 task: Task = "detect") -> ParityReport:
    """Compare PyTorch and onnxruntime predictions on ``images`` both ways (see module doc)."""
    from ultralytics import YOLO

    if not images:
        raise VisionloopError("parity check needs at least one image (the dataset has no test/val images)")
    if task == "classify":
        return check_classify_parity(best_pt, onnx_path, images, imgsz)
    # rect=False: PyTorch letterboxes to the same square as the static ONNX input
    torch_model, onnx_model = YOLO(str(best_pt)), YOLO(str(onnx_path), task="detect")
    t_nms, o_nms = _predict(torch_model, images, imgsz), _predict(onnx_model, images, imgsz)
    t_raw, o_raw = _predict(torch_model, images, imgsz, nms=False), _predict(onnx_model, images, imgsz, nms=False)
    rep = ParityReport(images=len(images))
    for k, path in enumerate(images):
        for name, a, b, b_raw in (("pytorch", t_nms[k], o_nms[k], o_raw[k]), ("onnx", o_nms[k], t_nms[k], t_raw[k])):
            n, iou, diff, ties, unmatched = match_detections(a, b, b_raw)
            rep.compared += n
            rep.ties += ties
            rep.min_iou = min(rep.min_iou, iou)
            rep.max_conf_diff = max(rep.max_conf_diff, diff)
            if unmatched:
                rep.mismatches.append(f"{path.name}: {unmatched} {name} boxes without a twin")
    return rep


def require_parity(rep: ParityReport) -> None:
    if rep.compared - rep.ties <= 0:
        what = "images" if rep.task == "classify" else "boxes"
        raise VisionloopError(f"parity check compared no {what} on {rep.images} images; cannot trust the export")
    if rep.mismatches:
        raise VisionloopError(f"ONNX export differs from the PyTorch model: {rep.mismatches[0]} "
                              f"({len(rep.mismatches)} images differ)")
