"""Admission control for uploads, so a burst of them cannot take every request thread.

The service already lets only ``detect_workers`` detections run at once; the others wait on
it. Waiting uploads still hold a server thread each, so without a bound a burst of uploads
would leave no thread for the cheap requests (similar pages, thumbnails). The gate admits at
most ``limit`` uploads at a time (running or waiting) and turns the rest away with 503 and
Retry-After, which the page shows as "busy, try again".
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from .errors import ApiError


class UploadGate:
    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the upload limit must be at least 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise ApiError(
                503,
                "busy",
                "The server is busy analysing other photos; try again in a few seconds.",
                {"Retry-After": "5"},
            )
        try:
            yield
        finally:
            self._slots.release()
