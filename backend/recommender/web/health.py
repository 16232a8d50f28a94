"""/healthz answers within a fraction of a second, even while the database does not.

The check (collection status: a count and the feed head) runs in a thread of its own; the
request waits for it at most ``wait`` seconds. A check still running after that means the
database is not answering, which is exactly what a health check must report, promptly. Only
one check runs at a time, so a stuck database costs one thread, not one per health request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Generic, TypeVar

T = TypeVar("T")


class Stalled(Exception):
    """The check has not finished: the database has not answered for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"the database has not answered for {seconds:.1f} s")
        self.seconds = seconds


class HealthProbe(Generic[T]):
    def __init__(self, check: Callable[[], T], *, wait: float = 0.5) -> None:
        self._check = check
        self.wait = wait
        self._lock = threading.Lock()
        self._pending: Future[T] | None = None
        self._started = 0.0

    def run(self) -> T:
        """The check's result (or its exception), or Stalled when it takes longer than ``wait``."""
        with self._lock:
            if self._pending is None or self._pending.done():
                self._pending, self._started = Future(), time.monotonic()
                threading.Thread(target=self._work, args=(self._pending,), name="health-check", daemon=True).start()
            pending, started = self._pending, self._started
        try:
            return pending.result(timeout=self.wait)
        except FutureTimeout:
            raise Stalled(time.monotonic() - started) from None

    def _work(self, future: Future[T]) -> None:
        try:
            future.set_result(self._check())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request as is
            future.set_exception(exc)
