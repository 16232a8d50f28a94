"""Object detectors behind one interface. Backends import their heavy runtimes lazily."""

from __future__ import annotations

from pathlib import Path

from .base import Detections, Detector, DetectorError, WeightsMissingError

__all__ = ["Detections", "Detector", "DetectorError", "WeightsMissingError", "create_detector"]


def create_detector(name: str, weights_dir: Path) -> Detector:
    """A not-yet-loaded detector of the given setting name (``yolov5s`` or ``maskrcnn``)."""
    if name == "yolov5s":
        from .yolov5 import YoloV5Detector

        return YoloV5Detector(weights_dir)
    if name == "maskrcnn":
        from .maskrcnn import MaskRCNNDetector

        return MaskRCNNDetector(weights_dir)
    raise DetectorError(f"unknown detector {name!r}: choose yolov5s or maskrcnn")
