"""Object detectors behind one interface. Backends import their heavy runtimes lazily."""

from __future__ import annotations

from .base import Detections, Detector, DetectorError, WeightsMissingError
from .registry import CHOICES, DETECTOR_NAMES, SPECS, DetectorSpec, create_detector, lookup, resolve

__all__ = [
    "CHOICES",
    "DETECTOR_NAMES",
    "SPECS",
    "Detections",
    "Detector",
    "DetectorError",
    "DetectorSpec",
    "WeightsMissingError",
    "create_detector",
    "lookup",
    "resolve",
]
