"""Evaluate an exported ONNX model on one split of a dataset version, the way it is served.

``evaluate_model`` is the one function for "how good is this model on that data": the
pipeline calls it on the fresh export, and ``models compare`` calls it for two models on the
same frozen test split, so both numbers come from the same code and the same images.

The predictions come from the server's own runtime (:class:`visionloop.serving.runtime.OnnxModel`:
Pillow decode, the dynamic letterbox, the numpy NMS), so the test metrics describe what is
served, not ultralytics' validator pipeline (which letterboxes every image to a square). The
metric itself is ultralytics': its validator's IoU matching at 0.50:0.95 and ``DetMetrics``
(``ap_per_class``), at ultralytics val's settings (conf 0.001, NMS IoU 0.7, 300 detections).

Classification reads the class folders (``split/<class>/*``: the folder is the label) and
scores the served top-k (the runtime's resize + centre crop, then softmax output): top-1,
top-5 (of min(5, classes)) and per-class accuracy, as ultralytics' ClassifyMetrics counts them.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import yaml

from ..datasets.manifest import DatasetManifest
from ..datasets.split import Split
from ..errors import ValidationError
from ..evaluation import ClassAccuracy, ClassAP, ClassifyStats, EvalResult, Evaluation, MatchStats
from ..predictions import Task

EVAL_CONF, EVAL_IOU, EVAL_MAX_DET = 0.001, 0.7, 300  # ultralytics val's defaults
TOP_K = 5  # top-5 accuracy (of min(5, classes))

_PKG = Path(__file__).resolve().parents[1]
# Code whose change can change an evaluation's numbers: this file, the served prediction path,
# the dataset files it reads and the record it writes.
EVALUATOR_SOURCES = ("training/evaluate.py", "evaluation.py", "serving/runtime.py", "serving/preprocess.py",
                     "serving/postprocess.py", "datasets/images.py", "datasets/materialize.py")


def evaluator_version() -> str:
    """A hash of the evaluation code plus the versions of the libraries that compute the numbers
    (ultralytics: the matching and the metric; onnxruntime: the inference): part of every
    evaluation cache key, so a changed evaluator never answers from an old cache."""
    h = hashlib.sha256()
    for rel in EVALUATOR_SOURCES:
        h.update(rel.encode() + b"\0" + (_PKG / rel).read_bytes())
    for lib in ("ultralytics", "onnxruntime"):
        try:
            h.update(f"{lib}={version(lib)}".encode())
        except PackageNotFoundError:
            h.update(f"{lib}=none".encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class SplitFiles:
    """The images of one split of a materialized dataset: files (sorted), the data's class names,
    its task, and for classification each file's class id (from its class folder)."""

    task: Task
    files: list[Path]
    classes: list[str]
    labels: list[int]


def _image_files(folder: Path) -> list[Path]:
    from ultralytics.data.utils import IMG_FORMATS

    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix[1:].lower() in IMG_FORMATS)


def split_files(data_yaml: Path, split: Split) -> SplitFiles:
    """The images of ``split`` of a data.yaml: ``images/<split>`` (detect) or ``<split>/<class>/`` (classify)."""
    cfg = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(cfg.get("path") or Path(data_yaml).parent)
    names = cfg["names"]
    classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    task = cfg.get("task", "detect")
    rel = cfg.get(split) or (split if task == "classify" else None)
    if not rel or not (root / rel).is_dir():
        raise ValidationError(f"dataset {data_yaml} has no {split} split")
    files, labels = [], []
    if task == "classify":
        for cid, name in enumerate(classes):
            folder = root / rel / name
            found = _image_files(folder) if folder.is_dir() else []
            files += found
            labels += [cid] * len(found)
    else:
        files = _image_files(root / rel)
    if not files:
        raise ValidationError(f"dataset {data_yaml} has no {split} images")
    return SplitFiles(task, files, classes, labels)


def _targets(image: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """The image's labels (ultralytics' label path) as pixel xyxy boxes and class ids; duplicates
    dropped and polygons boxed, as ultralytics' dataset check does."""
    from ultralytics.data.utils import img2label_paths

    path = Path(img2label_paths([str(image)])[0])
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        v = [float(x) for x in line.split()]
        if len(v) > 5:  # a polygon: its bounding box
            xs, ys = v[1::2], v[2::2]
            v = [v[0], (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2, max(xs) - min(xs), max(ys) - min(ys)]
        if len(v) == 5:
            rows.append(v)
    lb = np.unique(np.array(rows, dtype=np.float32).reshape(-1, 5), axis=0)
    cx, cy, w, h = lb[:, 1] * width, lb[:, 2] * height, lb[:, 3] * width, lb[:, 4] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1), lb[:, 0].astype(np.int32)


class _Matcher:
    """ultralytics' validator matching and DetMetrics, fed one served prediction at a time."""

    def __init__(self, classes: list[str], work_dir: Path):
        from ultralytics.models.yolo.detect.val import DetectionValidator
        from ultralytics.utils.metrics import DetMetrics

        self.validator = DetectionValidator(save_dir=work_dir, args={"plots": False, "verbose": False})
        self.metrics = DetMetrics(names=dict(enumerate(classes)))
        self.rows: dict[str, list[np.ndarray]] = {k: [] for k in ("det_image", "conf", "pred_cls", "tp",
                                                                  "target_image", "target_cls")}

    def add(self, index: int, name: str, xyxy: np.ndarray, conf: np.ndarray, cls: np.ndarray,
            gt_xyxy: np.ndarray, gt_cls: np.ndarray) -> None:
        import torch

        order = np.argsort(-conf, kind="stable")  # the matching walks detections best first
        xyxy, conf, cls = xyxy[order], conf[order].astype(np.float32), cls[order].astype(np.int32)
        preds = {"bboxes": torch.from_numpy(np.ascontiguousarray(xyxy, np.float32)),
                 "cls": torch.from_numpy(cls.astype(np.float32))}
        truth = {"bboxes": torch.from_numpy(np.ascontiguousarray(gt_xyxy, np.float32)),
                 "cls": torch.from_numpy(gt_cls.astype(np.float32))}
        tp = self.validator._process_batch(preds, truth)["tp"]
        self.metrics.update_stats({"tp": tp, "conf": conf, "pred_cls": cls.astype(np.float32),
                                   "target_cls": gt_cls.astype(np.float32),
                                   "target_img": np.unique(gt_cls).astype(np.float32), "im_name": name})
        for key, arr in (("det_image", np.full(len(conf), index, np.int32)), ("conf", conf), ("pred_cls", cls),
                         ("tp", tp.astype(bool)), ("target_image", np.full(len(gt_cls), index, np.int32)),
                         ("target_cls", gt_cls)):
            self.rows[key].append(arr)

    def stats(self, images: tuple[str, ...], nc: int) -> MatchStats:
        return MatchStats(images, nc, **{k: np.concatenate(v) for k, v in self.rows.items()})


def _served_model(onnx_path: Path, classes: list[str], imgsz: int | None, task: Task = "detect"):
    from ..serving.runtime import ModelLoadError, OnnxModel
    from .export import read_metadata

    try:
        model = OnnxModel(onnx_path)
    except ModelLoadError as exc:
        raise ValidationError(str(exc)) from None
    meta = read_metadata(onnx_path)
    model_classes = json.loads(meta["classes"]) if "classes" in meta else model.info.classes
    if model_classes != classes:
        raise ValidationError(f"model classes {model_classes} differ from the data's {classes}")
    if model.info.task != task:
        raise ValidationError(f"the data is a {task} dataset; {onnx_path.name} is a {model.info.task} model")
    if imgsz and (imgsz, imgsz) != model.info.imgsz:
        if not model.info.dynamic:
            raise ValidationError(f"{onnx_path.name} takes {model.info.imgsz[0]} px inputs only, not {imgsz}")
        model.info = replace(model.info, imgsz=(imgsz, imgsz))  # the same served letterbox, at this size
    return model


def run_evaluation(onnx_path: Path, data: DatasetManifest | Path, split: Split = "test", *,
                   imgsz: int | None = None, log_file: Path | None = None) -> Evaluation:
    """The record of :func:`evaluate_model` and the per-image matches it was computed from."""
    from ..serving.preprocess import decode_image
    from ..serving.runtime import PredictParams

    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ValidationError(f"model file {onnx_path} not found")
    if isinstance(data, DatasetManifest):
        from ..datasets.materialize import materialize
        from ..settings import get_settings
        from ..store import open_store

        if not data.by_split(split):
            raise ValidationError(f"dataset {data.ref} has no {split} images")
        data_yaml, label = materialize(open_store(), data, get_settings().cache_dir), data.ref
    else:
        data_yaml, label = Path(data), str(data)
    found = split_files(data_yaml, split)
    files, classes = found.files, found.classes
    model = _served_model(onnx_path, classes, imgsz, found.task)
    if found.task == "classify":
        return _classify_evaluation(model, found, label, split, log_file)
    params = PredictParams(conf=EVAL_CONF, iou=EVAL_IOU, max_det=EVAL_MAX_DET)
    timing = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vl-eval-") as tmp:
        matcher = _Matcher(classes, Path(tmp))
        for i, path in enumerate(files):
            image = decode_image(path.read_bytes())
            pred = model.predict(image, params)
            for k in timing:
                timing[k] += pred.timing_ms.get(k, 0.0)
            d = pred.detections
            matcher.add(i, path.name, d.xyxy, d.conf, d.cls, *_targets(path, image.width, image.height))
        matcher.metrics.process()
    box, n = matcher.metrics.box, len(files)
    index = [int(i) for i in getattr(box, "ap_class_index", [])]
    per_class = [ClassAP(name=name, ap50=float(box.ap50[index.index(i)]) if i in index else 0.0,
                         ap50_95=float(box.ap[index.index(i)]) if i in index else 0.0)  # 0: no instance in the split
                 for i, name in enumerate(classes)]
    nt = matcher.metrics.nt_per_class
    result = EvalResult(
        model=str(onnx_path), data=label, split=split, images=n, instances=int(nt.sum()) if nt is not None else 0,
        imgsz=int(model.info.imgsz[0]), map50=float(box.map50), map50_95=float(box.map), precision=float(box.mp),
        recall=float(box.mr), per_class=per_class, speed_ms={k: v / n for k, v in timing.items()},
    )
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as fh:
            fh.write(f"evaluated {onnx_path.name} on {label} {split}: {n} images in {time.perf_counter() - t0:.1f}s "
                     f"(served path, conf {EVAL_CONF}, iou {EVAL_IOU}): mAP50 {result.map50:.4f}, "
                     f"mAP50-95 {result.map50_95:.4f}\n")
    return Evaluation(result, matcher.stats(tuple(p.stem for p in files), len(classes)))


def _classify_evaluation(model, found: SplitFiles, label: str, split: Split, log_file: Path | None) -> Evaluation:
    """Top-1, top-5 and per-class accuracy of the served top-k on the split's class folders."""
    from ..serving.preprocess import decode_image
    from ..serving.runtime import PredictParams

    files, classes = found.files, found.classes
    k = min(TOP_K, len(classes))
    params = PredictParams(top_k=k)
    timing = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    topk = np.zeros((len(files), k), dtype=np.int32)
    t0 = time.perf_counter()
    for i, path in enumerate(files):
        pred = model.predict(decode_image(path.read_bytes()), params)
        for key in timing:
            timing[key] += pred.timing_ms.get(key, 0.0)
        topk[i] = [cid for cid, _ in pred.classes or []]
    stats = ClassifyStats(tuple(p.stem for p in files), len(classes), np.array(found.labels, dtype=np.int32), topk)
    correct, n = stats.correct(), len(files)
    per_class = [ClassAccuracy(name=name, images=int((stats.true_cls == c).sum()),
                               accuracy=float(correct[stats.true_cls == c].mean()) if (stats.true_cls == c).any()
                               else 0.0)  # 0: no image of the class in the split
                 for c, name in enumerate(classes)]
    result = EvalResult(
        model=str(model.path), data=label, split=split, task="classify", images=n, instances=n,
        imgsz=int(model.info.imgsz[0]), top1=float(correct.mean()),
        top5=float((topk == stats.true_cls[:, None]).any(axis=1).mean()), per_class_accuracy=per_class,
        speed_ms={key: v / n for key, v in timing.items()},
    )
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "a") as fh:
            fh.write(f"evaluated {model.path.name} on {label} {split}: {n} images in {time.perf_counter() - t0:.1f}s "
                     f"(served path, top-{k}): top-1 {result.top1:.4f}, top-5 {result.top5:.4f}\n")
    return Evaluation(result, stats)


def confusion_matrix(stats: ClassifyStats) -> np.ndarray:
    """(nc, nc) counts: row = true class, column = the served top-1."""
    m = np.zeros((stats.nc, stats.nc), dtype=np.int64)
    np.add.at(m, (stats.true_cls, stats.topk[:, 0]), 1)
    return m


def evaluate_model(
    onnx_path: Path,
    data: DatasetManifest | Path,
    split: Split = "test",
    *,
    imgsz: int | None = None,
    log_file: Path | None = None,
) -> EvalResult:
    """mAP50, mAP50-95, precision, recall, per-class AP and speed of ``onnx_path`` on ``split``
    (classification: top-1, top-5, per-class accuracy and speed).

    ``data`` is a dataset manifest (materialized here, cached) or a ``data.yaml``. The model's
    classes must equal the data's, in order: comparing across class lists would be meaningless.
    ``imgsz`` (default: the model's own, as served) letterboxes a dynamic model to another size.
    """
    return run_evaluation(onnx_path, data, split, imgsz=imgsz, log_file=log_file).result
