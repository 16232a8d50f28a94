"""The detector contract every backend fulfils, and the lazy, thread-safe loading they share."""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import ModuleType

import numpy as np


class DetectorError(RuntimeError):
    """A detector cannot run; the message tells the user what to do."""


class WeightsMissingError(DetectorError):
    """The weights file of a detector is not in the weights directory."""


def import_tensorflow(hint: str = "") -> ModuleType:
    """TensorFlow, imported on first need (seconds of start-up), or a DetectorError saying why not."""
    # Keeps TensorFlow's C++ start-up banner out of the user's terminal where it honours this.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as exc:
        raise DetectorError(f"TensorFlow cannot be imported ({exc}). {hint}".strip()) from None
    return tf


@dataclass(frozen=True)
class Detections:
    """Objects found in one image.

    ``class_ids``: int32[N], 1..80 in ``recommender.classes`` order.
    ``scores``: float32[N] in 0..1.
    ``boxes``: float32[N, 4] as (x1, y1, x2, y2) in pixels of the original image.
    ``masks``: bool[H, W, N] where the backend segments, else None.
    ``class_scores``: float32[81], each class's value over *all* candidates the backend
    considered (before any display threshold): the highest score, or for YOLOv5s the entry's
    aggregation (``aggregate.py``). This is what the vector is built from, so weak evidence
    still counts for ranking while ``boxes`` stay clean for display.
    """

    class_ids: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    class_scores: np.ndarray
    masks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.class_ids.shape[0])

    def scaled(self, sx: float, sy: float) -> Detections:
        """The same detections with boxes in pixels ``sx``/``sy`` times larger (found on a reduced
        copy, reported on the original). Masks cover the reduced copy only, so they are dropped."""
        if sx == 1.0 and sy == 1.0:
            return self
        factors = np.array([sx, sy, sx, sy], dtype=np.float32)
        boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4) * factors
        return Detections(self.class_ids, self.scores, boxes, self.class_scores, None)


# What ``load`` detects once, so the first real photo does not pay for the runtime picking its
# kernels and allocating buffers (several times a normal detection); 640×480 is the most common
# photo shape, so a rectangular-input runtime warms up the shape it will see most.
_WARM_UP_SHAPE = (480, 640, 3)


class Detector(ABC):
    """A COCO object detector. ``detect`` may be called from several threads at once.

    Loading is lazy (first ``detect`` or an explicit ``load``) and happens once, under a lock;
    it includes one warm-up detection.
    """

    def __init__(self, name: str) -> None:
        #: the registry name, stored with every vector the detector produced
        self.name = name
        self._load_lock = threading.Lock()
        self._loaded = False

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        if self._loaded:
            return
        with self._load_lock:
            if not self._loaded:
                self._load()
                self._detect(np.full(_WARM_UP_SHAPE, 114, dtype=np.uint8))
                self._loaded = True

    def detect(self, rgb: np.ndarray) -> Detections:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"detect expects uint8 H×W×3 RGB, got {rgb.dtype} {rgb.shape}")
        self.load()
        return self._detect(rgb)

    @abstractmethod
    def _load(self) -> None:
        """Read weights and build the model; called once."""

    @abstractmethod
    def _detect(self, rgb: np.ndarray) -> Detections:
        """Run the loaded model on one image."""
