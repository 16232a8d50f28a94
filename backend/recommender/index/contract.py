"""What every index kind promises: one definition of distance and ties, pages, filters.

Definition of distance and of ties (what "equal to brute force" means)
----------------------------------------------------------------------
Scans, trees and BLAS can disagree in the last bit, which would make "ties broken by image id"
depend on which code path found a candidate. So the final ranking never uses a distance that a
search structure computed. Every candidate is re-scored with one fixed formula
(:func:`distance_keys`):

* ``d2 = sum_j (x[j] - q[j]) ** 2``, accumulated in float64 strictly left to right over
  ``j = 0..D-1`` (a cumulative sum, never a pairwise/SIMD reduction or BLAS), so the value
  depends only on the two vectors, not on batch size, memory alignment or the BLAS build;
* ``key = rint(d2 * 2**32)``: squared distances are compared on a grid of 2**-32 (about
  2.3e-10), so neighbours that are equidistant in exact arithmetic tie instead of being split
  by rounding noise;
* results are sorted by ``(key, image id)``; the reported distance is ``sqrt(key * 2**-32)``,
  so equal reported distances are exactly the ties, listed by increasing id.

Indexed points are stored as float32 (what the caller gave, rounded to float32 once at build
or update); "brute force" means this formula over the stored points.

Filters. Each image carries the set of classes detected in it as a bitmask ``uint64[2]``
(bit c of word c // 64, classes 1..80). A query may ``require`` classes (all must be present)
and ``forbid`` classes (none may be present), and give ``max_distance``: an image is left out
when its reported distance is larger. ``total`` counts exactly the images that pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np

MAX_PER_PAGE = 100
DIM = 81
# Squared distances are compared on this grid (a power of two, so scaling is exact).
DISTANCE_GRID = 2.0**-32
_INV_GRID = 2.0**32
LABEL_WORDS = 2
NO_CLASSES = np.zeros(LABEL_WORDS, dtype=np.uint64)


def distance_keys(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Integer-valued float64 ranking keys of ``vectors`` (m×D) against ``query`` (D,).

    ``key = rint(sum_j (x[j] - q[j])**2 * 2**32)`` with the sum accumulated in column order,
    the one definition of distance every index ranks by (see the module docstring).
    """
    squares = np.asarray(vectors, dtype=np.float64) - np.asarray(query, dtype=np.float64)
    np.multiply(squares, squares, out=squares)
    # A cumulative sum is a strictly left-to-right recurrence, unlike ``sum``, whose pairwise
    # and SIMD reassociation can depend on the array's shape and alignment.
    acc = np.cumsum(squares, axis=1)[:, -1] if squares.shape[0] else np.zeros(0)
    acc *= _INV_GRID
    return np.rint(acc, out=acc)


def keys_to_distances(keys: np.ndarray) -> np.ndarray:
    return np.sqrt(np.asarray(keys, dtype=np.float64) * DISTANCE_GRID)


def max_key_for(max_distance: float | None) -> float:
    """Largest key whose reported distance is <= ``max_distance`` (inf: no limit).

    Comparing keys, not distances, keeps the cut-off exact: ``sqrt`` rounding could otherwise
    put an image on either side of the limit depending on the code path.
    """
    if max_distance is None:
        return math.inf
    if isinstance(max_distance, bool) or not isinstance(max_distance, Real) or not math.isfinite(max_distance):
        raise ValueError(f"max_distance must be a finite number, got {max_distance!r}")
    if max_distance < 0:
        return -1.0
    key = math.floor(float(max_distance) ** 2 * _INV_GRID)
    # Step over the rounding of sqrt and of the square, in whichever direction it went.
    while key > 0 and math.sqrt(key * DISTANCE_GRID) > max_distance:
        key -= 1
    while math.sqrt((key + 1) * DISTANCE_GRID) <= max_distance:
        key += 1
    return float(key)


@dataclass(frozen=True, eq=False)
class QueryResult:
    """One page of neighbours, nearest first (ties by increasing image id).

    ``total`` counts every image the query ranks (the indexed images that pass the filters,
    minus the excluded one), independent of the page; a page past the end has empty ``ids``
    and the same ``total``.
    """

    ids: np.ndarray  # int64
    distances: np.ndarray  # float64, non-decreasing
    total: int
    page: int
    per_page: int
    # What the index holds of each result, so a caller need not read it again from the database.
    points: np.ndarray  # float32[len(ids), DIM], ranking space
    labels: np.ndarray  # uint64[len(ids), LABEL_WORDS], class bits (see ``label_classes``)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def make_result(ids: np.ndarray, keys: np.ndarray, total: int, page: int, per_page: int,
                points: np.ndarray, labels: np.ndarray) -> QueryResult:
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    distances = np.ascontiguousarray(keys_to_distances(keys))
    points = np.ascontiguousarray(points, np.float32).reshape(-1, DIM)
    labels = np.ascontiguousarray(labels, np.uint64).reshape(-1, LABEL_WORDS)
    for a in (ids, distances, points, labels):
        a.setflags(write=False)
    return QueryResult(ids=ids, distances=distances, total=int(total), page=page, per_page=per_page,
                       points=points, labels=labels)


def check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    value = int(value)
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"{what} {value} does not fit in a 64-bit integer")
    return value


def check_page(page: object, per_page: object) -> tuple[int, int]:
    """Validated (page, per_page). Any page >= 1 is accepted: one past the end is just empty."""
    if isinstance(page, bool) or not isinstance(page, Integral):
        raise ValueError(f"page must be an integer, got {page!r}")
    per_page = check_int(per_page, "per_page")
    if page < 1:
        raise ValueError(f"page must be 1 or more, got {page}")
    if not 1 <= per_page <= MAX_PER_PAGE:
        raise ValueError(f"per_page must be between 1 and {MAX_PER_PAGE}, got {per_page}")
    return int(page), per_page


def check_query_vector(vector: object, dim: int) -> np.ndarray:
    try:
        q = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"vector must be numeric with shape ({dim},): {exc}") from None
    if q.shape != (dim,):
        raise ValueError(f"vector must have shape ({dim},), got {q.shape}")
    if not np.isfinite(q).all():
        raise ValueError("vector contains NaN or infinite values")
    return q


def check_ids(ids: object, allow_duplicates: bool = False) -> np.ndarray:
    """int64 ids, validated; duplicates are rejected unless allowed."""
    arr = np.asarray(ids)
    if arr.dtype.kind == "i" or (arr.dtype.kind == "u" and (arr.size == 0 or arr.max() < 2**63)):
        out = arr.astype(np.int64).reshape(-1)
    else:  # element by element, for the clear message about the first bad id
        out = np.asarray([check_int(i, "image id") for i in np.asarray(ids, dtype=object).reshape(-1)], dtype=np.int64)
    if allow_duplicates:
        return out
    unique, counts = np.unique(out, return_counts=True)
    if unique.shape[0] != out.shape[0]:
        raise ValueError(f"duplicate image ids in one batch: {unique[counts > 1][:5].tolist()}")
    return out


def check_points(points: object, n: int, dim: int) -> np.ndarray:
    """float32 C-contiguous (n, dim) points; float64 input is rounded once, here."""
    if points is None and n == 0:
        return np.empty((0, dim), dtype=np.float32)
    try:
        arr = np.asarray(points)
        if n == 0 and arr.size == 0:
            return np.empty((0, dim), dtype=np.float32)
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"vectors must be numeric with shape (n, {dim}): {exc}") from None
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"vectors must have shape (n, {dim}), got {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"got {n} ids but {arr.shape[0]} vectors")
    if not np.isfinite(arr).all():
        raise ValueError("vectors contain NaN or infinite values (or values beyond float32)")
    return arr


def check_labels(labels: object, n: int) -> np.ndarray:
    """uint64 (n, 2) class bitmasks; None means no classes known (every require fails)."""
    if labels is None:
        return np.zeros((n, LABEL_WORDS), dtype=np.uint64)
    arr = np.ascontiguousarray(labels, dtype=np.uint64)
    if arr.shape != (n, LABEL_WORDS):
        raise ValueError(f"labels must have shape ({n}, {LABEL_WORDS}), got {arr.shape}")
    return arr


# ------------------------------------------------------------------------------ class masks


def class_mask(class_ids: Iterable[int] | np.ndarray | None) -> np.ndarray:
    """uint64[2] bitmask of some class ids (1..80); also accepts a ready mask of shape (2,)."""
    if class_ids is None:
        return NO_CLASSES.copy()
    arr = np.asarray(class_ids)
    if arr.dtype == np.uint64 and arr.shape == (LABEL_WORDS,):
        return arr.copy()
    mask = np.zeros(LABEL_WORDS, dtype=np.uint64)
    for c in np.asarray(class_ids, dtype=object).reshape(-1).tolist():
        c = check_int(c, "class id")
        if not 1 <= c < 64 * LABEL_WORDS:
            raise ValueError(f"class id must be between 1 and {64 * LABEL_WORDS - 1}, got {c}")
        mask[c // 64] |= np.uint64(1) << np.uint64(c % 64)
    return mask


def labels_from_scores(scores: np.ndarray, threshold: float) -> np.ndarray:
    """uint64[n, 2] bitmasks of the classes scored at or above ``threshold`` (slot 0 ignored)."""
    scores = np.atleast_2d(np.asarray(scores))
    present = scores >= threshold
    present[:, 0] = False
    out = np.zeros((scores.shape[0], LABEL_WORDS), dtype=np.uint64)
    for word in range(LABEL_WORDS):
        block = present[:, word * 64 : (word + 1) * 64]
        weights = np.left_shift(np.uint64(1), np.arange(block.shape[1], dtype=np.uint64))
        out[:, word] = (block.astype(np.uint64) * weights).sum(axis=1, dtype=np.uint64)
    return out


def label_classes(labels: np.ndarray) -> list[tuple[int, ...]]:
    """The class ids set in each row of uint64[n, 2] bitmasks, ascending (the inverse of ``class_mask``)."""
    as_bytes = np.ascontiguousarray(labels, dtype="<u8").view(np.uint8).reshape(-1, 8 * LABEL_WORDS)
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")  # bit 64 * word + b of the row
    return [tuple(np.flatnonzero(row).tolist()) for row in bits]


def label_filter(labels: np.ndarray, require: np.ndarray, forbid: np.ndarray) -> np.ndarray:
    """bool[n]: rows whose classes include all of ``require`` and none of ``forbid``."""
    ok = np.ones(labels.shape[0], dtype=bool)
    for word in range(LABEL_WORDS):
        if require[word]:
            ok &= (labels[:, word] & require[word]) == require[word]
        if forbid[word]:
            ok &= (labels[:, word] & forbid[word]) == 0
    return ok
