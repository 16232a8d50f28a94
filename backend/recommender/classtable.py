"""Which photos show which class, and how confidently: the table behind search by object names.

For every class c it keeps the ids of the photos that show c (a box of c scored at or above the
display threshold, the chips' rule) with the score of the best such box, sorted by id. About
three entries per photo, so a search never scans the whole collection: it intersects the lists
of the asked classes, starting from the shortest, and removes the excluded ones.

**Ranking of a search** ``with`` A ``without`` B: every photo that shows all of A and none of B
is a match. Its confidence is the product over c in A of the calibrated presence probability of
c's best box score (``calibrate``, the same calibration the similarity ranking uses): under
independence, the probability that every asked class really is in the photo. Matches are
listed by confidence, highest first, ties by image id; ``total`` counts every match. With no
class in A every match has confidence 1 and they are listed by id.

Immutable like the index: ``with_changes`` returns a new table.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .classes import NUM_CLASSES

_EMPTY_IDS = np.empty(0, dtype=np.int64)
_EMPTY_SCORES = np.empty(0, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class SearchHits:
    """One page of matches, best first."""

    ids: np.ndarray  # int64
    confidence: np.ndarray  # float64, non-increasing
    scores: np.ndarray  # float32[len(ids), len(required)]: best box score of each asked class
    total: int


class ClassTable:
    def __init__(self, ids: Sequence[np.ndarray], scores: Sequence[np.ndarray]) -> None:
        self._ids = list(ids)  # per class: sorted int64 image ids
        self._scores = list(scores)  # per class: float32 best box score, aligned with _ids

    @classmethod
    def build(cls, image_ids: np.ndarray, class_ids: np.ndarray, scores: np.ndarray) -> ClassTable:
        """From one row per (image, class) shown, any order; repeated pairs keep the best score."""
        image_ids = np.asarray(image_ids, dtype=np.int64)
        class_ids = np.asarray(class_ids, dtype=np.int64)
        scores = np.asarray(scores, dtype=np.float32)
        order = np.lexsort((-scores, image_ids, class_ids))
        image_ids, class_ids, scores = image_ids[order], class_ids[order], scores[order]
        first = np.ones(image_ids.shape[0], dtype=bool)
        first[1:] = (image_ids[1:] != image_ids[:-1]) | (class_ids[1:] != class_ids[:-1])
        image_ids, class_ids, scores = image_ids[first], class_ids[first], scores[first]
        bounds = np.searchsorted(class_ids, np.arange(NUM_CLASSES + 1))
        return cls([image_ids[bounds[c] : bounds[c + 1]] for c in range(NUM_CLASSES)],
                   [scores[bounds[c] : bounds[c + 1]] for c in range(NUM_CLASSES)])

    @classmethod
    def from_flat(cls, bounds: np.ndarray, ids: np.ndarray, scores: np.ndarray) -> ClassTable:
        """The inverse of ``flat``: class c's rows are ``[bounds[c], bounds[c + 1])`` (views, no copy)."""
        return cls([ids[bounds[c] : bounds[c + 1]] for c in range(NUM_CLASSES)],
                   [scores[bounds[c] : bounds[c + 1]] for c in range(NUM_CLASSES)])

    def flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bounds int64[82], ids int64, scores float32): every class's rows one after another, to save."""
        bounds = np.concatenate([[0], np.cumsum([ids.shape[0] for ids in self._ids])]).astype(np.int64)
        return bounds, np.concatenate(self._ids).astype(np.int64), np.concatenate(self._scores).astype(np.float32)

    def labels(self, ids: np.ndarray) -> np.ndarray:
        """uint64[len(ids), 2]: the class bits (see ``class_bits``) of each image of sorted ``ids``."""
        counts = [shown.shape[0] for shown in self._ids]
        return class_bits(ids, np.concatenate(self._ids), np.repeat(np.arange(NUM_CLASSES), counts))

    @classmethod
    def empty(cls) -> ClassTable:
        return cls([_EMPTY_IDS] * NUM_CLASSES, [_EMPTY_SCORES] * NUM_CLASSES)

    def counts(self) -> np.ndarray:
        """int64[81]: how many photos show each class (slot 0 unused)."""
        return np.array([ids.shape[0] for ids in self._ids], dtype=np.int64)

    def with_changes(self, touched: np.ndarray, image_ids: np.ndarray, class_ids: np.ndarray,
                     scores: np.ndarray) -> ClassTable:
        """A new table where the photos ``touched`` show exactly the given (image, class, score) rows."""
        touched = np.unique(np.asarray(touched, dtype=np.int64))
        if touched.shape[0] == 0:
            return self
        fresh = ClassTable.build(image_ids, class_ids, scores)
        ids, kept_scores = [], []
        for c in range(NUM_CLASSES):
            keep = ~np.isin(self._ids[c], touched, assume_unique=True)
            if keep.all() and fresh._ids[c].shape[0] == 0:
                ids.append(self._ids[c])
                kept_scores.append(self._scores[c])
                continue
            merged = np.concatenate([self._ids[c][keep], fresh._ids[c]])
            merged_scores = np.concatenate([self._scores[c][keep], fresh._scores[c]])
            order = np.argsort(merged, kind="stable")
            ids.append(merged[order])
            kept_scores.append(merged_scores[order])
        return ClassTable(ids, kept_scores)

    def search(self, required: Sequence[int], excluded: Sequence[int], page: int, per_page: int,
               calibrate: Callable[[np.ndarray], np.ndarray], universe: Callable[[], np.ndarray]) -> SearchHits:
        """Page ``page`` of the photos showing every ``required`` class and no ``excluded`` one.

        ``universe()`` (every indexed id) is only called when nothing is required.
        """
        required = sorted(set(required), key=lambda c: self._ids[c].shape[0])  # shortest list first
        if required:
            matches = self._ids[required[0]]
            for c in required[1:]:
                matches = np.intersect1d(matches, self._ids[c], assume_unique=True)
        else:
            matches = np.unique(np.asarray(universe(), dtype=np.int64))
        for c in set(excluded):
            matches = matches[~np.isin(matches, self._ids[c], assume_unique=True)]
        scores = np.empty((matches.shape[0], len(required)), dtype=np.float32)
        for j, c in enumerate(required):
            scores[:, j] = self._scores[c][np.searchsorted(self._ids[c], matches)]
        confidence = np.prod(calibrate(scores), axis=1) if required else np.ones(matches.shape[0])
        start = (page - 1) * per_page
        order = _page_order(matches, confidence, start, per_page)
        # Columns back in the caller's class order.
        columns = [required.index(c) for c in sorted(required)]
        return SearchHits(matches[order], confidence[order], scores[order][:, columns], int(matches.shape[0]))


def class_bits(ids: np.ndarray, image_ids: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
    """uint64[len(ids), 2]: bit c of word c // 64 set where (image, c) is among the given rows.

    ``ids`` sorted; rows of images not in ``ids`` are ignored. This is the mask the index
    filters with (``with``/``without``), from the same rows the table is made of.
    """
    ids = np.asarray(ids, dtype=np.int64)
    labels = np.zeros((ids.shape[0], 2), dtype=np.uint64)
    if ids.shape[0] == 0 or len(image_ids) == 0:
        return labels
    image_ids, class_ids = np.asarray(image_ids, dtype=np.int64), np.asarray(class_ids, dtype=np.int64)
    pos = np.minimum(np.searchsorted(ids, image_ids), ids.shape[0] - 1)
    hit = ids[pos] == image_ids
    bits = np.left_shift(np.uint64(1), (class_ids[hit] % 64).astype(np.uint64))
    for word in (0, 1):
        chosen = class_ids[hit] // 64 == word
        np.bitwise_or.at(labels[:, word], pos[hit][chosen], bits[chosen])
    return labels


def _page_order(ids: np.ndarray, confidence: np.ndarray, start: int, per_page: int) -> np.ndarray:
    """Positions of page [start, start + per_page) in the order (confidence desc, id asc).

    Only the rows that can reach the page are sorted: those at least as confident as the
    (start + per_page)-th best, ties included, so the order is exactly the full sort's.
    """
    k = start + per_page
    if k >= ids.shape[0]:
        return np.lexsort((ids, -confidence))[start:k]
    kth = np.partition(-confidence, k - 1)[k - 1]
    rows = np.flatnonzero(-confidence <= kth)
    return rows[np.lexsort((ids[rows], -confidence[rows]))][start:k]
