"""The delta: points upserted since the base was built, searched by brute force.

It stays small (compaction folds it into the base), and every ``with_changes`` copies it, so
it is kept as plain arrays: no per-entry Python objects. A query computes all its squared
distances with one float32 matrix-vector product, bounds that product's rounding error, and
re-scores exactly (``distance_keys``) only the entries that can reach the page or that sit on
the ``max_distance`` cut-off.
"""

from __future__ import annotations

import numpy as np

from .contract import DIM, DISTANCE_GRID, LABEL_WORDS, distance_keys, label_filter

_EPS32 = 2.0**-24
_EMPTY = np.empty(0, dtype=np.int64)


class Delta:
    def __init__(self, ids: np.ndarray, points: np.ndarray, labels: np.ndarray) -> None:
        self.ids, self.points, self.labels = ids, points, labels
        self.norms = np.einsum("ij,ij->i", points, points, dtype=np.float64)
        self._order = np.argsort(ids, kind="stable")
        self._sorted = ids[self._order]

    @classmethod
    def empty(cls) -> Delta:
        return cls(_EMPTY, np.empty((0, DIM), np.float32), np.empty((0, LABEL_WORDS), np.uint64))

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def slots(self, ids: np.ndarray) -> np.ndarray:
        """Position of each id in the delta, or -1."""
        if self._sorted.shape[0] == 0 or ids.shape[0] == 0:
            return np.full(ids.shape[0], -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, ids), self._sorted.shape[0] - 1)
        return np.where(self._sorted[pos] == ids, self._order[pos], -1).astype(np.int64)

    def replaced(self, drop_ids: np.ndarray, ids: np.ndarray, points: np.ndarray, labels: np.ndarray) -> Delta:
        """A new delta without ``drop_ids``, with (ids, points, labels) appended."""
        keep = ~np.isin(self.ids, drop_ids)
        return Delta(
            np.concatenate([self.ids[keep], ids]),
            np.concatenate([self.points[keep], points]),
            np.concatenate([self.labels[keep], labels]),
        )

    def search(self, q, k, exclude_slot, require, forbid, max_key):
        """(ids, exact keys, count) of the eligible entries; ids include the k best."""
        m = self.ids.shape[0]
        if m == 0:
            return _EMPTY, np.empty(0), 0
        approx = self.norms - 2.0 * (self.points @ q.astype(np.float32)).astype(np.float64) + float(q @ q)
        # float32 products and sums (any order), |q|² and |x|² in float64, the 2**-32 grid.
        bound = 4 * (DIM + 2) * _EPS32 * (float(self.norms.max()) + float(np.abs(q).sum()) + 1.0) + 2 * DISTANCE_GRID
        ok = label_filter(self.labels, require, forbid) if (require.any() or forbid.any()) else np.ones(m, bool)
        if exclude_slot >= 0:
            ok[exclude_slot] = False
        count = 0
        if max_key != np.inf:
            limit = max_key * DISTANCE_GRID
            ok &= approx - bound <= limit
            unsure = np.flatnonzero(ok & (approx + bound > limit))
            if unsure.shape[0]:
                ok[unsure[distance_keys(self.points[unsure], q) > max_key]] = False
        count = int(ok.sum())
        if k == 0 or count == 0:
            return _EMPTY, np.empty(0), count
        rows = np.flatnonzero(ok)
        if rows.shape[0] > k:
            upper = approx[rows] + bound
            rows = rows[approx[rows] - bound <= np.partition(upper, k - 1)[k - 1]]
        return self.ids[rows], distance_keys(self.points[rows], q), count
