"""The immutable index: a base searched by a kind-specific engine, a small delta, tombstones.

``Index.build`` makes a base. ``with_changes`` returns a NEW index that shares the base arrays
and the engine and copies only what is small: the sorted tombstone rows of the base and the
delta (recently upserted points, brute-forced exactly). ``self`` is never modified, so queries
on it from other threads need no lock; the owner swaps its reference to the new object.
When the delta and the tombstones grow past ``max(compact_min, compact_fraction * len)``,
``needs_compaction`` says so and ``compacted()`` folds them into a new base (O(n): the caller
runs it off the request path).

Engines (``quantized.QuantizedScan``, ``balltree.BallTreeSearch``) answer one question over
the base rows: ``search(q, k, dead, exclude_row, require, forbid, max_key)`` returns rows that
include the k best eligible rows, their exact keys, and the exact count of eligible rows.
"""

from __future__ import annotations

from numbers import Integral

import numpy as np

from .contract import (
    DIM,
    LABEL_WORDS,
    NO_CLASSES,
    QueryResult,
    check_ids,
    check_labels,
    check_page,
    check_points,
    check_query_vector,
    class_mask,
    make_result,
    max_key_for,
)
from .delta import Delta

_EMPTY_IDS = np.empty(0, dtype=np.int64)


def _private(checked: np.ndarray, given: object) -> np.ndarray:
    if checked is given and not checked.flags.writeable:
        return checked
    return np.array(checked, copy=True)


def _readonly(*arrays: np.ndarray) -> None:
    for a in arrays:
        if a.flags.writeable and a.flags.owndata:
            a.setflags(write=False)


class Index:
    """Exact paginated k-NN over (image id, point, classes); immutable. See the module docstring."""

    kind = "?"
    engine_class: type = type(None)

    def __init__(self, ids, points, labels, engine, sorted_ids, order, options, dead=_EMPTY_IDS, delta=None) -> None:
        self._ids, self._points, self._labels = ids, points, labels
        self._engine = engine
        self._sorted_ids, self._order = sorted_ids, order
        self.options = options
        self._dead = dead  # sorted base rows that are deleted or replaced
        self._delta = Delta.empty() if delta is None else delta

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, ids, points, labels=None, **options) -> Index:
        """An index over ``ids`` (n distinct ints), ``points`` (n×81, ranking space) and
        ``labels`` (uint64 n×2 class bitmasks, optional)."""
        ids = check_ids(ids)
        # The index must not share memory the caller may still write to: copy, unless the
        # caller's array is already read-only (e.g. a memory-mapped file opened with mode "r").
        points = _private(check_points(points, ids.shape[0], DIM), points)
        labels = _private(check_labels(labels, ids.shape[0]), labels)
        return cls._from_base(ids, points, labels, None, options)

    @classmethod
    def _from_base(cls, ids, points, labels, engine_arrays, options, sorted_ids=None, order=None) -> Index:
        if order is None:
            order = np.argsort(ids, kind="stable")
            sorted_ids = ids[order]
        if engine_arrays is None:
            engine = cls.engine_class.build(points, labels, **options)
        else:
            engine = cls.engine_class(points, labels, engine_arrays, **options)
        _readonly(ids, points, labels, sorted_ids, order)
        return cls(ids, points, labels, engine, sorted_ids, order, dict(options))

    def _derive(self, dead: np.ndarray, delta: Delta) -> Index:
        return type(self)(
            self._ids, self._points, self._labels, self._engine, self._sorted_ids, self._order, self.options, dead, delta
        )

    # ------------------------------------------------------------------ lookups

    def _base_rows(self, ids: np.ndarray) -> np.ndarray:
        """Base row of each id if it is live there, else -1."""
        if self._sorted_ids.shape[0] == 0 or ids.shape[0] == 0:
            return np.full(ids.shape[0], -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), self._sorted_ids.shape[0] - 1)
        rows = np.where(self._sorted_ids[pos] == ids, self._order[pos], -1)
        if self._dead.shape[0]:
            at = np.minimum(np.searchsorted(self._dead, rows), self._dead.shape[0] - 1)
            rows = np.where(self._dead[at] == rows, -1, rows)
        return rows.astype(np.int64)

    def __len__(self) -> int:
        return self._ids.shape[0] - self._dead.shape[0] + len(self._delta)

    def __contains__(self, image_id: object) -> bool:
        if isinstance(image_id, bool) or not isinstance(image_id, Integral) or not -(2**63) <= image_id < 2**63:
            return False
        probe = np.array([image_id], np.int64)
        return self._delta.slots(probe)[0] >= 0 or self._base_rows(probe)[0] >= 0

    def stats(self) -> dict[str, int | str]:
        return {
            "kind": self.kind,
            "size": len(self),
            "base": int(self._ids.shape[0]),
            "delta": len(self._delta),
            "tombstones": int(self._dead.shape[0]),
        }

    def ids(self) -> np.ndarray:
        """Every live image id, in no particular order."""
        alive = np.ones(self._ids.shape[0], dtype=bool)
        alive[self._dead] = False
        return np.concatenate([self._ids[alive], self._delta.ids])

    # ------------------------------------------------------------------ changes

    def with_changes(self, upsert_ids=(), upsert_points=None, upsert_labels=None, remove_ids=()) -> Index:
        """A new index with ``remove_ids`` removed, then ``upsert_ids`` inserted or replaced.

        ``self`` is unchanged. Removing an id that is not indexed is a no-op. Within one call
        removals apply first, so an id in both lists ends up indexed with its new point.
        """
        up_ids = check_ids(upsert_ids)
        up_points = check_points(np.zeros((0, DIM)) if upsert_points is None else upsert_points, up_ids.shape[0], DIM)
        up_labels = check_labels(upsert_labels, up_ids.shape[0])
        gone = np.unique(check_ids(remove_ids, allow_duplicates=True))
        touched = np.union1d(gone, up_ids)
        if touched.shape[0] == 0:
            return self
        base_rows = self._base_rows(touched)
        dead = np.union1d(self._dead, base_rows[base_rows >= 0])
        return self._derive(dead.astype(np.int64), self._delta.replaced(touched, up_ids, up_points, up_labels))

    def needs_compaction(self) -> bool:
        pending = len(self._delta) + self._dead.shape[0]
        limit = max(int(self.options.get("compact_min", 2048)), float(self.options.get("compact_fraction", 0.01)) * len(self))
        return pending > limit

    def compacted(self) -> Index:
        """The same contents with the delta and tombstones folded into a new base (O(n))."""
        if len(self._delta) == 0 and self._dead.shape[0] == 0:
            return self
        alive = np.ones(self._ids.shape[0], dtype=bool)
        alive[self._dead] = False
        return type(self)._from_base(
            np.concatenate([self._ids[alive], self._delta.ids]),
            np.ascontiguousarray(np.concatenate([self._points[alive], self._delta.points])),
            np.ascontiguousarray(np.concatenate([self._labels[alive], self._delta.labels])),
            None,
            self.options,
        )

    # ------------------------------------------------------------------ queries

    def query(
        self, q, page=1, per_page=30, *, exclude_id=None, require=None, forbid=None, max_distance=None
    ) -> QueryResult:
        """Page ``page`` (from 1) of the indexed images nearest to ``q`` that pass the filters.

        ``exclude_id`` (the query image) is never returned and not counted in ``total``.
        ``require``/``forbid``: class ids or a uint64[2] mask. ``max_distance``: farther images
        are left out. Any page past the end is empty, however large its number.
        """
        page, per_page = check_page(page, per_page)
        q = check_query_vector(q, DIM)
        require = NO_CLASSES if require is None else class_mask(require)
        forbid = NO_CLASSES if forbid is None else class_mask(forbid)
        max_key = max_key_for(max_distance)
        exclude_row, exclude_slot = -1, -1
        if exclude_id is not None and not isinstance(exclude_id, bool) and isinstance(exclude_id, Integral) \
                and -(2**63) <= exclude_id < 2**63:
            exclude_slot = int(self._delta.slots(np.array([exclude_id], np.int64))[0])
            if exclude_slot < 0:
                exclude_row = int(self._base_rows(np.array([exclude_id], np.int64))[0])
        elif exclude_id is not None:
            raise ValueError(f"exclude_id must be a 64-bit integer, got {exclude_id!r}")
        start = (page - 1) * per_page
        # An upper bound of total; past it, a page is empty and the scan only counts.
        k = start + per_page if start < len(self) else 0
        k = min(k, len(self))
        rows, keys, count = self._engine.search(q, k, self._dead, exclude_row, require, forbid, max_key)
        d_ids, d_keys, d_count = self._delta.search(q, k, exclude_slot, require, forbid, max_key)
        total = count + d_count
        if start >= total:
            return make_result(_EMPTY_IDS, np.empty(0), total, page, per_page, np.empty((0, DIM)), np.empty((0, LABEL_WORDS)))
        ids = np.concatenate([self._ids[rows], d_ids])
        keys = np.concatenate([keys, d_keys])
        order = np.lexsort((ids, keys))[start : start + per_page]
        points, labels = self._stored(rows, ids, order)
        return make_result(ids[order], keys[order], total, page, per_page, points, labels)

    def _stored(self, rows: np.ndarray, ids: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points and labels of the picked candidates: base ``rows`` first in ``ids``, then the delta's."""
        in_base = order < rows.shape[0]
        points = np.empty((order.shape[0], DIM), np.float32)
        labels = np.empty((order.shape[0], LABEL_WORDS), np.uint64)
        base = rows[order[in_base]]
        points[in_base], labels[in_base] = self._points[base], self._labels[base]
        slots = self._delta.slots(ids[order[~in_base]])
        points[~in_base], labels[~in_base] = self._delta.points[slots], self._delta.labels[slots]
        return points, labels
