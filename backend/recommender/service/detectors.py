"""The detectors a process has loaded, and the bound on detections running at once."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from ..detection import Detections, Detector, DetectorError
from .errors import Busy, DetectorUnavailable, InvalidRequest


class Detectors:
    """Detectors by registry name, each created once; at most ``slots`` detections at a time.

    A burst of requests queues for a slot (up to ``wait`` seconds, then Busy) instead of
    oversubscribing the cores: two detections on two cores finish sooner than eight.
    """

    def __init__(self, factory: Callable[[str], Detector], *, slots: int, wait: float | None = 120.0) -> None:
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self._factory = factory
        self._slots = threading.BoundedSemaphore(slots)
        self._wait = wait
        self._lock = threading.Lock()
        self._made: dict[str, Detector] = {}
        self.slots = slots

    def get(self, name: str) -> Detector:
        with self._lock:
            detector = self._made.get(name)
            if detector is None:
                try:
                    detector = self._factory(name)
                except DetectorError as exc:
                    raise InvalidRequest(str(exc)) from exc
                self._made[name] = detector
            return detector

    def load(self, name: str) -> Detector:
        """The detector with its weights loaded (and warmed up), or DetectorUnavailable saying why not."""
        detector = self.get(name)
        try:
            detector.load()
        except DetectorError as exc:
            raise DetectorUnavailable(str(exc)) from exc
        return detector

    def detect(self, name: str, rgb: np.ndarray) -> Detections:
        detector = self.load(name)
        if not self._slots.acquire(timeout=self._wait):
            raise Busy("the server is busy detecting objects in other images; try again shortly")
        try:
            return detector.detect(rgb)
        except DetectorError as exc:
            raise DetectorUnavailable(str(exc)) from exc
        finally:
            self._slots.release()
