"""The compiled inner loop of the default index: one pass over uint8 codes, with bounds.

For each row i of a chunk the scan computes a lower bound ``low_i`` of its squared distance
from the rotated head codes and the tail norm (``quantized.py`` derives it, and folds the
query into ``g``, ``base``, ``radius`` and ``tail_q``). A row whose bound can matter gets its
distance ``d_i`` from its float32 point, which lies within ``exact_slack`` of its exact key
(times the grid). In the same pass the scan

* skips tombstoned rows, the excluded row, rows whose class bitmask fails the filter (checked
  before any arithmetic, so a rare class costs less than a common one), and rows certainly
  beyond ``max_hi`` (the max_distance cut-off);
* counts rows certainly within the cut-off and lists the ones that may be on either side of
  it (``boundary``, re-scored exactly by the caller);
* keeps a max-heap of the k smallest upper bounds ``d_i + slack``: its top ``T`` is an upper
  bound of the k-th best key, so every row of the true top k has ``lower <= T``;
* collects rows with ``lower <= T`` (T only shrinks, so the list is a superset of the final
  one; it is compacted when it fills up).

Codes come in blocks of 256 rows stored column by column, so the dot products of a block are
one vectorised loop per column. After it, the block's smallest lower bound decides whether
any row of it needs the per-row logic at all: once the heap is full, almost no block does.

Compiled with numba, without the GIL, so two threads can scan two halves of the rows.
Only reassociation-style fast-math flags are enabled (never "no infinities/NaNs").
"""

from __future__ import annotations

import numpy as np
from numba import njit as _numba_njit

_FLAGS = {"reassoc", "contract", "nsz", "arcp"}
BIG = 1e300
_EPS32 = 2.0**-24


def njit(**options):
    """numba's njit with its on-disk cache when a cache directory is writable.

    Without one (read-only install, no writable home) numba refuses ``cache=True`` at
    decoration time; the kernels then compile at first use (about a second) instead.
    """

    def decorate(func):
        try:
            return _numba_njit(cache=True, **options)(func)
        except RuntimeError:
            return _numba_njit(cache=False, **options)(func)

    return decorate


@njit(nogil=True, inline="always")
def _heap_push(heap, size, value):
    """Max-heap of at most len(heap) values; returns the new size."""
    k = heap.shape[0]
    if size < k:
        i = size
        heap[i] = value
        while i > 0:
            parent = (i - 1) // 2
            if heap[parent] >= heap[i]:
                break
            heap[parent], heap[i] = heap[i], heap[parent]
            i = parent
        return size + 1
    if value >= heap[0]:
        return size
    heap[0] = value
    i = 0
    while True:
        left = 2 * i + 1
        if left >= k:
            break
        child = left
        if left + 1 < k and heap[left + 1] > heap[left]:
            child = left + 1
        if heap[child] <= heap[i]:
            break
        heap[child], heap[i] = heap[i], heap[child]
        i = child
    return size


@njit(nogil=True, fastmath=_FLAGS)
def _block_dots(blocks, b, g, acc):
    dim, width = blocks.shape[1], blocks.shape[2]
    for r in range(width):
        acc[r] = 0.0
    for j in range(dim):
        gj = g[j]
        for r in range(width):
            acc[r] += gj * np.float32(blocks[b, j, r])


@njit(nogil=True, fastmath=_FLAGS)
def _block_valid(labels, row0, n, exclude_row, dead, dead_pos, use_labels, r0, r1, f0, f1, valid):
    """Which rows of the block starting at row0 take part; returns how many.

    The class test has no branch (bitwise on both words), so it is vectorised; tombstones,
    the excluded row and the padding after row n are cleared afterwards, one by one.
    """
    width = valid.shape[0]
    if use_labels:
        last = n - 1
        for r in range(width):
            i = min(row0 + r, last)
            l0 = labels[i, 0]
            l1 = labels[i, 1]
            valid[r] = ((l0 & r0) == r0) & ((l1 & r1) == r1) & ((l0 & f0) == 0) & ((l1 & f1) == 0)
    else:
        valid[:] = True
    for r in range(max(0, n - row0), width):
        valid[r] = False
    if row0 <= exclude_row < row0 + width:
        valid[exclude_row - row0] = False
    while dead_pos < dead.shape[0] and dead[dead_pos] < row0 + width:
        valid[dead[dead_pos] - row0] = False
        dead_pos += 1
    count = 0
    for r in range(width):
        count += valid[r]
    return count


@njit(nogil=True, fastmath=_FLAGS, inline="always")
def _block_lows(blocks, norms, tails, n, b, g, base, radius, tail_q, slack, acc, lows):
    """Lower bounds of the squared distances of block ``b``'s rows (into ``lows``); returns the smallest.

    A row's bound is the head part (its codes, within ``radius``) plus the tail part
    (|tail| - |query tail|)², with ``tails`` stored as float32 (relative error 2**-24).
    """
    _block_dots(blocks, b, g, acc)
    row0 = b * acc.shape[0]
    lowest = BIG
    for r in range(acc.shape[0]):  # vectorised: no branch
        i = min(row0 + r, n - 1)
        head = max(base + np.float64(norms[i]) - 2.0 * np.float64(acc[r]) - radius, 0.0)
        t = np.float64(tails[i])
        gap = max(abs(t - tail_q) - 1.01 * _EPS32 * t, 0.0)
        low = head + gap * gap - slack
        lows[r] = low
        lowest = min(lowest, low)
    return lowest


@njit(nogil=True, fastmath=_FLAGS, inline="always")
def _distance(points, i, q):
    """|points[i] - q|² in float64: within ``exact_slack`` of the exact key (any summation order)."""
    total = 0.0
    for j in range(q.shape[0]):
        d = np.float64(points[i, j]) - q[j]
        total += d * d
    return total


@njit(nogil=True, inline="always")
def exact_slack(d2):
    """How far ``_distance`` and the exact key (``contract.distance_keys`` times the grid) can
    be apart: half a grid step of rounding, plus float64 sums of 81 squares in two orders."""
    return 2.0**-32 + 1e-13 * (1.0 + d2)


@njit(nogil=True, inline="always")
def _room_for_one(rows, n):
    """``rows`` (n used), doubled when full."""
    if n < rows.shape[0]:
        return rows
    grown = np.empty(2 * rows.shape[0], dtype=rows.dtype)
    grown[:n] = rows
    return grown


@njit(nogil=True, inline="always")
def _prune_candidates(rows, lows, n, threshold):
    """Drop the full buffer's candidates that can no longer reach the page; double it if still half full."""
    kept = 0
    for c in range(n):
        if lows[c] <= threshold:
            rows[kept] = rows[c]
            lows[kept] = lows[c]
            kept += 1
    if kept > rows.shape[0] // 2:
        grown_rows = np.empty(2 * rows.shape[0], dtype=np.int64)
        grown_lows = np.empty(2 * rows.shape[0], dtype=np.float64)
        grown_rows[:kept] = rows[:kept]
        grown_lows[:kept] = lows[:kept]
        return grown_rows, grown_lows, kept
    return rows, lows, kept


@njit(nogil=True, fastmath=_FLAGS)
def scan_blocks(
    blocks, norms, tails, points, q, n, first, last, g, base, radius, tail_q, slack,
    dead, exclude_row, labels, require, forbid, use_labels, max_hi, k,
):
    """Scan blocks [first, last) of the codes (layout [block, dim, BLOCK]); rows >= n are padding.

    Returns (candidate rows, their lower bounds, the heap of upper bounds, certain count,
    boundary rows). ``k == 0`` only counts.
    """
    width = blocks.shape[2]
    acc = np.empty(width, dtype=np.float32)
    lows = np.empty(width, dtype=np.float64)
    valid = np.empty(width, dtype=np.bool_)
    heap = np.empty(max(k, 1), dtype=np.float64)
    heap_size = 0
    threshold = BIG
    cand_rows = np.empty(4 * k + 256, dtype=np.int64)
    cand_lo = np.empty(4 * k + 256, dtype=np.float64)
    n_cand = 0
    boundary = np.empty(64, dtype=np.int64)
    n_boundary = 0
    n_sure = 0
    dead_pos = np.searchsorted(dead, first * width)
    n_dead = dead.shape[0]
    no_limit = max_hi >= BIG
    r0, r1, f0, f1 = require[0], require[1], forbid[0], forbid[1]
    for b in range(first, last):
        row0 = b * width
        # Fast path: a full block with no tombstone, no excluded row and no class filter.
        clean = (
            not use_labels
            and row0 + width <= n
            and not (row0 <= exclude_row < row0 + width)
            and (dead_pos >= n_dead or dead[dead_pos] >= row0 + width)
        )
        n_valid = width
        if not clean:
            n_valid = _block_valid(labels, row0, n, exclude_row, dead, dead_pos, use_labels, r0, r1, f0, f1, valid)
            dead_pos = np.searchsorted(dead, row0 + width)
            if n_valid == 0:
                continue  # e.g. a rare required class: such blocks cost only the label test
        lowest = _block_lows(blocks, norms, tails, n, b, g, base, radius, tail_q, slack, acc, lows)
        if no_limit:
            # Every valid row is certainly within the (absent) cut-off; only rows that can
            # reach the heap's threshold need a closer look, and usually none in a block does.
            n_sure += n_valid
            if lowest > threshold or k == 0:
                continue
        elif lowest > max_hi:
            continue  # the whole block is certainly beyond max_distance
        for r in range(width):
            if not clean and not valid[r]:
                continue
            lower = lows[r]
            if lower > threshold and (no_limit or lower > max_hi):
                continue
            # The bound let this row through: its distance, to within exact_slack.
            i = row0 + r
            d2 = _distance(points, i, q)
            slack_i = exact_slack(d2)
            lower = d2 - slack_i
            upper = d2 + slack_i
            if not no_limit:
                if upper <= max_hi:
                    n_sure += 1
                elif lower <= max_hi:
                    boundary = _room_for_one(boundary, n_boundary)
                    boundary[n_boundary] = i
                    n_boundary += 1
                else:
                    continue  # certainly beyond max_distance
            if lower > threshold:
                continue
            if k > 0 and upper <= max_hi and upper < threshold:
                heap_size = _heap_push(heap, heap_size, upper)
                if heap_size == k:
                    threshold = heap[0]
            if k > 0 and lower <= threshold:
                if n_cand == cand_rows.shape[0]:
                    cand_rows, cand_lo, n_cand = _prune_candidates(cand_rows, cand_lo, n_cand, threshold)
                cand_rows[n_cand] = i
                cand_lo[n_cand] = lower
                n_cand += 1
    return cand_rows[:n_cand], cand_lo[:n_cand], np.sort(heap[:heap_size]), n_sure, boundary[:n_boundary]
