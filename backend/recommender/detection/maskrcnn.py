"""Mask R-CNN (ResNet-101 FPN, COCO) through pixellib 0.7.1: the reference design's detector.

Only pixellib's network definition and its pre/post-processing are used. Its loading and
prediction entry points are bypassed because of two silent defects:

* ``MaskRCNN.load_weights`` writes through TensorFlow's internal copy of Keras into another
  session than the one that predicts, so predictions come from random weights. Weights are
  loaded with ``keras_model.load_weights(path, by_name=True)`` inside the model's own graph
  and session instead.
* Keras resolves its session per thread, so ``keras_model.predict`` from a worker thread
  finds no graph. The graph, session and tensors captured at load time are run directly.

pixellib is written for Keras 2 and graph mode: ``import tensorflow.keras`` must give tf-keras
(not Keras 3), and it calls ``tf.compat.v1.disable_eager_execution()`` at import, which would
break every other TensorFlow user in the process (the YOLOv5 backend's TensorFlow runner
needs eager mode). ``_import_pixellib`` arranges both for the duration of that one import, so
both backends work in one process whichever imported TensorFlow first.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..classes import CLASS_NAMES, NUM_CLASSES
from .base import Detections, Detector, DetectorError, import_tensorflow
from .weights import WeightsCorruptError, maskrcnn_weights_path

DEFAULT_MIN_CONFIDENCE = 0.7  # the reference design's threshold; its stored vectors used it
DEFAULT_IMAGE_MAX_DIM = 1024  # pixellib's default: images are scaled and padded to 1024×1024
DEFAULT_IMAGE_MIN_DIM = 800

INSTALL_HINT = (
    "Install the Mask R-CNN runtime with `pip install --no-deps -r requirements/maskrcnn.txt` "
    "(pixellib's declared dependencies pull in training-only packages that break on NumPy 2), "
    "or use the default detector yolov5s."
)
WEIGHTS_HINT = "Download mask_rcnn_coco.h5 again with `./get_data.sh --only weights`."

# Layers that every Mask R-CNN weights file has; checked before the slow model build so a
# wrong .h5 fails in milliseconds, not after building the network.
_HEAD_LAYERS = ("conv1", "rpn_model", "mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask")

# The tensorflow.keras modules pixellib imports (mask_rcnn.py, lines 17-25).
_KERAS_SUBMODULES = ("", ".backend", ".layers", ".utils", ".models", ".callbacks")
_TF_KERAS_API = "tf_keras.api._v2.keras"

_import_lock = threading.Lock()
_pixellib: ModuleType | None = None


@dataclass(frozen=True)
class MaskRCNNModel:
    """A built pixellib Mask R-CNN in inference mode, with the graph and session owning it.

    Every use of ``keras_model`` through Keras (saving, loading weights) must happen inside
    ``with graph.as_default(), session.as_default():``.
    """

    graph: Any  # tf.Graph
    session: Any  # tf.compat.v1.Session
    mrcnn: Any  # pixellib.instance.mask_rcnn.MaskRCNN
    keras_model: Any

    def close(self) -> None:
        """Release the session and the weights it holds."""
        self.session.close()


@contextlib.contextmanager
def _legacy_keras_graph_mode_import(tf: ModuleType) -> Iterator[None]:
    """While pixellib imports: ``tensorflow.keras`` is tf-keras and eager mode cannot be disabled.

    ``TF_USE_LEGACY_KERAS=1`` would do the first only if set before anything imported
    TensorFlow, and it would switch every ``tf.keras`` user in the process to Keras 2. Here
    the redirection lasts for this import only; pixellib keeps references to the tf-keras
    modules it imported, so it keeps working after everything is restored. (Another thread
    importing ``tensorflow.keras`` during these few seconds would also get tf-keras.)
    """
    try:
        importlib.import_module("tf_keras")
        replacements = {
            f"tensorflow.keras{suffix}": importlib.import_module(f"{_TF_KERAS_API}{suffix}")
            for suffix in _KERAS_SUBMODULES
        }
    except ImportError as exc:
        raise DetectorError(f"tf-keras (Keras 2) cannot be imported ({exc}). {INSTALL_HINT}") from None

    saved_modules = {name: sys.modules.get(name) for name in replacements}
    saved_keras_attr = tf.__dict__.get("keras")
    compat_v1 = tf.compat.v1
    saved_disable_eager = compat_v1.disable_eager_execution
    sys.modules.update(replacements)
    tf.keras = replacements["tensorflow.keras"]
    compat_v1.disable_eager_execution = lambda: None
    try:
        yield
    finally:
        compat_v1.disable_eager_execution = saved_disable_eager
        if saved_keras_attr is None:
            tf.__dict__.pop("keras", None)
        else:
            tf.keras = saved_keras_attr
        for name, module in saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _import_pixellib() -> ModuleType:
    """``pixellib.instance.mask_rcnn``, imported once per process without side effects."""
    global _pixellib
    with _import_lock:
        if _pixellib is not None:
            return _pixellib
        tf = import_tensorflow(INSTALL_HINT)
        try:
            with _legacy_keras_graph_mode_import(tf), _quiet_tensorflow(tf):
                module = importlib.import_module("pixellib.instance.mask_rcnn")
        except ImportError as exc:
            raise DetectorError(f"pixellib cannot be imported ({exc}). {INSTALL_HINT}") from None
        if not module.KL.__name__.startswith("tf_keras"):
            raise DetectorError(
                "pixellib was imported elsewhere in this process with Keras 3; Mask R-CNN needs "
                "tf-keras (Keras 2). Let the Mask R-CNN backend import pixellib, or set "
                "TF_USE_LEGACY_KERAS=1 before TensorFlow is imported."
            )
        _pixellib = module
        return module


@contextlib.contextmanager
def _quiet_tensorflow(tf: ModuleType) -> Iterator[None]:
    # Building pixellib's graph logs pages of TensorFlow deprecation notices that only concern
    # pixellib's code; they would bury real messages in a user's terminal.
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_model(
    *,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    image_max_dim: int = DEFAULT_IMAGE_MAX_DIM,
    image_min_dim: int = DEFAULT_IMAGE_MIN_DIM,
) -> MaskRCNNModel:
    """Build the COCO Mask R-CNN (81 classes, ResNet-101) in its own graph, weights random.

    Its own graph and session keep it apart from other TensorFlow users of the process and
    from other models built by this function.
    """
    mask_rcnn = _import_pixellib()
    tf = import_tensorflow(INSTALL_HINT)
    from pixellib.instance.config import Config

    # A fresh Config each time: pixellib's own instance_segmentation mutates a module-level one.
    config = Config(
        BACKBONE="resnet101",
        NUM_CLASSES=NUM_CLASSES,
        class_names=list(CLASS_NAMES),
        IMAGES_PER_GPU=1,
        GPU_COUNT=1,
        IMAGE_MAX_DIM=image_max_dim,
        IMAGE_MIN_DIM=image_min_dim,
        IMAGE_RESIZE_MODE="square",
        DETECTION_MIN_CONFIDENCE=min_confidence,
    )
    graph = tf.Graph()
    with graph.as_default():
        session = tf.compat.v1.Session(graph=graph)
        with session.as_default(), _quiet_tensorflow(tf):
            mrcnn = mask_rcnn.MaskRCNN(mode="inference", config=config, model_dir=os.getcwd())
    return MaskRCNNModel(graph=graph, session=session, mrcnn=mrcnn, keras_model=mrcnn.keras_model)


def _layers_in_file(path: Path) -> set[str]:
    """Names of the layers that hold weights in a Keras HDF5 weights file."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            group = handle
            if "layer_names" not in handle.attrs and "model_weights" in handle:
                group = handle["model_weights"]  # a whole saved model, not just its weights
            if "layer_names" not in group.attrs:
                raise WeightsCorruptError(f"{path} is not a Keras weights file (no layer list). {WEIGHTS_HINT}")
            names = {n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]}
            return {name for name in names if name in group and len(group[name].attrs.get("weight_names", ()))}
    except OSError as exc:
        raise WeightsCorruptError(f"{path} cannot be read as HDF5 ({exc}). {WEIGHTS_HINT}") from None


def load_model(
    path: Path,
    *,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    image_max_dim: int = DEFAULT_IMAGE_MAX_DIM,
    image_min_dim: int = DEFAULT_IMAGE_MIN_DIM,
) -> MaskRCNNModel:
    """Build the model and load a Mask R-CNN COCO weights file into the session that predicts."""
    in_file = _layers_in_file(path)
    lacking = [name for name in _HEAD_LAYERS if name not in in_file]
    if lacking:
        raise WeightsCorruptError(
            f"{path} is not a Mask R-CNN weights file: it has no {', '.join(lacking)} layer(s). {WEIGHTS_HINT}"
        )
    model = build_model(min_confidence=min_confidence, image_max_dim=image_max_dim, image_min_dim=image_min_dim)
    try:
        # by_name would silently skip any layer the file lacks and leave it random.
        needed = {layer.name for layer in model.keras_model.layers if layer.weights}
        missing = sorted(needed - in_file)
        if missing:
            raise WeightsCorruptError(
                f"{path} lacks weights for {len(missing)} layer(s) of Mask R-CNN "
                f"(e.g. {', '.join(missing[:5])}). {WEIGHTS_HINT}"
            )
        with model.graph.as_default(), model.session.as_default():
            try:
                model.keras_model.load_weights(str(path), by_name=True)
            except ValueError as exc:
                # Shapes differ, e.g. a Mask R-CNN trained on another number of classes.
                raise WeightsCorruptError(
                    f"{path} does not fit the COCO Mask R-CNN (81 classes, ResNet-101): {exc}"
                ) from None
        # Nothing may add operations from now on: the graph is shared by every calling thread.
        model.graph.finalize()
    except BaseException:
        model.close()
        raise
    return model


class MaskRCNNDetector(Detector):
    """Mask R-CNN COCO through pixellib, with the reference design's settings by default.

    ``min_confidence``: detections below it are dropped inside the network (0.7 made the
    reference vectors). ``image_max_dim``: the side of the square the image is scaled and
    padded to; ``image_min_dim``: the short side is scaled up to it unless the long side would
    exceed ``image_max_dim`` (pixellib's 1024 and 800; default min(800, image_max_dim)).
    Smaller is faster and misses small objects.
    """

    def __init__(
        self,
        weights_dir: str | os.PathLike[str],
        *,
        name: str = "maskrcnn",
        min_confidence: float = DEFAULT_MIN_CONFIDENCE,
        image_max_dim: int = DEFAULT_IMAGE_MAX_DIM,
        image_min_dim: int | None = None,
    ) -> None:
        super().__init__(name)
        if image_min_dim is None:
            image_min_dim = min(DEFAULT_IMAGE_MIN_DIM, image_max_dim)
        if not 0.0 <= min_confidence <= 1.0:
            raise ValueError(f"min_confidence must be within 0..1, got {min_confidence}")
        # The feature pyramid halves the input six times.
        if image_max_dim < 64 or image_max_dim % 64:
            raise ValueError(f"image_max_dim must be a positive multiple of 64, got {image_max_dim}")
        if not 0 < image_min_dim <= image_max_dim:
            raise ValueError(f"image_min_dim must be within 1..image_max_dim, got {image_min_dim}")
        self.weights_dir = Path(weights_dir)
        self.min_confidence = float(min_confidence)
        self.image_max_dim = int(image_max_dim)
        self.image_min_dim = int(image_min_dim)
        self._model: MaskRCNNModel | None = None
        self._anchors: np.ndarray | None = None
        self._inputs: tuple[Any, ...] = ()
        self._fetches: tuple[Any, ...] = ()
        # One image already keeps every core busy; running images one at a time bounds
        # memory (activations of a 1024×1024 pass are large) at no loss of throughput.
        self._run_lock = threading.Lock()

    def _load(self) -> None:
        path = maskrcnn_weights_path(self.weights_dir)
        model = load_model(
            path,
            min_confidence=self.min_confidence,
            image_max_dim=self.image_max_dim,
            image_min_dim=self.image_min_dim,
        )
        # "square" mode always feeds a max_dim × max_dim image, so the anchors never change.
        shape = (self.image_max_dim, self.image_max_dim, 3)
        self._anchors = model.mrcnn.get_anchors(shape)[np.newaxis]
        inputs = model.keras_model.inputs
        outputs = model.keras_model.outputs
        self._inputs = (inputs[0], inputs[1], inputs[2])  # image, image_meta, anchors
        self._fetches = (outputs[0], outputs[3])  # detections, mrcnn_mask
        self._model = model

    def close(self) -> None:
        """Free the model's memory (about 2 GB at 1024); a later ``detect`` loads it again.

        Waits for a running image; do not call it while other threads still submit images.
        """
        with self._load_lock, self._run_lock:
            model, self._model = self._model, None
            self._loaded = False
        if model is not None:
            model.close()

    def _detect(self, rgb: np.ndarray) -> Detections:
        model = self._model
        if model is None or self._anchors is None:
            raise DetectorError("the Mask R-CNN detector was closed while an image was being submitted")
        mrcnn = model.mrcnn
        molded, metas, windows = mrcnn.mold_inputs([rgb])
        feed = dict(zip(self._inputs, (molded, metas, self._anchors)))
        with self._run_lock:
            detections, mrcnn_mask = model.session.run(self._fetches, feed_dict=feed)
        rois, class_ids, scores, masks = mrcnn.unmold_detections(
            detections[0], mrcnn_mask[0], rgb.shape, molded[0].shape, windows[0]
        )
        return _to_detections(rois, class_ids, scores, masks, rgb.shape[:2])


def _to_detections(
    rois: np.ndarray, class_ids: np.ndarray, scores: np.ndarray, masks: np.ndarray, size: tuple[int, int]
) -> Detections:
    """pixellib's (y1, x1, y2, x2) boxes and H×W×N masks → the backend-neutral Detections."""
    height, width = size
    boxes = np.asarray(rois, dtype=np.float32).reshape(-1, 4)[:, [1, 0, 3, 2]]
    # pixellib rounds to the pixel grid after clipping to the image; keep that guarantee exact.
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    class_ids = np.asarray(class_ids, dtype=np.int32).reshape(-1)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    class_scores = np.zeros(NUM_CLASSES, dtype=np.float32)
    np.maximum.at(class_scores, class_ids, scores)
    masks = np.asarray(masks).astype(bool, copy=False).reshape(height, width, -1)
    return Detections(class_ids=class_ids, scores=scores, boxes=boxes, class_scores=class_scores, masks=masks)
