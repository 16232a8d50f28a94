"""The default base search: a scan of a few rotated uint8 dimensions with a proven lower bound,
exact distances for the rows the bound lets through, then exact re-scoring.

**Rotation.** At build time the points' principal axes are found (``principal_axes``: mean m
and an orthonormal 81×81 rotation R, largest variance first). Rotating keeps distances:
|x - u|² = |z_x - z_u|² with z = R(x - m). Split z into its first ``HEAD_DIMS`` coordinates h
and the rest t: |x - u|² = |h_x - h_u|² + |t_x - t_u|² >= |h_x - h_u|² + (|t_x| - |t_u|)².
The store keeps, per image, h_x as uint8 codes and |t_x| as one float32.

**Codes.** h is quantised per dimension: ``code_j = rint((h_j - lo_j) / step_j)``,
``step_j = (hi_j - lo_j) / 255``, so ``ĥ_j = lo_j + step_j * code_j`` and the largest error of
column j, ``err_j = max_i |h_ij - ĥ_ij|``, is measured at build time. For a query head v,

    |h - v|² = |v|² + |h|² - 2 v·h,     v·h = Σ_j v_j lo_j + Σ_j (v_j step_j) code_j + v·(h - ĥ)

and ``|v·(h - ĥ)| <= Σ_j |v_j| err_j``: the scan knows |h - v|² to within ``radius`` (that term,
the float32 accumulation error and the rounding of the stored |h|²).

**Scan** (``kernels.scan_blocks``). It reads HEAD_DIMS + 8 bytes per image (48 of the 324 of
a float32 point) and bounds each distance from below; only an image whose bound can reach the
page gets its distance computed from its float32 point (within ``kernels.exact_slack``). On the
1M-photo scale collection that is well under 1% of the images (bench/query.py). The k-th
smallest upper distance so far prunes the rest; the candidates left are re-scored with
``distance_keys``, the one definition of a key, so pages, ties and ``total`` are exact.

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
# Rotated dimensions kept as codes; the rest is one norm per image. More codes cost bytes
# but tighten the bound, so fewer rows need their exact distance: the slow queries get
# faster. bench/query.py, less clustered data, methods in random order per query, medians the
# same within noise: at 1M, p95 of page 1 for 24, 32, 40 and 48 codes 7.5, 5.6, 4.7 and 4.3 ms
# (page 5: 12.1, 8.3, 6.2, 5.7); at 10M, 24 against 40 codes 22.7 / 66.2 against
# 24.7 / 39.8 ms (median / p95). A min_similarity query also gains (13.2 -> 9.8 ms at 1M).
HEAD_DIMS = 40
# Below this many blocks per chunk a second thread costs more than it saves.
MIN_BLOCKS_PER_THREAD = 512

_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="index-scan")
    return _pool


def default_threads() -> int:
    """Two where there are two cores: on this 2-core machine a split 1M scan answers page 1 in
    3.5 instead of 5.4 ms (p95 7.5 against 12.2; bench/query.py, less clustered data).
    Collections below MIN_BLOCKS_PER_THREAD blocks per thread are not split, and concurrent
    queries share one pool, so threads never multiply."""
    return max(1, min(2, os.cpu_count() or 1))


class QuantizedScan:
    """Rotated uint8 head codes plus what the bounds need; see the module docstring."""

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
        self.mean, self.rotation, self.tails = arrays["mean"], arrays["rotation"], arrays["tails"]
        self.norm_max = float(self.norms.max()) if self.norms.shape[0] else 0.0
        self.tail_max = float(self.tails.max()) if self.tails.shape[0] else 0.0
        self.threads = default_threads() if threads is None else max(1, int(threads))
        self.min_blocks_per_thread = max(1, int(min_blocks_per_thread))

    @classmethod
    def build(cls, points: np.ndarray, labels: np.ndarray, head_dims: int = HEAD_DIMS, **options) -> QuantizedScan:
        mean, rotation = principal_axes(points)
        head, tails = rotate(points, mean, rotation, head_dims)
        return cls(points, labels, {**quantize(head), "mean": mean, "rotation": rotation, "tails": tails}, **options)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"blocks": self.blocks, "norms": self.norms, "lo": self.lo, "step": self.step, "err": self.err,
                "mean": self.mean, "rotation": self.rotation, "tails": self.tails}

    def _query_terms(self, q: np.ndarray) -> tuple[np.ndarray, float, float]:
        """For the rotated head of a query: the scan's weights, the constant, and the radius of
        the head distance (see the module docstring)."""
        g = (q * self.step).astype(np.float32)
        base = float(q @ q) - 2.0 * float(q @ self.lo)
        dim = q.shape[0]
        radius = (
            2.0 * float(np.abs(q) @ self.err)
            # float32 products and sums of up to 255 * Σ|g| (any order: fast-math), with slack
            + 2.0 * (dim + 2) * _EPS32 * 255.0 * float(np.abs(g).sum()) * 1.01
            + 2.0 * _EPS32 * self.norm_max  # |x|² stored as float32
            + 1e-12 * (1.0 + float(q @ q) + self.norm_max + 2.0 * float(np.abs(q) @ np.abs(self.lo)))
        )
        return g, base, radius * 1.0001 + 1e-12

    def search(self, q, k, dead, exclude_row, require, forbid, max_key):
        """(rows, exact keys, count) of the eligible base rows; rows include the k best."""
        n = self.points.shape[0]
        if n == 0:
            return np.empty(0, np.int64), np.empty(0), 0
        q = np.asarray(q, dtype=np.float64)
        z = (q - self.mean) @ self.rotation.T
        head_dims = self.blocks.shape[1]
        g, base, radius = self._query_terms(z[:head_dims])
        tail_q = float(np.sqrt(z[head_dims:] @ z[head_dims:]))
        # Bounds must hold for the exact key (rounded to the grid), and the rotation is
        # orthonormal only to float64 rounding (~1e-14 relative): 1e-9 spares plenty.
        slack = DISTANCE_GRID + 1e-9 * (1.0 + float(z @ z) + self.norm_max + self.tail_max**2)
        use_labels = bool(require.any() or forbid.any())
        max_hi = BIG if max_key == np.inf else max_key * DISTANCE_GRID
        args = (g, base, radius, tail_q, slack, dead, exclude_row, self.labels, require, forbid, use_labels, max_hi, k)
        n_blocks = self.blocks.shape[0]
        parts = max(1, min(self.threads, n_blocks // self.min_blocks_per_thread))
        bounds = np.linspace(0, n_blocks, parts + 1).astype(np.int64)
        scan = (self.blocks, self.norms, self.tails, self.points, q, n)
        futures = [
            _executor().submit(scan_blocks, *scan, int(bounds[p]), int(bounds[p + 1]), *args) for p in range(1, parts)
        ]
        results = [scan_blocks(*scan, 0, int(bounds[1]), *args)] + [f.result() for f in futures]
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


def principal_axes(points: np.ndarray, sample: int = 100_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(mean float64[d], rotation float64[d, d]): the points' principal axes, largest variance first.

    Fitted on at most ``sample`` rows: the axes only decide how tight the bounds are, never
    whether a page is exact, so a sample is enough.
    """
    n, dim = points.shape
    if n == 0:
        return np.zeros(dim), np.eye(dim)
    rows = np.random.default_rng(seed).choice(n, sample, replace=False) if n > sample else slice(None)
    picked = np.asarray(points[rows], dtype=np.float64)
    mean = picked.mean(axis=0)
    centred = picked - mean
    variances, axes = np.linalg.eigh(centred.T @ centred)  # a full orthonormal basis, whatever n is
    return mean, np.ascontiguousarray(axes[:, np.argsort(-variances, kind="stable")].T)


def rotate(points: np.ndarray, mean: np.ndarray, rotation: np.ndarray, head_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(head float64[n, head_dims], tail norms float32[n]) of the points in the rotated frame."""
    n = points.shape[0]
    head = np.empty((n, head_dims))
    tails = np.empty(n, dtype=np.float32)
    for start in range(0, n, _BUILD_CHUNK):
        z = (np.asarray(points[start : start + _BUILD_CHUNK], dtype=np.float64) - mean) @ rotation.T
        head[start : start + z.shape[0]] = z[:, :head_dims]
        tails[start : start + z.shape[0]] = np.sqrt(np.einsum("ij,ij->i", z[:, head_dims:], z[:, head_dims:]))
    return head, tails


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
