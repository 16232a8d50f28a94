"""The one table of detectors: each name, the model behind it, its profile and its options.

A detector has exactly one name. It is the value of the DETECTOR setting and of ``--detector``,
it is stored with every vector and detection the detector produced, and it is what the API
reports. Two entries that could produce different vectors have different names, so vectors of
different models or profiles never mix in one index.

``DETECTOR`` may name a model (``yolov5s``), completed by ``DETECT_PROFILE``, or a full name.
A model name always goes through the profile, even where it is also the stored name of an
older entry: ``yolov5s`` alone was the name of today's ``legacy`` entry (class value = best
candidate score) before the aggregation became part of the name. Collections holding those
vectors keep being served by that entry (``lookup``) until ``recommender reindex --detector
yolov5s --activate`` moves them to the profile's entry.

Each entry carries the calibration constants (a, b) its class values were fitted with
(``bench/aggregation.py``): the ranking and the object search of its vectors use them.
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
    # How box evidence becomes a class value (detection/aggregate.py); shown by ``recommender eval``.
    aggregation: str = "max"
    # Score calibration logit p = a + b·logit s (vectors.py) fitted to this entry's class values.
    calibration: tuple[float, float] = (1.75, 1.3)
    # Still served for collections that hold its vectors, no longer chosen for new ones.
    superseded: bool = False


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


def _yolov5s(profile: str, description: str, calibration: tuple[float, float], **options: Any) -> DetectorSpec:
    """A YOLOv5s entry with noisy-OR class values; its name says the profile and the aggregation."""
    return DetectorSpec(f"yolov5s-{profile}-noisy-or", "yolov5s", profile, f"YOLOv5s (COCO) on ONNX Runtime, {description}",
                        {"aggregation": "noisy-or", **options}, threaded=True, aggregation="noisy-or",
                        calibration=calibration)


# Calibrations: chosen on coco_dev by bench/aggregation.py, each kept a positive split-half gain.
_SPECS = (
    _yolov5s("balanced", "input 640, class value = noisy-OR of the class's boxes after NMS", (1.0, 1.3)),
    _yolov5s("quality", "inputs 640 and 832 and their mirror images (4 passes averaged), noisy-OR", (1.25, 1.45),
             passes=((640, True), (832, False), (832, True))),
    # The stored name of every YOLOv5s vector before aggregations had names.
    DetectorSpec(
        "yolov5s",
        "yolov5s",
        "legacy",
        "YOLOv5s (COCO) on ONNX Runtime, input 640, class value = best candidate score (superseded by balanced)",
        threaded=True,
        superseded=True,
    ),
    DetectorSpec("maskrcnn", "maskrcnn", "balanced", "Mask R-CNN (COCO) through pixellib, the reference design"),
)

SPECS: Mapping[str, DetectorSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
MODELS: tuple[str, ...] = tuple(dict.fromkeys(spec.model for spec in _SPECS))
PROFILES: tuple[str, ...] = tuple(dict.fromkeys(spec.profile for spec in _SPECS))
DETECTOR_NAMES: tuple[str, ...] = tuple(SPECS)
# What DETECTOR and --detector accept: the model names (completed by the profile) and full names.
CHOICES: tuple[str, ...] = tuple(dict.fromkeys(MODELS + DETECTOR_NAMES))
# Names older versions stored; migration 0002 renames them in the database.
RENAMED = MappingProxyType({"maskrcnn-coco": "maskrcnn"})


def resolve(detector: str, profile: str = DEFAULT_PROFILE) -> DetectorSpec:
    """The entry a setting names: a model name plus a profile, or a full name."""
    if detector in MODELS:
        for spec in _SPECS:
            if spec.model == detector and spec.profile == profile:
                return spec
        offered = ", ".join(s.profile for s in _SPECS if s.model == detector)
        raise DetectorError(f"detector {detector} has no profile {profile!r} (it offers: {offered})")
    if detector in SPECS:
        return SPECS[detector]
    raise DetectorError(f"unknown detector {detector!r}: choose one of {', '.join(CHOICES)}")


def lookup(name: str) -> DetectorSpec:
    """The entry of a stored detector name (exact: never completed by a profile)."""
    try:
        return SPECS[name]
    except KeyError:
        raise DetectorError(f"unknown detector {name!r}: choose one of {', '.join(DETECTOR_NAMES)}") from None


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
        spec = lookup(spec)
    return _BUILDERS[spec.model](Path(weights_dir), spec, threads if spec.threaded else None, box_threshold)
