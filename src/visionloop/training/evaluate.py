"""Evaluate an exported ONNX model on one split of a dataset version.

``evaluate_model`` is the one function for "how good is this model on that data": the
pipeline calls it on the fresh export, and ``models compare`` calls it for two models on the
same frozen test split, so both numbers come from the same code and the same images.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

from ..datasets.manifest import DatasetManifest
from ..datasets.split import Split
from ..errors import ValidationError
from ..evaluation import ClassAP, EvalResult


def _split_yaml(data_yaml: Path, split: Split, work_dir: Path) -> tuple[Path, list[str], int]:
    """A data.yaml whose ``val`` is ``split`` (ultralytics validates ``val``); classes; image count."""
    cfg = yaml.safe_load(Path(data_yaml).read_text())
    root = Path(cfg.get("path") or Path(data_yaml).parent)
    rel = cfg.get(split)
    if not rel or not (root / rel).is_dir():
        raise ValidationError(f"dataset {data_yaml} has no {split} split")
    n = sum(1 for p in (root / rel).iterdir() if p.is_file())
    if n == 0:
        raise ValidationError(f"dataset {data_yaml} has no {split} images")
    names = cfg["names"]
    classes = [names[i] for i in sorted(names)] if isinstance(names, dict) else list(names)
    out = work_dir / "data.yaml"
    out.write_text(yaml.safe_dump({**cfg, "path": str(root), "val": rel}, sort_keys=False))
    return out, classes, n


def evaluate_model(
    onnx_path: Path,
    data: DatasetManifest | Path,
    split: Split = "test",
    *,
    imgsz: int | None = None,
    log_file: Path | None = None,
) -> EvalResult:
    """mAP50, mAP50-95, precision, recall, per-class AP and speed of ``onnx_path`` on ``split``.

    ``data`` is a dataset manifest (materialized here, cached) or a ``data.yaml``. The model's
    classes must equal the data's, in order: comparing across class lists would be meaningless.
    """
    from .export import read_metadata
    from .trainer import ultralytics_output

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
    meta = read_metadata(onnx_path)
    model_classes = json.loads(meta["classes"]) if "classes" in meta else None
    imgsz = imgsz or int(meta.get("input_size") or json.loads(meta.get("imgsz", "[640]").replace("'", '"'))[0])

    with tempfile.TemporaryDirectory(prefix="vl-eval-") as tmp:
        split_yaml, classes, n_images = _split_yaml(data_yaml, split, Path(tmp))
        if model_classes is not None and model_classes != classes:
            raise ValidationError(f"model classes {model_classes} differ from the data's {classes}")
        log_file = log_file or Path(tmp) / "eval.log"
        with ultralytics_output(log_file):
            from ultralytics import YOLO

            m = YOLO(str(onnx_path), task="detect").val(
                data=str(split_yaml), split="val", imgsz=imgsz, batch=1, device="cpu", rect=False,
                plots=False, save_json=False, project=tmp, name="val", exist_ok=True, verbose=False,
            )
    box = m.box
    per_class = []
    index = list(getattr(box, "ap_class_index", []))
    for i, name in enumerate(classes):
        if i in index:
            k = index.index(i)
            per_class.append(ClassAP(name=name, ap50=float(box.ap50[k]), ap50_95=float(box.ap[k])))
        else:  # no instance of this class in the split
            per_class.append(ClassAP(name=name, ap50=0.0, ap50_95=0.0))
    nt = getattr(m, "nt_per_class", None)
    instances = int(nt.sum()) if nt is not None else 0
    return EvalResult(
        model=str(onnx_path), data=label, split=split, images=n_images, instances=instances, imgsz=imgsz,
        map50=float(box.map50), map50_95=float(box.map), precision=float(box.mp), recall=float(box.mr),
        per_class=per_class, speed_ms={k: float(v) for k, v in (m.speed or {}).items()},
    )
