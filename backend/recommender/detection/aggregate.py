"""How YOLOv5's candidate boxes become one value per class (the vector ranking uses).

The model proposes ~25,000 candidate boxes per 640-pixel photo, each with objectness o and
class probabilities p(c); a candidate's score for class c is o·p(c). Aggregations:

``max``       the best candidate score (what earlier versions stored as ``yolov5s``).
``noisy-or``  1 - Π(1 - s) over the class's boxes that survive per-class NMS (score ≥ 0.005,
              the 10 best): several distinct weak boxes are more evidence than one.
``top2-mean`` mean of the class's two best boxes after NMS (a missing second box counts 0).

A class without any box above the floor keeps its best candidate score, so weak evidence still
ranks. Only the ``PER_CLASS_CANDIDATES`` best candidates of each class enter its NMS: bounded
work, all classes at once in numpy (a few per cent of a detection; ``bench/ingest.py``).
Which one ships is measured by ``bench/aggregation.py`` (split-half check; numbers in the README).
"""

from __future__ import annotations

import numpy as np

from ..classes import NUM_CLASSES

AGGREGATIONS = ("max", "noisy-or", "top2-mean")
SCORE_FLOOR = 0.005
MAX_BOXES = 10
PER_CLASS_CANDIDATES = 48
NMS_IOU = 0.45


def class_values(
    prediction: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    aggregation: str = "max",
    floor: float = SCORE_FLOOR,
    max_boxes: int = MAX_BOXES,
    iou_threshold: float = NMS_IOU,
) -> np.ndarray:
    """float32[81] (slot 0, background, is 0) from candidates [N, 85] (centre, size, objectness,
    class probabilities). ``scores`` = objectness × probabilities [N, 80], if already computed."""
    if scores is None:
        scores = prediction[:, 5:] * prediction[:, 4:5]
    values = np.zeros(NUM_CLASSES, dtype=np.float32)
    values[1:] = scores.max(axis=0) if len(scores) else 0.0
    if aggregation == "max":
        return values
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}")
    kept = kept_box_scores(prediction, scores, floor=floor, max_boxes=max_boxes, iou_threshold=iou_threshold)
    if kept is None:
        return values
    classes, box_scores = kept  # [C], [C, max_boxes] (0 where a class has fewer boxes)
    if aggregation == "noisy-or":
        combined = 1.0 - np.prod(1.0 - box_scores.astype(np.float64), axis=1)
    else:
        combined = box_scores[:, :2].mean(axis=1)
    values[classes + 1] = combined
    return values


def kept_box_scores(
    prediction: np.ndarray, scores: np.ndarray, *, floor: float, max_boxes: int, iou_threshold: float = NMS_IOU
) -> tuple[np.ndarray, np.ndarray] | None:
    """Per class with a candidate ≥ ``floor``: the scores of its boxes kept by greedy NMS, best
    first, at most ``max_boxes`` (zero-padded). None when no class reaches the floor."""
    # A candidate's class score is at most its objectness: filter on that first (cheap).
    rows = np.flatnonzero(prediction[:, 4] >= floor)
    if rows.size == 0:
        return None
    sub = scores[rows]
    counts = np.count_nonzero(sub >= floor, axis=0)
    classes = np.flatnonzero(counts)
    if classes.size == 0:
        return None
    sub = sub[:, classes]  # [R, C]
    # Candidates under the floor are never kept: no class needs more columns than its count.
    n = min(PER_CLASS_CANDIDATES, int(counts.max()))
    top = np.argpartition(-sub, n - 1, axis=0)[:n] if n < rows.size else np.broadcast_to(np.arange(n)[:, None], (n, classes.size))
    top_scores = np.take_along_axis(sub, top, axis=0)  # [n, C]
    order = np.argsort(-top_scores, axis=0, kind="stable")
    top = np.take_along_axis(top, order, axis=0).T  # [C, n], best first
    top_scores = np.take_along_axis(top_scores, order, axis=0).T
    valid = top_scores >= floor
    keep = _batched_nms(_corners(prediction[rows[top], :4]), valid, iou_threshold)
    # The first max_boxes kept boxes of each class, in score order.
    keep &= np.cumsum(keep, axis=1) <= max_boxes
    rank = np.cumsum(keep, axis=1) - 1
    out = np.zeros((classes.size, max_boxes), dtype=np.float32)
    c_idx, j_idx = np.nonzero(keep)
    out[c_idx, rank[c_idx, j_idx]] = top_scores[c_idx, j_idx]
    return classes, out


def _corners(cxcywh: np.ndarray) -> np.ndarray:
    half = cxcywh[..., 2:] / 2
    return np.concatenate([cxcywh[..., :2] - half, cxcywh[..., :2] + half], axis=-1).astype(np.float32)


def _batched_nms(boxes: np.ndarray, valid: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS of every class at once: boxes [C, n, 4] sorted best first; kept mask [C, n]."""
    x1, y1, x2, y2 = (boxes[..., i] for i in range(4))
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    w = np.maximum(np.minimum(x2[:, :, None], x2[:, None, :]) - np.maximum(x1[:, :, None], x1[:, None, :]), 0)
    h = np.maximum(np.minimum(y2[:, :, None], y2[:, None, :]) - np.maximum(y1[:, :, None], y1[:, None, :]), 0)
    inter = w * h
    overlaps = inter > iou_threshold * np.maximum(areas[:, :, None] + areas[:, None, :] - inter, 1e-9)
    alive = valid.copy()
    keep = np.zeros_like(valid)
    # Box j is kept if no kept better box overlaps it; a kept box removes the ones it overlaps.
    for j in range(valid.shape[1]):
        keep[:, j] = alive[:, j]
        alive &= ~(keep[:, j, None] & overlaps[:, j, :])
        if j % 8 == 7 and not alive[:, j + 1 :].any():
            break
    return keep
