"""``NeighborIndex``: the mutable interface the service used before the immutable index.

Kept so callers that add and remove one image at a time (today's service, the evaluation)
work unchanged. Writers are serialised by a lock and publish a new immutable ``Index``;
queries read the current reference and never take the lock. Compaction runs in the writer
that crosses the threshold (the feed follower that replaces this shim runs it off-path).
"""

from __future__ import annotations

import threading

import numpy as np

from .contract import DIM, QueryResult, check_int, check_query_vector
from .core import Index
from .kinds import DEFAULT_KIND, build_index, empty_index


class NeighborIndex:
    def __init__(self, dim: int = DIM, kind: str = DEFAULT_KIND, rebuild_threshold: int = 2048, rebuild_fraction: float = 0.01,
                 **options) -> None:
        if dim != DIM:
            raise ValueError(f"the index holds {DIM}-dimensional points, got dim={dim}")
        self._options = {"compact_min": rebuild_threshold, "compact_fraction": rebuild_fraction, **options}
        self._kind = kind
        self._lock = threading.Lock()
        self._rebuilds = 0
        self.current: Index = empty_index(kind, **self._options)

    @classmethod
    def build(cls, ids, vectors, labels=None, **kw) -> NeighborIndex:
        shim = cls(**kw)
        shim.current = build_index(ids, vectors, labels, shim._kind, **shim._options)
        return shim

    def _apply(self, **changes) -> None:
        with self._lock:
            index = self.current.with_changes(**changes)
            if index.needs_compaction():
                index = index.compacted()
                self._rebuilds += 1
            self.current = index  # one reference assignment: readers see the old or the new

    def add(self, image_id: int, vector, labels=None) -> None:
        """Insert ``image_id``, or replace its vector if it is already indexed."""
        image_id = check_int(image_id, "image id")
        vec = check_query_vector(vector, DIM)
        self._apply(upsert_ids=[image_id], upsert_points=vec[None, :],
                    upsert_labels=None if labels is None else np.asarray(labels, np.uint64).reshape(1, 2))

    def add_many(self, ids, vectors, labels=None) -> None:
        self._apply(upsert_ids=ids, upsert_points=vectors, upsert_labels=labels)

    def remove(self, image_id: int) -> bool:
        """Remove ``image_id``; False if it was not indexed."""
        image_id = check_int(image_id, "image id")
        with self._lock:
            if image_id not in self.current:
                return False
        self._apply(remove_ids=[image_id])
        return True

    def query(self, vector, page: int = 1, per_page: int = 30, exclude_id: int | None = None, **filters) -> QueryResult:
        return self.current.query(vector, page, per_page, exclude_id=exclude_id, **filters)

    def __len__(self) -> int:
        return len(self.current)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self.current

    def stats(self) -> dict:
        return {**self.current.stats(), "rebuilds": self._rebuilds}
