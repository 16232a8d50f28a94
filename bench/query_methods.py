"""The exact search methods bench/query.py compares with the default index.

Every exact method returns the same pages as the index: it nominates candidates with a cheap
computation whose error it bounds, then re-scores them with ``distance_keys`` and sorts by
(key, id). Their bounds are looser than the index's (this is a benchmark, not the product);
``query.py`` checks every page against the default index.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from recommender.index import distance_keys

_EPS32 = 2.0**-24


def _page(ids, points, rows, q, start, stop):
    keys = distance_keys(points[rows], q)
    order = np.lexsort((ids[rows], keys))[start:stop]
    return ids[rows][order], np.sqrt(keys[order] * 2.0**-32)


def _bounded_candidates(approx: np.ndarray, bound, k: int) -> np.ndarray:
    """Rows whose interval [approx - bound, approx + bound] can reach the k-th upper bound."""
    upper = approx + bound
    kth = np.partition(upper, k - 1)[k - 1]
    return np.flatnonzero(approx - bound <= kth)


class Float32Scan:
    """NumPy float32 matrix-vector product (BLAS) of all points, then exact re-scoring."""

    name = "float32 BLAS scan"

    def __init__(self, ids: np.ndarray, points: np.ndarray) -> None:
        self.ids, self.points = ids, np.ascontiguousarray(points, dtype=np.float32)
        self.norms = np.einsum("ij,ij->i", self.points, self.points, dtype=np.float64).astype(np.float32)
        self.row_of = {int(i): r for r, i in enumerate(ids.tolist())}
        self.bytes_per_vector = 4 * 81 + 4

    def query(self, q, page, per_page, exclude_id):
        d2 = self.norms - 2.0 * (self.points @ q.astype(np.float32))
        row = self.row_of.get(exclude_id, -1)
        if row >= 0:
            d2[row] = np.inf
        total = len(self.ids) - int(row >= 0)
        start, stop = (page - 1) * per_page, min(page * per_page, total)
        # float32 error of |x|² - 2 x·q (any summation order), generously; plus the 2**-32 grid.
        bound = 4 * 83 * _EPS32 * (float(self.norms.max()) + float(np.abs(q).sum())) + 2.0**-31
        rows = _bounded_candidates(d2, bound, stop)
        rows = rows[rows != row]
        ids, dist = _page(self.ids, self.points, rows, q, start, stop)
        return ids, dist, total


class ThresholdedScan:
    """CSR of the stored values >= tau; the dropped part of each row bounded by its norm."""

    def __init__(self, ids: np.ndarray, points: np.ndarray, tau: float = 0.03) -> None:
        self.name = f"CSR scan of values >= {tau:g} + bound"
        self.ids, self.points = ids, points
        kept = np.where(np.abs(points) >= tau, points, 0).astype(np.float32)
        self.matrix = scipy.sparse.csr_matrix(kept)
        self.dropped = np.linalg.norm(points.astype(np.float64) - kept, axis=1).astype(np.float32)
        self.norms = np.einsum("ij,ij->i", points, points, dtype=np.float64).astype(np.float32)
        self.row_of = {int(i): r for r, i in enumerate(ids.tolist())}
        nnz = self.matrix.nnz / max(1, len(ids))
        self.bytes_per_vector = nnz * 8 + 4 + 4 + 4  # value + column per non-zero, row pointer, norm, dropped norm

    def query(self, q, page, per_page, exclude_id):
        q32 = q.astype(np.float32)
        approx = self.norms - 2.0 * (self.matrix @ q32)
        row = self.row_of.get(exclude_id, -1)
        if row >= 0:
            approx[row] = np.inf
        total = len(self.ids) - int(row >= 0)
        start, stop = (page - 1) * per_page, min(page * per_page, total)
        qn = float(np.linalg.norm(q))
        bound = 2.0 * qn * self.dropped + 4 * 83 * _EPS32 * (float(self.norms.max()) + float(np.abs(q).sum())) + 2.0**-31
        rows = _bounded_candidates(approx, bound, stop)
        rows = rows[rows != row]
        ids, dist = _page(self.ids, self.points, rows, q, start, stop)
        return ids, dist, total


class FaissFlat:
    """faiss-cpu IndexFlatL2 top-K, widened to every row within the float32 error, re-scored."""

    name = "faiss IndexFlatL2"

    def __init__(self, ids: np.ndarray, points: np.ndarray) -> None:
        import faiss

        faiss.omp_set_num_threads(1)
        self.ids, self.points = ids, points
        self.index = faiss.IndexFlatL2(points.shape[1])
        self.index.add(np.ascontiguousarray(points, dtype=np.float32))
        self.row_of = {int(i): r for r, i in enumerate(ids.tolist())}
        self.max_norm = float(np.einsum("ij,ij->i", points[:100_000], points[:100_000]).max()) * 1.5
        self.bytes_per_vector = 4 * 81

    def query(self, q, page, per_page, exclude_id):
        q32 = q.astype(np.float32)[None, :]
        row = self.row_of.get(exclude_id, -1)
        total = len(self.ids) - int(row >= 0)
        start, stop = (page - 1) * per_page, min(page * per_page, total)
        want = stop + int(row >= 0)
        dist, rows = self.index.search(q32, want + 32)
        dist, rows = dist[0], rows[0]
        tol = 4 * 83 * _EPS32 * (self.max_norm + float(np.abs(q).sum()) + 1) + 2.0**-31
        limit = dist[want - 1] + 2 * tol
        if dist[-1] <= limit:  # the tie group / error band is wider than what was fetched
            _, _, rows = self.index.range_search(q32, float(limit))
        rows = rows[(rows >= 0) & (rows != row)]
        ids, d = _page(self.ids, self.points, rows, q, start, stop)
        return ids, d, total
