"""Exact nearest neighbours over (image id, vector) pairs, with cheap inserts and deletes.

Vectors handed to the index are already in ranking space (the caller applies
``recommender.vectors.ranking_transform``); the index ranks by Euclidean distance.

Definition of distance and of ties (what "equal to brute force" means here)
--------------------------------------------------------------------------
BallTree, NumPy matrix products and a plain loop can disagree in the last bit, which would
make "ties broken by image id" depend on which code path found a candidate. So the final
ranking never uses a distance that a search structure computed. Every candidate is re-scored
with one fixed formula (:func:`distance_keys`):

* ``d2 = sum_j (x[j] - q[j]) ** 2``, accumulated in float64 strictly left to right over
  ``j = 0..D-1`` (a cumulative sum, never a pairwise/SIMD reduction or BLAS), so the value
  depends only on the two vectors, not on batch size, memory alignment or the BLAS build;
* ``key = rint(d2 * 2**32)``: squared distances are compared on a grid of 2**-32 (about
  2.3e-10), so neighbours that are equidistant in exact arithmetic (e.g. permuted class
  scores) tie instead of being split by rounding noise;
* results are sorted by ``(key, image id)``; the reported distance is ``sqrt(key * 2**-32)``,
  so equal reported distances are exactly the ties, listed by increasing id.

The BallTree and the brute-forced delta only nominate candidates; the radius they search is
widened by a margin that provably covers their rounding error and the grid, so nothing that
belongs in the requested page can be missed (see ``_base_candidates``).

Storage: vectors are kept as C-contiguous float64. BallTree computes in float64 anyway and
then keeps a reference to our array instead of a second copy, and float64 makes the re-scoring
above exact with respect to the values the caller gave (float32 input converts losslessly).

Updates: a BallTree over a *base* set, a brute-forced *delta* buffer of recent inserts and a
tombstone mask over the base. When ``len(delta) + tombstones`` exceeds
``max(rebuild_threshold, rebuild_fraction * len(index))`` the tree is rebuilt from the live
vectors. The tree is built outside the lock by the thread whose update crossed the threshold
(only the O(n) copy of the live vectors is taken under it); concurrent updates are journalled
and replayed onto the new base, so queries and other updates never wait for a tree build.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from numbers import Integral

import numpy as np
from sklearn.neighbors import BallTree

__all__ = ["NeighborIndex", "QueryResult", "distance_keys", "MAX_PER_PAGE", "DISTANCE_GRID"]

MAX_PER_PAGE = 100
# Squared distances are compared on this grid (a power of two, so scaling is exact).
DISTANCE_GRID = 2.0**-32
_INV_GRID = 2.0**32
# Relative error allowed for distances computed by BallTree or by NumPy reductions: their
# rounding error is ~D * 2**-53 (about 1e-14 for D = 81); 1e-9 leaves a wide safety margin.
_REL_TOL = 1e-9
# Absolute slack: the grid rounding (half a step each way) plus cancellation in |x|^2 - 2x.q.
_ABS_TOL = 2 * DISTANCE_GRID + 1e-12


def distance_keys(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Integer-valued float64 ranking keys of ``vectors`` (m×D) against ``query`` (D,).

    ``key = rint(sum_j (x[j] - q[j])**2 * 2**32)`` with the sum accumulated in column order,
    the one definition of distance the index ranks by (see the module docstring).
    """
    squares = np.asarray(vectors, dtype=np.float64) - np.asarray(query, dtype=np.float64)
    np.multiply(squares, squares, out=squares)
    # A cumulative sum is a strictly left-to-right recurrence, unlike ``sum``, whose pairwise
    # and SIMD reassociation can depend on the array's shape and alignment.
    acc = np.cumsum(squares, axis=1)[:, -1] if squares.shape[0] else np.zeros(0)
    acc *= _INV_GRID
    return np.rint(acc, out=acc)


def _keys_to_distances(keys: np.ndarray) -> np.ndarray:
    return np.sqrt(keys * DISTANCE_GRID)


@dataclass(frozen=True, eq=False)
class QueryResult:
    """One page of neighbours, nearest first (ties by increasing image id).

    ``total`` counts every image the query ranks (the indexed images minus the excluded one),
    independent of the page; a page past the end has empty ``ids`` and the same ``total``.
    """

    ids: np.ndarray  # int64
    distances: np.ndarray  # float64, non-decreasing
    total: int
    page: int
    per_page: int

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{what} {value} does not fit in a 64-bit integer")
    return value


class NeighborIndex:
    """Exact k-NN over (image id, vector) pairs; thread-safe; see the module docstring."""

    def __init__(self, dim: int = 81, rebuild_threshold: int = 1024, rebuild_fraction: float = 0.1) -> None:
        dim = _check_int(dim, "dim")
        if dim < 1:
            raise ValueError(f"dim must be at least 1, got {dim}")
        rebuild_threshold = _check_int(rebuild_threshold, "rebuild_threshold")
        if rebuild_threshold < 1:
            raise ValueError(f"rebuild_threshold must be at least 1, got {rebuild_threshold}")
        if not (0.0 <= float(rebuild_fraction) <= 1.0):
            raise ValueError(f"rebuild_fraction must be between 0 and 1, got {rebuild_fraction!r}")
        self.dim = dim
        self.rebuild_threshold = rebuild_threshold
        self.rebuild_fraction = float(rebuild_fraction)
        self._lock = threading.Lock()
        self._rebuilds = 0
        self._rebuilding = False
        # Updates made while a rebuild runs, replayed onto the new base when it is installed.
        self._journal: list[tuple[str, np.ndarray, np.ndarray | None]] | None = None
        self._install_base(np.empty(0, dtype=np.int64), np.empty((0, dim), dtype=np.float64), None)
        self._reset_delta()

    # ------------------------------------------------------------------ construction

    @classmethod
    def build(cls, ids, vectors, **kw) -> NeighborIndex:
        """An index over ``ids`` (n distinct ints) and ``vectors`` (n×dim), with its tree built."""
        index = cls(**kw)
        ids_arr, vecs = index._check_batch(ids, vectors)
        vecs = np.array(vecs, dtype=np.float64, order="C", copy=True)
        index._install_base(ids_arr.copy(), vecs, index._build_tree(vecs))
        return index

    def _build_tree(self, vectors: np.ndarray) -> BallTree | None:
        return BallTree(vectors) if vectors.shape[0] else None

    def _install_base(self, ids: np.ndarray, vectors: np.ndarray, tree: BallTree | None) -> None:
        self._base_ids = ids
        self._base_vecs = vectors
        self._tree = tree
        self._base_order = np.argsort(ids, kind="stable")
        self._base_sorted_ids = ids[self._base_order]
        self._base_dead = np.zeros(ids.shape[0], dtype=bool)
        self._n_dead = 0

    def _reset_delta(self, capacity: int = 64) -> None:
        self._delta_ids = np.empty(capacity, dtype=np.int64)
        self._delta_vecs = np.empty((capacity, self.dim), dtype=np.float64)
        self._delta_size = 0
        self._delta_slot: dict[int, int] = {}

    # ------------------------------------------------------------------ validation

    def _check_vector(self, vector) -> np.ndarray:
        try:
            vec = np.asarray(vector, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"vector must be numeric with shape ({self.dim},): {exc}") from None
        if vec.shape != (self.dim,):
            raise ValueError(f"vector must have shape ({self.dim},), got {vec.shape}")
        if not np.isfinite(vec).all():
            raise ValueError("vector contains NaN or infinite values")
        return vec

    def _check_batch(self, ids, vectors) -> tuple[np.ndarray, np.ndarray]:
        ids_in = np.asarray(ids)
        if ids_in.dtype.kind == "i" or (ids_in.dtype.kind == "u" and (ids_in.size == 0 or ids_in.max() < 2**63)):
            ids_arr = ids_in.astype(np.int64).reshape(-1)
        else:  # element by element, for the clear message about the first bad id
            ids_list = [_check_int(i, "image id") for i in np.asarray(ids, dtype=object).reshape(-1)]
            ids_arr = np.asarray(ids_list, dtype=np.int64)
        try:
            vecs = np.asarray(vectors, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"vectors must be numeric with shape (n, {self.dim}): {exc}") from None
        if ids_arr.shape[0] == 0 and vecs.size == 0:
            return ids_arr, np.empty((0, self.dim), dtype=np.float64)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim:
            raise ValueError(f"vectors must have shape (n, {self.dim}), got {vecs.shape}")
        if vecs.shape[0] != ids_arr.shape[0]:
            raise ValueError(f"got {ids_arr.shape[0]} ids but {vecs.shape[0]} vectors")
        if not np.isfinite(vecs).all():
            raise ValueError("vectors contain NaN or infinite values")
        unique, counts = np.unique(ids_arr, return_counts=True)
        if unique.shape[0] != ids_arr.shape[0]:
            raise ValueError(f"duplicate image ids in one batch: {unique[counts > 1][:5].tolist()}")
        return ids_arr, vecs

    # ------------------------------------------------------------------ lookups (lock held)

    def _base_row(self, image_id: int) -> int:
        """Row of a *live* base entry, or -1."""
        pos = int(np.searchsorted(self._base_sorted_ids, image_id))
        if pos < self._base_sorted_ids.shape[0] and self._base_sorted_ids[pos] == image_id:
            row = int(self._base_order[pos])
            if not self._base_dead[row]:
                return row
        return -1

    def _live_count(self) -> int:
        return self._base_ids.shape[0] - self._n_dead + self._delta_size

    def __len__(self) -> int:
        with self._lock:
            return self._live_count()

    def __contains__(self, image_id: object) -> bool:
        if isinstance(image_id, bool) or not isinstance(image_id, Integral):
            return False
        with self._lock:
            return int(image_id) in self._delta_slot or self._base_row(int(image_id)) >= 0

    def stats(self) -> dict[str, int | bool]:
        """Sizes of the tree part, the delta buffer and the tombstones; rebuilds so far."""
        with self._lock:
            return {
                "size": self._live_count(),
                "base": int(self._base_ids.shape[0]),
                "delta": self._delta_size,
                "tombstones": self._n_dead,
                "rebuilds": self._rebuilds,
                "rebuilding": self._rebuilding,
            }

    # ------------------------------------------------------------------ updates

    def add(self, image_id: int, vector) -> None:
        """Insert ``image_id``, or replace its vector if it is already indexed."""
        image_id = _check_int(image_id, "image id")
        vec = self._check_vector(vector)
        with self._lock:
            self._apply_add(np.array([image_id], dtype=np.int64), vec[None, :])
            if self._journal is not None:
                self._journal.append(("add", np.array([image_id], dtype=np.int64), vec[None, :].copy()))
        self._maybe_rebuild()

    def add_many(self, ids, vectors) -> None:
        """Insert or replace several (id, vector) pairs; ids within one call must be distinct."""
        ids_arr, vecs = self._check_batch(ids, vectors)
        if ids_arr.shape[0] == 0:
            return
        vecs = np.array(vecs, dtype=np.float64, order="C", copy=True)
        with self._lock:
            self._apply_add(ids_arr, vecs)
            if self._journal is not None:
                self._journal.append(("add", ids_arr, vecs))
        self._maybe_rebuild()

    def remove(self, image_id: int) -> bool:
        """Remove ``image_id``; False if it was not indexed."""
        image_id = _check_int(image_id, "image id")
        with self._lock:
            removed = self._apply_remove(image_id)
            if removed and self._journal is not None:
                self._journal.append(("remove", np.array([image_id], dtype=np.int64), None))
        if removed:
            self._maybe_rebuild()
        return removed

    def _apply_add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        fresh = np.ones(ids.shape[0], dtype=bool)
        for i, image_id in enumerate(ids.tolist()):
            slot = self._delta_slot.get(image_id)
            if slot is not None:
                self._delta_vecs[slot] = vecs[i]
                fresh[i] = False
        # Ids living in the tree get a tombstone there; their new vector goes to the delta.
        if self._base_sorted_ids.shape[0]:
            pos = np.searchsorted(self._base_sorted_ids, ids)
            pos = np.minimum(pos, self._base_sorted_ids.shape[0] - 1)
            hit = fresh & (self._base_sorted_ids[pos] == ids)
            rows = self._base_order[pos[hit]]
            rows = rows[~self._base_dead[rows]]
            self._base_dead[rows] = True
            self._n_dead += int(rows.shape[0])
        new_ids, new_vecs = ids[fresh], vecs[fresh]
        start, end = self._delta_size, self._delta_size + new_ids.shape[0]
        if end > self._delta_ids.shape[0]:
            capacity = max(end, 2 * self._delta_ids.shape[0])
            grown_ids = np.empty(capacity, dtype=np.int64)
            grown_vecs = np.empty((capacity, self.dim), dtype=np.float64)
            grown_ids[:start] = self._delta_ids[:start]
            grown_vecs[:start] = self._delta_vecs[:start]
            self._delta_ids, self._delta_vecs = grown_ids, grown_vecs
        self._delta_ids[start:end] = new_ids
        self._delta_vecs[start:end] = new_vecs
        self._delta_slot.update(zip(new_ids.tolist(), range(start, end)))
        self._delta_size = end

    def _apply_remove(self, image_id: int) -> bool:
        slot = self._delta_slot.pop(image_id, None)
        if slot is not None:
            # Swap-remove keeps the delta dense, so a query never has to skip holes in it.
            last = self._delta_size - 1
            if slot != last:
                moved = int(self._delta_ids[last])
                self._delta_ids[slot] = moved
                self._delta_vecs[slot] = self._delta_vecs[last]
                self._delta_slot[moved] = slot
            self._delta_size = last
            return True
        row = self._base_row(image_id)
        if row < 0:
            return False
        self._base_dead[row] = True
        self._n_dead += 1
        return True

    # ------------------------------------------------------------------ rebuild

    def _needs_rebuild(self) -> bool:
        pending = self._delta_size + self._n_dead
        return pending > max(self.rebuild_threshold, self.rebuild_fraction * self._live_count())

    def _maybe_rebuild(self) -> None:
        with self._lock:
            if self._rebuilding or not self._needs_rebuild():
                return
            self._rebuilding = True
            alive = ~self._base_dead
            ids = np.concatenate([self._base_ids[alive], self._delta_ids[: self._delta_size]])
            vecs = np.concatenate([self._base_vecs[alive], self._delta_vecs[: self._delta_size]])
            self._journal = []
        installed = False
        try:
            tree = self._build_tree(vecs)
            with self._lock:
                journal, self._journal = self._journal, None
                self._install_base(ids, vecs, tree)
                self._reset_delta()
                for op, op_ids, op_vecs in journal:
                    if op == "add":
                        self._apply_add(op_ids, op_vecs)
                    else:
                        self._apply_remove(int(op_ids[0]))
                self._rebuilds += 1
                self._rebuilding = False
                installed = True
        finally:
            if not installed:
                with self._lock:
                    self._journal = None
                    self._rebuilding = False

    # ------------------------------------------------------------------ queries

    def query(self, vector, page: int = 1, per_page: int = 30, exclude_id: int | None = None) -> QueryResult:
        """Page ``page`` (from 1) of the indexed images nearest to ``vector``.

        ``exclude_id`` (the query image itself) is never returned and not counted in ``total``.
        """
        page = _check_int(page, "page")
        per_page = _check_int(per_page, "per_page")
        if page < 1:
            raise ValueError(f"page must be 1 or more, got {page}")
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, got {per_page}")
        if exclude_id is not None:
            exclude_id = _check_int(exclude_id, "exclude_id")
        q = self._check_vector(vector)

        with self._lock:
            excluded_slot = self._delta_slot.get(exclude_id, -1) if exclude_id is not None else -1
            excluded_row = self._base_row(exclude_id) if exclude_id is not None and excluded_slot < 0 else -1
            total = self._live_count() - int(excluded_slot >= 0 or excluded_row >= 0)
            start = (page - 1) * per_page
            if start >= total:
                return self._result(np.empty(0, np.int64), np.empty(0), total, page, per_page)
            k = min(page * per_page, total)
            base_ids, base_vecs = self._base_candidates(q, k, excluded_row)
            delta_ids, delta_vecs = self._delta_candidates(q, k, excluded_slot)

        # Candidates are copies, so the exact re-scoring needs no lock.
        cand_ids = np.concatenate([base_ids, delta_ids])
        keys = distance_keys(np.concatenate([base_vecs, delta_vecs]), q)
        order = np.lexsort((cand_ids, keys))[start:k]
        return self._result(cand_ids[order], _keys_to_distances(keys[order]), total, page, per_page)

    @staticmethod
    def _result(ids: np.ndarray, distances: np.ndarray, total: int, page: int, per_page: int) -> QueryResult:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        distances = np.ascontiguousarray(distances, dtype=np.float64)
        ids.setflags(write=False)
        distances.setflags(write=False)
        return QueryResult(ids=ids, distances=distances, total=total, page=page, per_page=per_page)

    def _base_candidates(self, q: np.ndarray, k: int, excluded_row: int) -> tuple[np.ndarray, np.ndarray]:
        """Every live base entry that can rank among the first ``k`` (a superset of them).

        Let r be the tree distance of the k-th nearest live entry. Those k entries have exact
        squared distance <= r^2 (1 + tol), so the k-th best key is at most that on the grid;
        anything with such a key has tree distance <= R below. Fetching everything within R
        (not just k) also captures the whole tie group at the page boundary, whose members
        BallTree would otherwise pick arbitrarily.
        """
        n_base = self._base_ids.shape[0]
        eligible = n_base - self._n_dead - int(excluded_row >= 0)
        k_base = min(k, eligible)
        if k_base <= 0:
            return np.empty(0, np.int64), np.empty((0, self.dim))
        q2 = q[None, :]
        k_tree = min(n_base, k_base + int(excluded_row >= 0) + min(self._n_dead, k_base))
        while True:
            dist, rows = self._tree.query(q2, k=k_tree)
            dist, rows = dist[0], rows[0]
            alive = ~self._base_dead[rows]
            if excluded_row >= 0:
                alive &= rows != excluded_row
            if int(alive.sum()) >= k_base or k_tree == n_base:
                break
            # Tombstones crowd the neighbourhood: widen the search geometrically.
            k_tree = min(n_base, 2 * k_tree)
        r = float(dist[alive][k_base - 1])
        radius = math.sqrt(r * r * (1 + _REL_TOL) ** 2 + _ABS_TOL) * (1 + _REL_TOL)
        if k_tree < n_base and dist[-1] <= radius:
            rows = self._tree.query_radius(q2, r=radius)[0]
            alive = ~self._base_dead[rows]
            if excluded_row >= 0:
                alive &= rows != excluded_row
        else:
            alive &= dist <= radius
        rows = rows[alive]
        return self._base_ids[rows], self._base_vecs[rows]

    def _delta_candidates(self, q: np.ndarray, k: int, excluded_slot: int) -> tuple[np.ndarray, np.ndarray]:
        """Every delta entry that can rank among the first ``k``, by the same argument."""
        m = self._delta_size
        eligible = m - int(excluded_slot >= 0)
        if eligible <= 0:
            return np.empty(0, np.int64), np.empty((0, self.dim))
        vecs = self._delta_vecs[:m]
        if eligible <= k:
            keep = np.ones(m, dtype=bool)
        else:
            diff = vecs - q
            approx = np.einsum("ij,ij->i", diff, diff)
            if excluded_slot >= 0:
                approx[excluded_slot] = np.inf
            kth = float(np.partition(approx, k - 1)[k - 1])
            keep = approx <= kth * (1 + _REL_TOL) ** 2 + _ABS_TOL
        if excluded_slot >= 0:
            keep[excluded_slot] = False
        return self._delta_ids[:m][keep], vecs[keep]
