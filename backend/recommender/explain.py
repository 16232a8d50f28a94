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


def class_contributions(
    query_raw: np.ndarray,
    result_raw: np.ndarray,
    ranking: Ranking | None = None,
) -> np.ndarray:
    """float64[81]: each class's share of the similarity u·w (sums to 1 unless nothing is shared).

    ``ranking`` defaults to the service's. Raw vectors are the stored ones (float[81]).
    """
    ranking = ranking or RANKINGS[DEFAULT_RANKING]
    query = np.asarray(query_raw, dtype=np.float64)
    result = np.asarray(result_raw, dtype=np.float64)
    if query.shape != (NUM_CLASSES,) or result.shape != (NUM_CLASSES,):
        raise ValueError(f"expected two raw vectors of {NUM_CLASSES} scores, got shapes {query.shape} and {result.shape}")
    u = np.asarray(ranking.query_transform(query), dtype=np.float64)
    w = np.asarray(ranking.index_transform(result), dtype=np.float64)
    terms = u * w
    total = float(terms.sum())
    shares = np.zeros(NUM_CLASSES, dtype=np.float64)
    if total > 0:
        shares[:] = np.clip(terms[:NUM_CLASSES] / total, 0.0, None)
    shares[0] = 0.0
    return shares


def explain_match(
    query_raw: np.ndarray,
    result_raw: np.ndarray,
    top: int = DEFAULT_TOP,
    min_share: float = DEFAULT_MIN_SHARE,
    ranking: Ranking | None = None,
) -> list[ClassContribution]:
    """The ``top`` classes that contributed most (each at least ``min_share``), biggest first."""
    shares = class_contributions(query_raw, result_raw, ranking)
    return _top(shares, top, min_share)


def explain_matches(
    query_raw: np.ndarray,
    results_raw: np.ndarray,
    top: int = DEFAULT_TOP,
    min_share: float = DEFAULT_MIN_SHARE,
    ranking: Ranking | None = None,
) -> list[list[ClassContribution]]:
    """``explain_match`` for a whole page of results (n×81) in one vectorised pass."""
    ranking = ranking or RANKINGS[DEFAULT_RANKING]
    results = np.asarray(results_raw, dtype=np.float64).reshape(-1, NUM_CLASSES)
    u = np.asarray(ranking.query_transform(np.asarray(query_raw, dtype=np.float64)), dtype=np.float64)
    terms = np.asarray(ranking.index_transform(results), dtype=np.float64) * u
    terms[:, 0] = 0.0
    totals = terms.sum(axis=1, keepdims=True)
    shares = np.clip(np.divide(terms, totals, out=np.zeros_like(terms), where=totals > 0), 0.0, None)
    return [_top(row, top, min_share) for row in shares]


def _top(shares: np.ndarray, top: int, min_share: float) -> list[ClassContribution]:
    order = np.argsort(-shares, kind="stable")[:top]
    return [ClassContribution(int(c), class_name(int(c)), float(shares[c])) for c in order if shares[c] >= min_share]


def why(contributions: list[ClassContribution]) -> str:
    """One line for the page and the API, e.g. ``"dog 71%, frisbee 22%"``."""
    if not contributions:
        return "no shared objects: closest overall"
    return ", ".join(f"{c.class_name} {round(100 * c.share)}%" for c in contributions)
