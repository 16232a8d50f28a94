"""Why a result matched: the classes that contributed most to its similarity with the query.

The index ranks by Euclidean distance between the query's point u (``query_transform``) and
each result's point w (``ranking_transform``). Both have unit length, so
|u - w|² = 2 - 2 Σ_c u_c w_c: the similarity is a sum of one term per class, and each class's
share of that sum is exactly how much it pulled the result up the list. A class only one side
shows contributes nothing, which is what a user expects from "shared". Slot 0 (background)
is always 0 on the query side, so it never takes a share.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classes import NUM_CLASSES, class_name
from .vectors import DEFAULT_RANKING, RANKINGS, Ranking

# Below this share a class is noise in the "why" line (YOLO gives every class a tiny score).
DEFAULT_MIN_SHARE = 0.05
DEFAULT_TOP = 3


@dataclass(frozen=True)
class ClassContribution:
    class_id: int
    class_name: str
    share: float  # fraction of the query-result similarity this class accounts for, 0..1


def _shares(u: np.ndarray, points: np.ndarray) -> np.ndarray:
    """float64[n, 81]: each class's share of the similarity u·w of the query point with each result point."""
    terms = np.asarray(points, dtype=np.float64) * np.asarray(u, dtype=np.float64)
    terms[:, 0] = 0.0
    totals = terms.sum(axis=1, keepdims=True)
    return np.clip(np.divide(terms, totals, out=np.zeros_like(terms), where=totals > 0), 0.0, None)


def _points(query_raw: np.ndarray, results_raw: np.ndarray, ranking: Ranking | None) -> tuple[np.ndarray, np.ndarray]:
    """The query's and the results' points in ranking space, from raw vectors."""
    ranking = ranking or RANKINGS[DEFAULT_RANKING]
    query = np.asarray(query_raw, dtype=np.float64)
    results = np.asarray(results_raw, dtype=np.float64)
    if query.shape != (NUM_CLASSES,) or results.ndim != 2 or results.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected raw vectors of {NUM_CLASSES} scores, got shapes {query.shape} and {results.shape}")
    return np.asarray(ranking.query_transform(query), np.float64), np.asarray(ranking.index_transform(results), np.float64)


def class_contributions(query_raw: np.ndarray, result_raw: np.ndarray, ranking: Ranking | None = None) -> np.ndarray:
    """float64[81]: each class's share of the similarity u·w (sums to 1 unless nothing is shared).

    ``ranking`` defaults to the service's. Raw vectors are the stored ones (float[81]).
    """
    return _shares(*_points(query_raw, np.asarray(result_raw, dtype=np.float64).reshape(1, -1), ranking))[0]


def explain_matches(
    query_raw: np.ndarray,
    results_raw: np.ndarray,
    top: int = DEFAULT_TOP,
    min_share: float = DEFAULT_MIN_SHARE,
    ranking: Ranking | None = None,
) -> list[list[ClassContribution]]:
    """For each result (n×81 raw vectors), the ``top`` classes that contributed most to its
    similarity with the query (each at least ``min_share``), biggest first."""
    results = np.asarray(results_raw, dtype=np.float64).reshape(-1, NUM_CLASSES)
    return explain_points(*_points(query_raw, results, ranking), top=top, min_share=min_share)


def explain_points(u: np.ndarray, points: np.ndarray, top: int = DEFAULT_TOP,
                   min_share: float = DEFAULT_MIN_SHARE) -> list[list[ClassContribution]]:
    """``explain_matches`` from points already in ranking space: the query's ``u`` (81,) and
    the results' (n×81), as the index holds them."""
    shares = _shares(u, np.asarray(points).reshape(-1, NUM_CLASSES))
    # One sort for the whole page (a request explains 30 results), then only the top classes.
    order = np.argsort(-shares, axis=1, kind="stable")[:, :top]
    best = np.take_along_axis(shares, order, axis=1)
    return [
        [ClassContribution(c, class_name(c), s) for c, s in zip(row_order, row_best) if s >= min_share]
        for row_order, row_best in zip(order.tolist(), best.tolist())
    ]


def why(contributions: list[ClassContribution]) -> str:
    """One line for the page and the API, e.g. ``"dog 71%, frisbee 22%"``."""
    if not contributions:
        return "no shared objects: closest overall"
    return ", ".join(f"{c.class_name} {round(100 * c.share)}%" for c in contributions)
