"""The design's scikit-learn BallTree as an engine (``kind="balltree"``), same pages as the default.

The tree only nominates candidates; the radius it searches is widened by a margin that covers
its rounding error and the 2**-32 grid, so nothing that belongs in the page can be missed,
and every candidate is re-scored with ``distance_keys``.

Filtered queries (classes or ``max_distance``) do not use the tree's order: they re-score every
base row that passes the class filter (inside the tree's radius for ``max_distance``), which is
exact and O(rows that pass). The default engine filters inside its scan instead.

The tree keeps its own float64 copy of the points (648 bytes per image) and is rebuilt, never
memory-mapped, when a snapshot is loaded.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.neighbors import BallTree

from .contract import DISTANCE_GRID, distance_keys, label_filter

# Relative error allowed for distances computed by BallTree: about D * 2**-53; 1e-9 leaves room.
_REL_TOL = 1e-9
# Absolute slack: the grid rounding (half a step each way) plus cancellation.
_ABS_TOL = 2 * DISTANCE_GRID + 1e-12


class BallTreeSearch:
    kind = "balltree"

    def __init__(self, points: np.ndarray, labels: np.ndarray, arrays: dict | None = None, leaf_size: int = 40, **_) -> None:
        self.points, self.labels = points, labels
        self.tree = BallTree(points.astype(np.float64), leaf_size=leaf_size) if points.shape[0] else None

    @classmethod
    def build(cls, points: np.ndarray, labels: np.ndarray, **options) -> BallTreeSearch:
        return cls(points, labels, None, **options)

    def arrays(self) -> dict[str, np.ndarray]:
        return {}

    def _alive(self, rows: np.ndarray, dead: np.ndarray, exclude_row: int) -> np.ndarray:
        alive = rows != exclude_row
        if dead.shape[0]:
            alive &= ~np.isin(rows, dead)
        return alive

    def search(self, q, k, dead, exclude_row, require, forbid, max_key):
        n = self.points.shape[0]
        if n == 0:
            return np.empty(0, np.int64), np.empty(0), 0
        if require.any() or forbid.any() or max_key != math.inf or k == 0:
            return self._filtered(q, k, dead, exclude_row, require, forbid, max_key)
        eligible = n - dead.shape[0] - int(exclude_row >= 0)  # exclude_row is a live row or -1
        k_base = min(k, eligible)
        if k_base <= 0:
            return np.empty(0, np.int64), np.empty(0), eligible
        q2 = q[None, :]
        k_tree = min(n, k_base + int(exclude_row >= 0) + min(dead.shape[0], k_base))
        while True:
            dist, rows = self.tree.query(q2, k=k_tree)
            dist, rows = dist[0], rows[0]
            alive = self._alive(rows, dead, exclude_row)
            if int(alive.sum()) >= k_base or k_tree == n:
                break
            k_tree = min(n, 2 * k_tree)  # tombstones crowd the neighbourhood: widen
        # The k-th nearest live row has tree distance r; anything that can tie with or beat
        # it on the grid has tree distance <= radius. Fetching all of them captures the whole
        # tie group at the page boundary, which the tree would otherwise cut arbitrarily.
        r = float(dist[alive][k_base - 1])
        radius = math.sqrt(r * r * (1 + _REL_TOL) ** 2 + _ABS_TOL) * (1 + _REL_TOL)
        if k_tree < n and dist[-1] <= radius:
            rows = self.tree.query_radius(q2, r=radius)[0]
            alive = self._alive(rows, dead, exclude_row)
        else:
            alive &= dist <= radius
        rows = rows[alive]
        return rows, distance_keys(self.points[rows], q), eligible

    def _filtered(self, q, k, dead, exclude_row, require, forbid, max_key):
        if max_key != math.inf:
            if max_key < 0:
                return np.empty(0, np.int64), np.empty(0), 0
            radius = math.sqrt((max_key * DISTANCE_GRID + _ABS_TOL) * (1 + _REL_TOL) ** 2) * (1 + _REL_TOL)
            rows = np.sort(self.tree.query_radius(q[None, :], r=radius)[0]).astype(np.int64)
        else:
            rows = np.arange(self.points.shape[0], dtype=np.int64)
        rows = rows[self._alive(rows, dead, exclude_row)]
        rows = rows[label_filter(self.labels[rows], require, forbid)]
        keys = distance_keys(self.points[rows], q)
        within = keys <= max_key
        rows, keys = rows[within], keys[within]
        count = int(rows.shape[0])
        if 0 < k < count:
            near = keys <= np.partition(keys, k - 1)[k - 1]
            rows, keys = rows[near], keys[near]
        elif k == 0:
            rows, keys = rows[:0], keys[:0]
        return rows, keys, count
