"""Admission control for uploads, so a burst of them cannot take every request thread.

The service already lets only ``detect_workers`` detections run at once; the others wait on
it. Waiting uploads still hold a server thread each, so without a bound a burst of uploads
would leave no thread for the cheap requests (similar pages, thumbnails). The gate admits at
most ``limit`` uploads at a time (running, or waiting for a detection slot). Another upload
waits for its turn up to ``wait`` seconds, since a person uploading a photo would rather wait
a moment than be refused; only then is it answered 503 with Retry-After, which the page shows
as "busy, try again". Its request thread waits meanwhile, so ``limit`` stays well below the
server's threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from .errors import ApiError


class UploadGate:
    def __init__(self, limit: int, *, wait: float = 10.0, queue: int | None = None) -> None:
        if limit < 1:
            raise ValueError(f"the upload limit must be at least 1, got {limit}")
        if wait < 0:
            raise ValueError(f"the wait must not be negative, got {wait}")
        self.limit = limit
        self.wait = wait
        self.queue = limit if queue is None else queue  # uploads allowed to wait at once
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._waiting = 0

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False) and not self._wait_for_slot():
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

    def _wait_for_slot(self) -> bool:
        with self._lock:
            if self._waiting >= self.queue:
                return False  # a full queue: waiting too would only take another request thread
            self._waiting += 1
        try:
            return self._slots.acquire(timeout=self.wait)
        finally:
            with self._lock:
                self._waiting -= 1
