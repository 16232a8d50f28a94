"""Exact paginated nearest neighbours over (image id, point in ranking space, detected classes).

* ``build_index(ids, points, labels, kind="exact")`` → an immutable :class:`Index`
  (``ExactIndex``: uint8 scan with an error bound + exact re-scoring, the default;
  ``BallTreeIndex``: the design's scikit-learn BallTree; ``IVFIndex``: opt-in, approximate,
  faiss IVF for many millions of images). ``with_changes`` returns a new
  index; ``needs_compaction``/``compacted`` fold the changes into a new base.
* ``save_snapshot`` / ``load_snapshot``: the index on disk, memory-mapped when loaded.
* ``NeighborIndex``: a mutable, thread-safe facade (add/remove/query) over the immutable index.

The contract (distance, ties, pages, filters) is in ``contract.py``.
"""

from .contract import (
    DISTANCE_GRID,
    MAX_PER_PAGE,
    QueryResult,
    class_mask,
    distance_keys,
    label_classes,
    labels_from_scores,
    max_key_for,
)
from .core import Index
from .kinds import (
    DEFAULT_KIND,
    EXACT_KINDS,
    KINDS,
    BallTreeIndex,
    ExactIndex,
    IVFIndex,
    build_index,
    empty_index,
    index_class,
    warm_up,
)
from .shim import NeighborIndex
from .snapshot import SnapshotError, load_snapshot, save_snapshot

__all__ = [
    "DEFAULT_KIND",
    "DISTANCE_GRID",
    "EXACT_KINDS",
    "KINDS",
    "MAX_PER_PAGE",
    "BallTreeIndex",
    "ExactIndex",
    "IVFIndex",
    "Index",
    "NeighborIndex",
    "QueryResult",
    "SnapshotError",
    "build_index",
    "class_mask",
    "distance_keys",
    "empty_index",
    "index_class",
    "label_classes",
    "labels_from_scores",
    "load_snapshot",
    "max_key_for",
    "save_snapshot",
    "warm_up",
]
