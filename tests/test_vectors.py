"""The class-presence vector, the ranking the index uses, and the "why" of a match."""

from __future__ import annotations

import numpy as np
import pytest

from recommender.classes import NUM_CLASSES, class_id
from recommender.detection.base import Detections
from recommender.explain import class_contributions, explain_matches, why


def explain_match(query, result):
    return explain_matches(query, result[None])[0]
from recommender.index import NeighborIndex
from recommender.vectors import (
    RANKINGS,
    class_presence,
    presence_probability,
    query_transform,
    ranking_transform,
)


def raw(**scores: float) -> np.ndarray:
    """A raw vector from class names (underscores for spaces) and scores."""
    v = np.zeros(NUM_CLASSES, dtype=np.float32)
    for name, score in scores.items():
        v[class_id(name.replace("_", " "))] = score
    return v


def ranked(query: np.ndarray, gallery: dict[str, np.ndarray]) -> list[str]:
    """Gallery names nearest first, through the real index and the service's transforms."""
    names = list(gallery)
    index = NeighborIndex.build(np.arange(len(names)), ranking_transform(np.stack(list(gallery.values()))))
    result = index.query(query_transform(query), per_page=len(names))
    return [names[int(i)] for i in result.ids]


def test_class_presence_keeps_the_highest_score_per_class() -> None:
    class_scores = np.zeros(NUM_CLASSES, dtype=np.float32)
    class_scores[[1, 17]] = [0.2, 0.05]
    found = Detections(
        class_ids=np.array([1, 1, 3], dtype=np.int32),
        scores=np.array([0.9, 0.6, 0.4], dtype=np.float32),
        boxes=np.zeros((3, 4), dtype=np.float32),
        class_scores=class_scores,
    )
    v = class_presence(found)
    assert v.dtype == np.float32 and v.shape == (NUM_CLASSES,)
    assert v[1] == pytest.approx(0.9) and v[3] == pytest.approx(0.4) and v[17] == pytest.approx(0.05)
    assert v[0] == 0 and np.count_nonzero(v) == 3


def test_calibration_is_monotone_and_keeps_absent_and_certain() -> None:
    scores = np.linspace(0, 1, 101)
    v = np.zeros((101, NUM_CLASSES))
    v[:, 5] = scores
    p = presence_probability(v)[:, 5]
    assert p[0] == 0.0 and p[-1] == 1.0
    assert np.all(np.diff(p) > 0)
    # YOLO's raw scores are under-confident in the middle: a 0.5 means "probably there".
    assert p[50] > 0.75
    assert np.all(presence_probability(v)[:, 0] == 0)


def test_indexed_and_query_points_have_unit_length_and_rank_by_ochiai() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.random((50, NUM_CLASSES)) ** 4
    vectors[:, 0] = 0
    vectors[7] = 0  # nothing detected
    w, u = ranking_transform(vectors), query_transform(vectors)
    assert w.shape == u.shape == (50, NUM_CLASSES)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(u, axis=1), 1.0, atol=1e-12)
    # |u - w|² = 2 - 2 · Σpq / (|p| sqrt(Σq)): the index order is the Ochiai order.
    p = presence_probability(vectors)
    full = np.delete(np.arange(50), 7)
    ochiai = (p[full] @ p[full].T) / np.outer(np.linalg.norm(p[full], axis=1), np.sqrt(p[full].sum(axis=1)))
    distances = ((u[full][:, None, :] - w[full][None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(distances, 2 - 2 * ochiai, atol=1e-12)
    # One vector or many: the same numbers (the service transforms single vectors).
    np.testing.assert_allclose(ranking_transform(vectors[3]), w[3])
    np.testing.assert_allclose(query_transform(vectors[3]), u[3])


def test_images_sharing_the_confident_classes_come_first() -> None:
    gallery = {
        "dog_frisbee": raw(dog=0.85, frisbee=0.5),
        "dog_only": raw(dog=0.9),
        "frisbee_only": raw(frisbee=0.8, person=0.02),
        "cat": raw(cat=0.9),
        "car_street": raw(car=0.9, truck=0.6, traffic_light=0.4),
    }
    order = ranked(raw(dog=0.9, frisbee=0.6, person=0.01), gallery)
    assert order[0] == "dog_frisbee"
    assert set(order[1:3]) == {"dog_only", "frisbee_only"}
    assert set(order[3:]) == {"cat", "car_street"}


def test_an_exact_class_match_beats_a_busy_scene_containing_it() -> None:
    # Relevance is Jaccard: {dog} vs {dog, person, car, chair} is only 1/4 relevant.
    gallery = {
        "busy": raw(dog=0.95, person=0.95, car=0.9, chair=0.9),
        "just_a_dog": raw(dog=0.9),
    }
    assert ranked(raw(dog=0.9), gallery) == ["just_a_dog", "busy"]


def test_a_query_with_nothing_detected_gets_the_images_with_least_evidence() -> None:
    gallery = {
        "person": raw(person=0.95),
        "blank": raw(),
        "faint": raw(bird=0.02),
        "bus": raw(bus=0.9, person=0.3),
    }
    order = ranked(raw(), gallery)
    assert order[:2] == ["blank", "faint"]
    # ...and an image with nothing detected never comes before one sharing the query's class.
    assert ranked(raw(person=0.9), gallery)[:2] == ["person", "bus"]


def test_named_rankings_map_raw_vectors_to_the_index_dimension() -> None:
    vectors = np.abs(np.random.default_rng(0).normal(size=(4, NUM_CLASSES))).clip(0, 1)
    vectors[:, 0] = 0
    for ranking in RANKINGS.values():
        assert ranking.index_transform(vectors).shape == (4, NUM_CLASSES), ranking.name
        assert ranking.query_transform(vectors).shape == (4, NUM_CLASSES), ranking.name
    np.testing.assert_array_equal(RANKINGS["euclidean-raw"].index_transform(vectors), vectors)


# --------------------------------------------------------------------------------- explain


def test_the_why_names_the_shared_classes_by_weight() -> None:
    query = raw(dog=0.9, frisbee=0.6, person=0.01)
    result = raw(dog=0.95, frisbee=0.3, car=0.8)
    shares = class_contributions(query, result)
    assert shares.sum() == pytest.approx(1.0, abs=0.01)
    assert shares[class_id("car")] == 0.0  # only the result shows a car
    top = explain_match(query, result)
    assert [c.class_name for c in top] == ["dog", "frisbee"]
    assert top[0].share > top[1].share > 0.05
    line = why(top)
    assert line.startswith("dog ") and "frisbee" in line and line.endswith("%")


def test_the_why_of_a_match_without_shared_classes_says_so() -> None:
    top = explain_match(raw(cat=0.9), raw(car=0.9))
    assert top == []
    assert why(top) == "no shared objects: closest overall"
    assert explain_match(raw(), raw(dog=0.9)) == []


def test_a_page_is_explained_like_each_of_its_results() -> None:
    query = raw(dog=0.9, frisbee=0.6, person=0.2)
    results = [raw(dog=0.95, frisbee=0.3, car=0.8), raw(cat=0.9), raw(person=0.7, dog=0.4), raw()]
    assert explain_matches(query, np.stack(results)) == [explain_match(query, r) for r in results]


def test_the_why_rejects_vectors_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="81"):
        class_contributions(np.zeros(80), np.zeros(81))
