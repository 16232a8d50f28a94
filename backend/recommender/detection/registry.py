"""The one table of detectors: each name, the model behind it, its profile and its options.

A detector has exactly one name. It is the value of the DETECTOR setting and of ``--detector``,
it is stored with every vector and detection the detector produced, and it is what the API
reports. Two entries that could produce different vectors have different names, so vectors of
different models or profiles never mix in one index.

``DETECTOR`` may name a model (``yolov5s``), completed by ``DETECT_PROFILE``, or a full name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .base import Detector, DetectorError

DEFAULT_PROFILE = "balanced"


@dataclass(frozen=True)
class DetectorSpec:
    name: str
    model: str
    profile: str
    description: str
    # Constructor options of the backend, fixed per entry (never patched after construction).
    options: Mapping[str, Any] = field(default_factory=dict)
    # Whether the backend takes a ``threads`` option (runtime threads per detection).
    threaded: bool = False


def _yolov5(weights_dir: Path, spec: DetectorSpec, threads: int | None, box_threshold: float | None) -> Detector:
    from .yolov5 import YoloV5Detector

    extra = {} if box_threshold is None else {"score_threshold": box_threshold}
    return YoloV5Detector(weights_dir, name=spec.name, threads=threads, **{**spec.options, **extra})


def _maskrcnn(weights_dir: Path, spec: DetectorSpec, threads: int | None, box_threshold: float | None) -> Detector:
    from .maskrcnn import MaskRCNNDetector

    extra = {} if box_threshold is None else {"min_confidence": box_threshold}
    return MaskRCNNDetector(weights_dir, name=spec.name, **{**spec.options, **extra})


_BUILDERS: dict[str, Callable[[Path, DetectorSpec, int | None, float | None], Detector]] = {
    "yolov5s": _yolov5,
    "maskrcnn": _maskrcnn,
}

_SPECS = (
    DetectorSpec(
        "yolov5s",
        "yolov5s",
        "balanced",
        "YOLOv5s (COCO) on ONNX Runtime, input 640, class value = best candidate score",
        threaded=True,
    ),
    DetectorSpec("maskrcnn", "maskrcnn", "balanced", "Mask R-CNN (COCO) through pixellib, the reference design"),
)

SPECS: Mapping[str, DetectorSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
MODELS: tuple[str, ...] = tuple(dict.fromkeys(spec.model for spec in _SPECS))
PROFILES: tuple[str, ...] = tuple(dict.fromkeys(spec.profile for spec in _SPECS))
DETECTOR_NAMES: tuple[str, ...] = tuple(SPECS)
# Names older versions stored; migration 0002 renames them in the database.
RENAMED = MappingProxyType({"maskrcnn-coco": "maskrcnn"})


def resolve(detector: str, profile: str = DEFAULT_PROFILE) -> DetectorSpec:
    """The entry for a full name, or for a model name plus a profile."""
    if detector in SPECS:
        return SPECS[detector]
    if detector in MODELS:
        for spec in _SPECS:
            if spec.model == detector and spec.profile == profile:
                return spec
        offered = ", ".join(s.profile for s in _SPECS if s.model == detector)
        raise DetectorError(f"detector {detector} has no profile {profile!r} (it offers: {offered})")
    raise DetectorError(f"unknown detector {detector!r}: choose one of {', '.join(DETECTOR_NAMES)}")


def create_detector(
    spec: DetectorSpec | str, weights_dir: str | Path, *, threads: int | None = None, box_threshold: float | None = None
) -> Detector:
    """A not-yet-loaded detector.

    ``threads``: runtime threads per detection, where the backend has them. ``box_threshold``:
    the lowest score of a returned box (default: the backend's display threshold). Mask R-CNN
    builds its vector from its boxes, so only ``recommender detect``, which stores nothing,
    changes it.
    """
    if isinstance(spec, str):
        spec = resolve(spec)
    return _BUILDERS[spec.model](Path(weights_dir), spec, threads if spec.threaded else None, box_threshold)
