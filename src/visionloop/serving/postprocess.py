"""Raw ONNX outputs → detections in original-image pixels, in pure numpy.

Mirrors ``ultralytics.utils.nms.non_max_suppression`` (best class per box, strict ``> conf``,
at most ``max_nms`` candidates, class-aware NMS by offsetting boxes per class, ``max_det``)
and ``ops.scale_boxes`` (separate x/y gains, padding removed, clipped), so the server returns
what ``YOLO(onnx).predict`` returns. Inside this module detections are ``(n, 6)`` float32 rows
``x1, y1, x2, y2, confidence, class_id``; the runtime hands them on as
:class:`visionloop.predictions.Detections`.
"""

from __future__ import annotations

import numpy as np

from .preprocess import Letterbox

MAX_NMS = 30000  # ultralytics: candidates kept (by confidence) before NMS
MAX_WH = 7680  # ultralytics: per-class box offset for class-aware NMS


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    half_w, half_h = b[:, 2] / 2, b[:, 3] / 2
    out[:, 0] = b[:, 0] - half_w
    out[:, 1] = b[:, 1] - half_h
    out[:, 2] = b[:, 0] + half_w
    out[:, 3] = b[:, 1] + half_h
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thres: float, limit: int | None = None) -> np.ndarray:
    """Greedy NMS: indices of kept boxes, best first; a box is dropped when IoU > ``iou_thres``.

    Stops after ``limit`` kept boxes (``max_det``) — the rest would be cut anyway.
    """
    if len(boxes) == 0:
        return np.empty(0, dtype=np.intp)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        if limit is not None and len(keep) >= limit:
            break
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(iou > iou_thres)]  # NaN (zero-area pairs) keeps the box, like torch
    return np.asarray(keep, dtype=np.intp)


def decode_yolo_head(pred: np.ndarray, conf: float, iou: float, max_det: int, agnostic: bool = False) -> np.ndarray:
    """One image of a v5/v8/11-style head ``(4 + nc, N)`` (xywh + class scores) → ``(n, 6)``."""
    return decode_yolo_head_scores(pred, conf, iou, max_det, agnostic)[0]


def decode_yolo_head_scores(pred: np.ndarray, conf: float, iou: float, max_det: int,
                            agnostic: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_yolo_head` plus each kept box's class score vector ``(n, nc)``: margin and
    entropy per box (feedback.scoring) need the runner-up classes that NMS throws away."""
    x = pred.T  # (N, 4 + nc)
    nc = x.shape[1] - 4
    empty = np.zeros((0, 6), dtype=np.float32), np.zeros((0, max(nc, 0)), dtype=np.float32)
    if nc <= 0:
        return empty
    keep = x[:, 4:].max(1) > conf
    x = x[keep]
    if not len(x):
        return empty
    cls = x[:, 4:].argmax(1)
    best = x[np.arange(len(x)), 4 + cls]
    boxes = xywh_to_xyxy(x[:, :4])
    if len(x) > MAX_NMS:
        top = np.argsort(-best, kind="stable")[:MAX_NMS]
        x, boxes, best, cls = x[top], boxes[top], best[top], cls[top]
    offset = 0 if agnostic else cls[:, None].astype(np.float32) * MAX_WH
    kept = nms(boxes + offset, best, iou, limit=max_det)[:max_det]
    out = np.empty((len(kept), 6), dtype=np.float32)
    out[:, :4] = boxes[kept]
    out[:, 4] = best[kept]
    out[:, 5] = cls[kept]
    return out, np.ascontiguousarray(x[kept, 4:], dtype=np.float32)


def decode_end2end(pred: np.ndarray, conf: float, max_det: int) -> np.ndarray:
    """One image of an end-to-end head ``(N, 6)`` (x1, y1, x2, y2, conf, cls; YOLO26/v10): no NMS."""
    rows = pred[pred[:, 4] > conf][:max_det]
    return np.ascontiguousarray(rows[:, :6], dtype=np.float32)


def scale_boxes(dets: np.ndarray, lb: Letterbox) -> np.ndarray:
    """Letterboxed model coordinates → original-image pixels, clipped to the image."""
    out = dets.copy()
    out[:, [0, 2]] = ((out[:, [0, 2]] - lb.pad_x) / lb.gain_x).clip(0, lb.orig_w)
    out[:, [1, 3]] = ((out[:, [1, 3]] - lb.pad_y) / lb.gain_y).clip(0, lb.orig_h)
    return out


def top_k(probs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """(class_id, probability) of the ``k`` most likely classes, best first."""
    k = max(1, min(k, probs.shape[-1]))
    idx = np.argsort(-probs, kind="stable")[:k]
    return [(int(i), float(probs[i])) for i in idx]
