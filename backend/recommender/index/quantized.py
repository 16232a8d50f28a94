"""The default base search: a uint8 scan with a proven error bound, then exact re-scoring.

Every stored point x is quantised per dimension: ``code_j = rint((x_j - lo_j) / step_j)``,
``step_j = (hi_j - lo_j) / 255``, so ``x̂_j = lo_j + step_j * code_j`` and the largest error of
column j, ``err_j = max_i |x_ij - x̂_ij|``, is measured at build time. For a query u,

    |x - u|² = |u|² + |x|² - 2 u·x,     u·x = Σ_j u_j lo_j + Σ_j (u_j step_j) code_j + u·(x - x̂)

and ``|u·(x - x̂)| <= Σ_j |u_j| err_j``. The scan (``kernels.scan_chunk``) reads 81 bytes per
image instead of 324 and knows each squared distance to within ``radius`` (that term, plus the
float32 accumulation error, the rounding of the stored |x|² and the 2**-32 grid). Candidates
whose interval can reach the k-th smallest upper bound are re-scored exactly with
``distance_keys``; on YOLOv5s vectors that is a few hundred rows out of a million.

With ``threads=2`` (or more) the scan is split into chunks: the calling thread scans one, a
shared pool the others (numba releases the GIL), so concurrent queries share the cores
instead of multiplying threads. The default is two threads: see ``default_threads``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .contract import DISTANCE_GRID, distance_keys
from .kernels import BIG, scan_blocks

_EPS32 = 2.0**-24
_BUILD_CHUNK = 262_144
# Codes are stored in blocks of BLOCK rows, column-major inside a block ([block, dim, row]),
# so the scan multiplies contiguous runs of one column (vectorised) and streams memory once.
BLOCK = 256
# Below this many blocks per chunk a second thread costs more than it saves.
MIN_BLOCKS_PER_THREAD = 512

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="index-scan")
    return _pool


def default_threads() -> int:
    """Two where there are two cores: on a quiet 2-core machine a split 1M scan answers in 9.4
    instead of 16.2 ms (bench/query.py). Collections below MIN_BLOCKS_PER_THREAD blocks per
    thread are not split, and concurrent queries share one pool, so threads never multiply."""
    return max(1, min(2, os.cpu_count() or 1))


class QuantizedScan:
    """uint8 codes of the base points plus what the bound needs; see the module docstring."""

    kind = "exact"

    def __init__(
        self,
        points: np.ndarray,
        labels: np.ndarray,
        arrays: dict[str, np.ndarray],
        threads: int | None = None,
        min_blocks_per_thread: int = MIN_BLOCKS_PER_THREAD,
        **_,
    ) -> None:
        self.points, self.labels = points, labels
        self.blocks = arrays["blocks"]
        self.norms = arrays["norms"]
        self.lo, self.step, self.err = arrays["lo"], arrays["step"], arrays["err"]
        self.norm_max = float(self.norms.max()) if self.norms.shape[0] else 0.0
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.min_blocks_per_thread = max(1, int(min_blocks_per_thread))

    @classmethod
    def build(cls, points: np.ndarray, labels: np.ndarray, **options) -> QuantizedScan:
        return cls(points, labels, quantize(points), **options)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"blocks": self.blocks, "norms": self.norms, "lo": self.lo, "step": self.step, "err": self.err}

    def _query_terms(self, q: np.ndarray) -> tuple[np.ndarray, float, float]:
        g = (q * self.step).astype(np.float32)
        base = float(q @ q) - 2.0 * float(q @ self.lo)
        dim = q.shape[0]
        radius = (
            2.0 * float(np.abs(q) @ self.err)
            # float32 products and sums of up to 255 * Σ|g| (any order: fast-math), with slack
            + 2.0 * (dim + 2) * _EPS32 * 255.0 * float(np.abs(g).sum()) * 1.01
            + 2.0 * _EPS32 * self.norm_max  # |x|² stored as float32
            + 1e-12 * (1.0 + float(q @ q) + self.norm_max + 2.0 * float(np.abs(q) @ np.abs(self.lo)))
            + DISTANCE_GRID  # the exact key is rint(d2 * 2**32): up to half a step away, both ways
        )
        return g, base, radius * 1.0001 + 1e-12

    def search(self, q, k, dead, exclude_row, require, forbid, max_key):
        """(rows, exact keys, count) of the eligible base rows; rows include the k best."""
        n = self.points.shape[0]
        if n == 0:
            return np.empty(0, np.int64), np.empty(0), 0
        g, base, radius = self._query_terms(q)
        use_labels = bool(require.any() or forbid.any())
        max_hi = BIG if max_key == np.inf else max_key * DISTANCE_GRID
        args = (g, base, radius, dead, exclude_row, self.labels, require, forbid, use_labels, max_hi, k)
        n_blocks = self.blocks.shape[0]
        parts = max(1, min(self.threads, n_blocks // self.min_blocks_per_thread))
        bounds = np.linspace(0, n_blocks, parts + 1).astype(np.int64)
        futures = [
            _executor().submit(scan_blocks, self.blocks, self.norms, n, int(bounds[p]), int(bounds[p + 1]), *args)
            for p in range(1, parts)
        ]
        results = [scan_blocks(self.blocks, self.norms, n, 0, int(bounds[1]), *args)] + [f.result() for f in futures]
        count = sum(int(r[3]) for r in results)
        boundary = np.concatenate([r[4] for r in results])
        if boundary.shape[0]:
            count += int((distance_keys(self.points[boundary], q) <= max_key).sum())
        if k == 0:
            return np.empty(0, np.int64), np.empty(0), count
        heaps = np.concatenate([r[2] for r in results])
        threshold = np.partition(heaps, k - 1)[k - 1] if heaps.shape[0] >= k else np.inf
        rows = np.concatenate([r[0][r[1] <= threshold] for r in results])
        keys = distance_keys(self.points[rows], q)
        keep = keys <= max_key
        return rows[keep], keys[keep], count


def quantize(points: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension uint8 codes in blocks, |x|² as float32, and the measured error of every column."""
    n, dim = points.shape
    n_blocks = -(-n // BLOCK)
    blocks = np.zeros((n_blocks, dim, BLOCK), dtype=np.uint8)
    norms = np.empty(n, dtype=np.float32)
    if n == 0:
        zeros = np.zeros(dim)
        return {"blocks": blocks, "norms": norms, "lo": zeros, "step": zeros, "err": zeros}
    lo = points.min(axis=0).astype(np.float64)
    hi = points.max(axis=0).astype(np.float64)
    step = (hi - lo) / 255.0
    inv = np.divide(1.0, step, out=np.zeros_like(step), where=step > 0)
    err = np.zeros(dim)
    for start in range(0, n, _BUILD_CHUNK):  # _BUILD_CHUNK is a multiple of BLOCK
        block = points[start : start + _BUILD_CHUNK].astype(np.float64)
        codes = np.clip(np.rint((block - lo) * inv), 0, 255)
        err = np.maximum(err, np.abs(block - (lo + step * codes)).max(axis=0))
        norms[start : start + block.shape[0]] = np.einsum("ij,ij->i", block, block)
        m = block.shape[0]
        padded = np.zeros((-(-m // BLOCK) * BLOCK, dim), dtype=np.uint8)
        padded[:m] = codes
        first = start // BLOCK
        blocks[first : first + padded.shape[0] // BLOCK] = padded.reshape(-1, BLOCK, dim).transpose(0, 2, 1)
    # The measured error is exact up to float64 rounding of lo + step * code; widen by that.
    err = err * (1 + 1e-12) + 1e-15 * (np.abs(lo) + np.abs(hi))
    return {"blocks": blocks, "norms": norms, "lo": lo, "step": step, "err": err}
