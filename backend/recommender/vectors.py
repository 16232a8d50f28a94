"""Detections → 81-dim class-presence vector, and the transforms the index ranks with.

Ranking (measured by ``bench/ranking.py``; numbers in the README):

1. **Calibrate** each raw score s (YOLOv5s: the aggregation of its ~25,000 candidates'
   objectness × class probability, ``detection/aggregate.py``) to a probability that the class is present,
   ``p = s^b / (s^b + e^(-a) (1 - s)^b)`` (logistic in logit(s): logit p = a + b·logit s),
   a = 1.75, b = 1.3 by default; each detector entry carries the (a, b) fitted to its class
   values (``DetectorSpec.calibration``, ``detector_ranking``). Raw YOLO scores are under-confident: among classes scoring 0.2-0.3 on
   coco_dev about half are present, at 0.6-0.7 over 90 %. a and b were picked on a coarse
   grid on coco_dev; choosing them on half the queries and scoring the other half kept the
   gain (see README), and no per-class parameter is fitted.
2. **Similarity** = Σ_c p_c q_c / sqrt(Σ p · Σ q) (Ochiai / soft cosine on counts: the
   expected number of shared classes over the geometric mean of the expected class counts).
   Ranked exactly by Euclidean distance through an *asymmetric* embedding (the maximum
   inner-product trick): indexed images store ``w = (sqrt(1 - |q|²/Σq), q / sqrt(Σq))`` and a
   query is ``u = (0, p / |p|)``; both have unit length, so |u - w|² = 2 - 2·similarity.
   The spare coordinate is slot 0, the background class, which is always 0 in raw vectors,
   so both stay 81-dimensional. The index must be queried with ``query_transform`` and
   filled with ``ranking_transform``.

Against sqrt + cosine (the previous default) this adds +0.011 NDCG@30 on YOLOv5s coco_dev
and +0.006 on the held-out Mask R-CNN reference vectors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .classes import NUM_CLASSES
from .detection.base import Detections
from .detection.registry import SPECS


def class_presence(detections: Detections) -> np.ndarray:
    """float32[81]: v[c] = highest score of class c in the image, 0 if absent; v[0] = 0."""
    vector = np.zeros(NUM_CLASSES, dtype=np.float32)
    if detections.class_scores is not None:
        vector[:] = np.asarray(detections.class_scores, dtype=np.float32)
    # Kept boxes can only raise a class's value (a backend's class_scores may omit them).
    if len(detections):
        np.maximum.at(vector, detections.class_ids.astype(np.intp), detections.scores.astype(np.float32))
    vector[0] = 0.0
    np.clip(vector, 0.0, 1.0, out=vector)
    return vector


# Score calibration, logit p = a + b·logit s (see the module docstring).
CALIBRATION_OFFSET = 1.75
CALIBRATION_SLOPE = 1.3


def presence_probability(
    vectors: np.ndarray, offset: float = CALIBRATION_OFFSET, slope: float = CALIBRATION_SLOPE
) -> np.ndarray:
    """Calibrated probability that each class is present (same shape, float64; BG stays 0).

    Written as s^b / (s^b + e^-a (1-s)^b) so a score of exactly 0 (nothing detected) stays 0
    and 1 stays 1 without clipping.
    """
    s = np.clip(np.asarray(vectors, dtype=np.float64), 0.0, 1.0)
    hit = s**slope
    miss = np.exp(-offset) * (1.0 - s) ** slope
    p = hit / (hit + miss)
    p[..., 0] = 0.0
    return p


def ranking_transform(vectors: np.ndarray) -> np.ndarray:
    """Indexed side: raw vectors (N×81 or 81) → the unit vectors the index stores."""
    return ochiai_index_points(presence_probability(vectors))


def query_transform(vectors: np.ndarray) -> np.ndarray:
    """Query side: raw vectors (N×81 or 81) → the unit vectors to look up in the index."""
    return ochiai_query_points(presence_probability(vectors))


def ochiai_index_points(p: np.ndarray) -> np.ndarray:
    """Indexed points for probabilities p (slot 0 unused): ``(sqrt(1 - Σp²/Σp), p / sqrt(Σp))``.

    The spare coordinate is ≥ 0 because every p ≤ 1. An image with nothing detected becomes
    (1, 0, …, 0): the neighbour of other empty images and of no query that found something.
    """
    p = np.array(p, dtype=np.float64)
    p[..., 0] = 0.0
    total = p.sum(axis=-1, keepdims=True)
    out = np.zeros_like(p)
    np.divide(p, np.sqrt(total), out=out, where=total > 0)
    squares = (p * p).sum(axis=-1, keepdims=True)
    spare = 1.0 - np.divide(squares, total, out=np.zeros_like(total), where=total > 0)
    out[..., :1] = np.sqrt(np.clip(spare, 0.0, 1.0))
    return out


def ochiai_query_points(p: np.ndarray) -> np.ndarray:
    """Query points for probabilities p: ``(0, p / |p|)``.

    Euclidean distance to ``ochiai_index_points`` is sqrt(2 - 2·Ochiai similarity), so the
    index order is the similarity order. A query with nothing detected becomes (1, 0, …, 0)
    and is answered with the indexed images that have the least evidence of any class.
    """
    p = np.array(p, dtype=np.float64)
    p[..., 0] = 0.0
    norms = np.linalg.norm(p, axis=-1, keepdims=True)
    out = np.zeros_like(p)
    np.divide(p, norms, out=out, where=norms > 0)
    out[..., :1] = np.where(norms > 0, 0.0, 1.0)
    return out


def power_cosine(vectors: np.ndarray, power: float = 0.5) -> np.ndarray:
    """scores^power, L2-normalised: Euclidean order = cosine order on the powered scores.

    power 0.5 (square root) was the best YOLO ranking before calibration (README, Ranking).
    """
    x = np.clip(np.asarray(vectors, dtype=np.float64), 0.0, None) ** power
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def euclidean_raw(vectors: np.ndarray) -> np.ndarray:
    """The reference design's ranking: Euclidean distance on the raw scores."""
    return np.asarray(vectors, dtype=np.float64)


@dataclass(frozen=True)
class Ranking:
    """A named way to rank: what the index stores, and how a query is mapped before lookup."""

    name: str
    description: str
    index_transform: Callable[[np.ndarray], np.ndarray]
    query_transform: Callable[[np.ndarray], np.ndarray]
    # Raw scores → presence probabilities, as this ranking calibrates them (object search uses it).
    presence: Callable[[np.ndarray], np.ndarray] = presence_probability


def calibrated_ranking(offset: float = CALIBRATION_OFFSET, slope: float = CALIBRATION_SLOPE) -> Ranking:
    """The service's ranking (calibrated Ochiai) with the calibration constants of a detector entry."""
    if (offset, slope) == (CALIBRATION_OFFSET, CALIBRATION_SLOPE):
        return RANKINGS[DEFAULT_RANKING]
    return Ranking(
        f"calibrated-ochiai a={offset:g} b={slope:g}",
        f"calibrated presence probabilities (a={offset:g}, b={slope:g}), Ochiai similarity",
        lambda v: ochiai_index_points(presence_probability(v, offset, slope)),
        lambda v: ochiai_query_points(presence_probability(v, offset, slope)),
        lambda v: presence_probability(v, offset, slope),
    )


def detector_ranking(detector: str) -> Ranking:
    """The service's ranking of a detector's vectors, calibrated as its registry entry says
    (default constants for a name the registry does not hold, such as a test's own detector)."""
    spec = SPECS.get(detector)
    return calibrated_ranking(*spec.calibration) if spec is not None else RANKINGS[DEFAULT_RANKING]


RANKINGS: dict[str, Ranking] = {
    r.name: r
    for r in (
        Ranking(
            "calibrated-ochiai",
            "calibrated presence probabilities, Ochiai similarity (service default)",
            ranking_transform,
            query_transform,
        ),
        Ranking("sqrt-cosine", "cosine on square-rooted scores (the best before calibration)", power_cosine, power_cosine),
        Ranking("euclidean-raw", "Euclidean on raw scores (reference design)", euclidean_raw, euclidean_raw),
    )
}
DEFAULT_RANKING = "calibrated-ochiai"
