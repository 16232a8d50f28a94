"""Object detectors behind one interface. Backends import their heavy runtimes lazily."""

from __future__ import annotations

from .base import Detections, Detector, DetectorError, WeightsMissingError
from .registry import DETECTOR_NAMES, SPECS, DetectorSpec, create_detector, resolve

__all__ = [
    "DETECTOR_NAMES",
    "SPECS",
    "Detections",
    "Detector",
    "DetectorError",
    "DetectorSpec",
    "WeightsMissingError",
    "create_detector",
    "resolve",
]
