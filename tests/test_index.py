"""NeighborIndex returns exactly what brute force returns: same ids, order, distances, total.

The reference below re-implements the documented definition of distance independently:
squared Euclidean distance summed in column order in float64, compared on a grid of 2**-32,
ties broken by the smaller image id; reported distance = sqrt(grid key).
"""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recommender.index import MAX_PER_PAGE, NeighborIndex
from recommender.vectors import ranking_transform

DIM = 81
GRID = 2.0**32
REFERENCE_VECTORS = (
    Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))
    / "data"
    / "maskrcnn_reference_vectors.npz"
)


def _raw(scores: dict[int, float]) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    for cls, score in scores.items():
        v[cls] = score
    return v


# Sparse class-presence patterns like real images: a no-detection image (all zero), one class
# at several confidences, and permutations of the same scores over different classes, which
# are equidistant from many queries; exact duplicates arise whenever a pattern is reused.
PATTERNS = ranking_transform(
    np.stack(
        [
            _raw({}),
            _raw({1: 0.9}),
            _raw({1: 0.5}),
            _raw({1: 0.9, 3: 0.6}),
            _raw({1: 0.6, 3: 0.9}),
            _raw({1: 0.9, 3: 0.6, 40: 0.3}),
            _raw({3: 0.6, 40: 0.9, 1: 0.3}),
            _raw({2: 1.0}),
            _raw({2: 1.0, 62: 1.0}),
            _raw({62: 1.0}),
            _raw({5: 0.7, 6: 0.7}),
            _raw({5: 0.7, 7: 0.7}),
            _raw({6: 0.7, 7: 0.7}),
            _raw({17: 0.33, 18: 0.66, 19: 0.99}),
        ]
    )
)
# Queries also come from vectors that are not indexed patterns.
QUERY_VECTORS = np.concatenate(
    [PATTERNS, ranking_transform(np.stack([_raw({1: 0.7, 2: 0.7}), _raw({3: 0.2}), _raw({7: 0.4, 62: 0.8})]))]
)


def _ref_key(x: np.ndarray, q: np.ndarray) -> float:
    total = 0.0
    for a, b in zip(x.tolist(), q.tolist()):
        d = a - b
        total += d * d
    return float(round(total * GRID))


def _reference(model: dict[int, np.ndarray], q: np.ndarray, page: int, per_page: int, exclude_id: int | None):
    ranked = sorted((_ref_key(v, q), image_id) for image_id, v in model.items() if image_id != exclude_id)
    chosen = ranked[(page - 1) * per_page : page * per_page]
    ids = [image_id for _, image_id in chosen]
    distances = [math.sqrt(key / GRID) for key, _ in chosen]
    return ids, distances, len(ranked)


def _reference_keys(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Vectorised form of ``_ref_key`` for larger galleries (same column-order sum)."""
    acc = np.zeros(vectors.shape[0])
    for j in range(vectors.shape[1]):
        d = vectors[:, j] - q[j]
        acc += d * d
    return np.rint(acc * GRID)


def _assert_matches(index: NeighborIndex, model, q, page, per_page, exclude_id) -> None:
    result = index.query(q, page=page, per_page=per_page, exclude_id=exclude_id)
    ids, distances, total = _reference(model, q, page, per_page, exclude_id)
    assert result.ids.tolist() == ids, (page, per_page, exclude_id)
    assert result.distances.tolist() == distances
    assert result.total == total
    assert (result.page, result.per_page) == (page, per_page)


# ---------------------------------------------------------------------------- property test

ids_st = st.integers(0, 40)
pattern_st = st.integers(0, len(PATTERNS) - 1)
query_st = st.tuples(
    st.just("query"),
    st.integers(0, len(QUERY_VECTORS) - 1),
    st.integers(1, 6),
    st.one_of(st.integers(1, 12), st.just(MAX_PER_PAGE)),
    st.one_of(st.none(), ids_st),
)
op_st = st.one_of(
    st.tuples(st.just("add"), ids_st, pattern_st),
    st.tuples(st.just("remove"), ids_st),
    st.tuples(st.just("add_many"), st.lists(st.tuples(ids_st, pattern_st), max_size=8, unique_by=lambda t: t[0])),
    query_st,
)


@settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    initial=st.lists(st.tuples(ids_st, pattern_st), max_size=30, unique_by=lambda t: t[0]),
    ops=st.lists(op_st, max_size=40),
    final_queries=st.lists(query_st, min_size=1, max_size=4),
    rebuild_threshold=st.integers(1, 6),
    rebuild_fraction=st.sampled_from([0.0, 0.1, 0.5]),
)
def test_index_equals_brute_force_under_random_updates(initial, ops, final_queries, rebuild_threshold, rebuild_fraction):
    index = NeighborIndex.build(
        [i for i, _ in initial],
        PATTERNS[[p for _, p in initial]].reshape(-1, DIM),
        rebuild_threshold=rebuild_threshold,
        rebuild_fraction=rebuild_fraction,
    )
    model = {i: PATTERNS[p] for i, p in initial}
    for op in ops + final_queries:
        kind = op[0]
        if kind == "add":
            index.add(op[1], PATTERNS[op[2]])
            model[op[1]] = PATTERNS[op[2]]
        elif kind == "remove":
            assert index.remove(op[1]) == (op[1] in model)
            model.pop(op[1], None)
        elif kind == "add_many":
            index.add_many([i for i, _ in op[1]], PATTERNS[[p for _, p in op[1]]].reshape(-1, DIM))
            model.update({i: PATTERNS[p] for i, p in op[1]})
        else:
            _, q, page, per_page, exclude_id = op
            _assert_matches(index, model, QUERY_VECTORS[q], page, per_page, exclude_id)
        assert len(index) == len(model)
    assert all(i in index for i in model)
    assert not any(i in index for i in range(41) if i not in model)


# ---------------------------------------------------------------------------- examples


def _pattern_index(n: int, cls: type[NeighborIndex] = NeighborIndex, **kw) -> tuple[NeighborIndex, dict[int, np.ndarray]]:
    ids = list(range(10, 10 + n))
    vectors = PATTERNS[np.arange(n) % len(PATTERNS)]
    return cls.build(ids, vectors, **kw), dict(zip(ids, vectors))


def test_page_past_the_end_is_empty_with_the_right_total():
    index, model = _pattern_index(7)
    result = index.query(PATTERNS[1], page=5, per_page=2)
    assert result.ids.tolist() == [] and result.distances.tolist() == []
    assert result.total == 7
    # The last, partial page holds the remainder.
    assert len(index.query(PATTERNS[1], page=4, per_page=2)) == 1
    assert index.query(PATTERNS[1], page=4, per_page=2, exclude_id=10).total == 6
    assert len(index.query(PATTERNS[1], page=4, per_page=2, exclude_id=10)) == 0


def test_per_page_and_page_bounds_are_enforced():
    index, _ = _pattern_index(5)
    for bad in (0, -1, MAX_PER_PAGE + 1):
        with pytest.raises(ValueError, match="per_page must be between 1 and 100"):
            index.query(PATTERNS[0], per_page=bad)
    with pytest.raises(ValueError, match="page must be 1 or more"):
        index.query(PATTERNS[0], page=0)
    with pytest.raises(ValueError, match="must be an integer"):
        index.query(PATTERNS[0], page=1.5)
    assert index.query(PATTERNS[0], per_page=MAX_PER_PAGE).total == 5


def test_excluded_query_image_is_neither_returned_nor_counted():
    index, model = _pattern_index(20)
    query_id = 13
    result = index.query(model[query_id], per_page=100, exclude_id=query_id)
    assert query_id not in result.ids.tolist()
    assert result.total == 19 and len(result) == 19
    # Excluding an id that is not indexed changes nothing.
    assert index.query(model[query_id], per_page=100, exclude_id=12345).total == 20


def test_exact_ties_are_ordered_by_image_id_across_tree_and_delta():
    rng = np.random.default_rng(7)
    same = PATTERNS[3]
    ids = rng.permutation(np.arange(100, 160)).tolist()
    index = NeighborIndex.build(ids[:40], np.tile(same, (40, 1)))
    for image_id in ids[40:]:  # these stay in the brute-forced delta
        index.add(image_id, same)
    index.add(5, PATTERNS[4])  # equidistant permutation of the same scores, smaller id
    assert index.stats()["delta"] == 21
    first = index.query(same, per_page=30)
    assert first.ids.tolist() == list(range(100, 130))
    assert first.distances.tolist() == [0.0] * 30
    second = index.query(same, page=2, per_page=30)
    assert second.ids.tolist() == list(range(130, 160))
    assert index.query(same, page=3, per_page=30).ids.tolist() == [5]
    # The two permutations are equidistant from a query that weights classes 1 and 3 equally.
    sym = ranking_transform(_raw({1: 0.75, 3: 0.75}))
    page = index.query(sym, per_page=3)
    assert page.ids.tolist() == [5, 100, 101]
    assert page.distances[0] == page.distances[1] == page.distances[2]


def test_removed_ids_are_never_returned():
    index, model = _pattern_index(50, rebuild_threshold=1000)
    index.add(500, PATTERNS[1])
    for image_id in (10 + 1, 10 + 15, 10 + 29, 500):  # tree rows and a delta entry
        assert index.remove(image_id)
        model.pop(image_id, None)
    assert not index.remove(500)
    assert 500 not in index and 11 not in index
    for q in QUERY_VECTORS:
        _assert_matches(index, model, q, 1, 100, None)
    # A removed id that comes back is found again with its new vector.
    index.add(11, PATTERNS[8])
    assert index.query(PATTERNS[8], per_page=1).ids.tolist() == [11]


def test_crossing_the_rebuild_threshold_keeps_results_identical():
    index, model = _pattern_index(40, rebuild_threshold=8, rebuild_fraction=0.0)
    queries = [(q, page, per_page, exclude) for q in QUERY_VECTORS for page, per_page, exclude in ((1, 7, 12), (3, 5, None))]
    for step in range(30):
        image_id = 10 + (step * 7) % 60
        if step % 3 == 2:
            index.remove(image_id)
            model.pop(image_id, None)
        else:
            index.add(image_id, PATTERNS[step % len(PATTERNS)])
            model[image_id] = PATTERNS[step % len(PATTERNS)]
        for q, page, per_page, exclude in queries[:: 1 + step % 5]:
            _assert_matches(index, model, q, page, per_page, exclude)
    stats = index.stats()
    assert stats["rebuilds"] >= 3
    assert stats["delta"] + stats["tombstones"] <= 8
    fresh = NeighborIndex.build(list(model), np.stack(list(model.values())))
    for q, page, per_page, exclude in queries:
        a = index.query(q, page=page, per_page=per_page, exclude_id=exclude)
        b = fresh.query(q, page=page, per_page=per_page, exclude_id=exclude)
        assert a.ids.tolist() == b.ids.tolist() and a.distances.tolist() == b.distances.tolist()


def test_empty_index_and_emptied_index_answer_with_no_results():
    index = NeighborIndex()
    result = index.query(PATTERNS[1])
    assert len(result) == 0 and result.total == 0 and len(index) == 0
    index.add(1, PATTERNS[1])
    assert index.query(PATTERNS[1], exclude_id=1).total == 0
    assert index.remove(1)
    assert index.query(PATTERNS[2]).total == 0


def test_bad_vectors_and_ids_are_rejected_with_clear_errors():
    index, _ = _pattern_index(3)
    with pytest.raises(ValueError, match=r"shape \(81,\)"):
        index.add(1, np.zeros(80))
    with pytest.raises(ValueError, match=r"shape \(81,\)"):
        index.query(np.zeros((1, 81)))
    with pytest.raises(ValueError, match="NaN"):
        index.add(1, np.full(81, np.nan))
    with pytest.raises(ValueError, match=r"shape \(n, 81\)"):
        index.add_many([1, 2], np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        index.add_many([1, 2], np.zeros((1, 81)))
    with pytest.raises(ValueError, match="duplicate image ids"):
        NeighborIndex.build([1, 1], np.zeros((2, 81)))
    with pytest.raises(ValueError, match="image id must be an integer"):
        index.add("7", PATTERNS[0])
    assert len(index) == 3


# ---------------------------------------------------------------------------- realistic vectors


@pytest.fixture(scope="module")
def reference_gallery() -> tuple[np.ndarray, np.ndarray]:
    if not REFERENCE_VECTORS.is_file():
        pytest.fail(f"reference vectors not found at {REFERENCE_VECTORS} (set SHARED_DIR)")
    raw = np.load(REFERENCE_VECTORS)["vectors"]
    rng = np.random.default_rng(2024)
    # Resampling creates the large groups of identical vectors a real collection has.
    rows = rng.integers(0, raw.shape[0], 3000)
    ids = rng.permutation(np.arange(1, 3001) * 3)
    return ids.astype(np.int64), ranking_transform(raw[rows])


def _check_against_reference(index, ids, vectors, queries, rng) -> None:
    for qi in queries:
        q = vectors[qi]
        exclude = int(ids[qi]) if rng.random() < 0.8 else None
        keys = _reference_keys(vectors, q)
        keep = ids != exclude
        order = np.lexsort((ids[keep], keys[keep]))
        for page, per_page in ((1, 30), (2, 30), (7, 100)):
            sl = order[(page - 1) * per_page : page * per_page]
            result = index.query(q, page=page, per_page=per_page, exclude_id=exclude)
            assert result.ids.tolist() == ids[keep][sl].tolist()
            assert np.array_equal(result.distances, np.sqrt(keys[keep][sl] / GRID))
            assert result.total == int(keep.sum())


def test_real_detector_vectors_match_brute_force_before_and_after_a_rebuild(reference_gallery):
    ids, vectors = reference_gallery
    rng = np.random.default_rng(5)
    index = NeighborIndex.build(ids, vectors)
    _check_against_reference(index, ids, vectors, rng.integers(0, len(ids), 25), rng)

    # Delete 600 images and re-add 500 of them with another image's vector: crosses the
    # default threshold (max(1024, 10%)) once, so part of it is answered from a fresh tree.
    removed = rng.choice(len(ids), 600, replace=False)
    for row in removed:
        assert index.remove(int(ids[row]))
    alive = np.ones(len(ids), dtype=bool)
    alive[removed] = False
    vectors = vectors.copy()
    for row in removed[:500]:
        vectors[row] = vectors[rng.integers(0, len(ids))]
        index.add(int(ids[row]), vectors[row])
        alive[row] = True
    assert index.stats()["rebuilds"] == 1
    ids, vectors = ids[alive], vectors[alive]
    assert len(index) == len(ids)
    _check_against_reference(index, ids, vectors, rng.integers(0, len(ids), 25), rng)


# ---------------------------------------------------------------------------- threads


class _GatedIndex(NeighborIndex):
    """Holds the next tree build until released, to interleave updates with a rebuild."""

    gate = False

    def _build_tree(self, vectors):
        if self.gate:
            self.build_started.set()
            self.release.wait(10)
        return super()._build_tree(vectors)


def test_updates_and_queries_proceed_during_a_rebuild_and_are_kept():
    index, model = _pattern_index(30, _GatedIndex, rebuild_threshold=4, rebuild_fraction=0.0)
    index.build_started, index.release = threading.Event(), threading.Event()
    index.gate = True
    for image_id in (200, 201, 202, 203):
        index.add(image_id, PATTERNS[image_id % len(PATTERNS)])
        model[image_id] = PATTERNS[image_id % len(PATTERNS)]
    trigger = threading.Thread(target=index.add, args=(204, PATTERNS[2]))
    trigger.start()
    model[204] = PATTERNS[2]
    assert index.build_started.wait(10), "the fifth pending update should start a rebuild"
    index.gate = False
    # While the tree is being built: remove snapshot members, re-add, add, remove a new one.
    index.remove(10)
    index.remove(200)
    index.add(11, PATTERNS[9])
    index.add(300, PATTERNS[7])
    index.add(301, PATTERNS[7])
    index.remove(301)
    index.add_many([12, 302], PATTERNS[[0, 13]])
    for image_id in (10, 200):
        model.pop(image_id)
    model.update({11: PATTERNS[9], 300: PATTERNS[7], 12: PATTERNS[0], 302: PATTERNS[13]})
    for q in QUERY_VECTORS:
        _assert_matches(index, model, q, 1, 100, 11)
    assert index.stats()["rebuilding"], "updates and queries must not wait for the tree build"
    index.release.set()
    trigger.join(10)
    stats = index.stats()
    assert stats["rebuilds"] == 1 and not stats["rebuilding"]
    assert stats["base"] == 35  # the snapshot: 30 built + 5 added before the rebuild began
    for q in QUERY_VECTORS:
        _assert_matches(index, model, q, 1, 100, None)
        _assert_matches(index, model, q, 2, 7, 300)


def test_concurrent_readers_never_see_removed_ids_and_see_new_ids_at_once():
    index, model = _pattern_index(200, rebuild_threshold=16, rebuild_fraction=0.0)
    rng = np.random.default_rng(11)
    raw = rng.random((150, DIM)) * (rng.random((150, DIM)) < 0.05)
    raw[np.arange(150), rng.integers(1, DIM, 150)] = 0.5 + 0.5 * rng.random(150)
    raw[:, 0] = 0.0
    fresh_vectors = ranking_transform(raw)  # continuous scores: no exact duplicates
    removed_done: set[int] = set()
    state = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []

    def writer() -> None:
        try:
            for i in range(150):
                old_id, new_id = 10 + i, 1000 + i
                index.remove(old_id)
                with state:
                    removed_done.add(old_id)
                index.add(new_id, fresh_vectors[i])
                found = index.query(fresh_vectors[i], per_page=1).ids.tolist()
                if found != [new_id]:
                    failures.append(f"just-added {new_id} not found first: {found}")
        except Exception as exc:  # surfaced below: a thread's exception would otherwise vanish
            failures.append(repr(exc))
        finally:
            stop.set()

    def reader(seed: int) -> None:
        local = np.random.default_rng(seed)
        try:
            while not stop.is_set():
                with state:
                    gone = set(removed_done)
                q = QUERY_VECTORS[local.integers(len(QUERY_VECTORS))]
                result = index.query(q, page=int(local.integers(1, 3)), per_page=100)
                leaked = gone & set(result.ids.tolist())
                if leaked:
                    failures.append(f"removed ids returned: {sorted(leaked)}")
        except Exception as exc:
            failures.append(repr(exc))

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:5]
    for i in range(150):
        model.pop(10 + i)
        model[1000 + i] = fresh_vectors[i]
    assert index.stats()["rebuilds"] >= 1
    for q in QUERY_VECTORS[::3]:
        _assert_matches(index, model, q, 1, 100, None)
