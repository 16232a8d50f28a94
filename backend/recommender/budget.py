"""A memory budget for decoding, counted in pixels, shared by every thread of a process.

A 46 KB PNG can hold 49 megapixels: a few of those decoded at once take gigabytes. Each decode
takes as many pixels from the budget as it is about to decode (after any reduced-size decoding
the format offers) and gives them back when it is done; a decode that does not fit waits. One
decode larger than the whole budget waits for the budget to be empty and then runs alone, so
the budget bounds memory without ever refusing a picture the pixel limit allows.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class PixelBudget:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"the pixel budget must be positive, got {capacity}")
        self.capacity = capacity
        self._used = 0
        self._changed = threading.Condition()

    @property
    def used(self) -> int:
        return self._used

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Wait until ``pixels`` fit in the budget, and keep them while the block runs."""
        share = max(0, min(int(pixels), self.capacity))
        with self._changed:
            # First come is not first served: a small decode may pass a big one that waits, which
            # keeps ordinary photos flowing while a huge one waits for room.
            self._changed.wait_for(lambda: self._used + share <= self.capacity)
            self._used += share
        try:
            yield
        finally:
            with self._changed:
                self._used -= share
                self._changed.notify_all()
