"""Every index kind returns exactly what brute force returns: same ids, order, distances, total.

The reference below re-implements the documented definition independently: squared Euclidean
distance over the stored (float32) points, summed in column order in float64, compared on a
grid of 2**-32, ties broken by the smaller image id; reported distance = sqrt(grid key);
filters by class bitmask; max_distance on the reported distance.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REFERENCE_VECTORS
from recommender.index import (
    EXACT_KINDS,
    MAX_PER_PAGE,
    NeighborIndex,
    QueryResult,
    build_index,
    class_mask,
    distance_keys,
    empty_index,
    label_classes,
    labels_from_scores,
)
from recommender.vectors import query_transform, ranking_transform

DIM = 81
GRID = 2.0**32


def _raw(scores: dict[int, float]) -> np.ndarray:
    v = np.zeros(DIM, dtype=np.float32)
    for cls, score in scores.items():
        v[cls] = score
    return v


# Class-presence patterns like real images: nothing detected, one class at several
# confidences, and permutations of the same scores over other classes, which are equidistant
# from many queries; exact duplicates arise whenever a pattern is reused.
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
).astype(np.float32)
QUERY_VECTORS = np.concatenate(
    [
        query_transform(np.stack([_raw({1: 0.9}), _raw({1: 0.7, 2: 0.7}), _raw({3: 0.2}), _raw({7: 0.4, 62: 0.8})])),
        PATTERNS,
    ]
)
LABEL_CLASSES = [1, 2, 3, 40, 62, 79]
MAX_DISTANCES = [None, 0.0, 0.5, 0.9, 1.2, 1.5]


def _mask(classes) -> np.ndarray:
    return class_mask(sorted(classes))


def _ref_keys(points: np.ndarray, q: np.ndarray) -> np.ndarray:
    acc = np.zeros(points.shape[0])
    p = points.astype(np.float64)
    for j in range(DIM):
        d = p[:, j] - q[j]
        acc += d * d
    return np.rint(acc * GRID)


def _reference(model: dict, q, page, per_page, exclude_id=None, require=(), forbid=(), max_distance=None):
    """model: id -> (float32 point, set of classes)."""
    ids = [i for i, (_, classes) in model.items() if i != exclude_id and set(require) <= classes and not set(forbid) & classes]
    points = np.stack([model[i][0] for i in ids]) if ids else np.zeros((0, DIM), np.float32)
    keys = _ref_keys(points, q)
    ranked = sorted(zip(keys.tolist(), ids))
    if max_distance is not None:
        ranked = [(k, i) for k, i in ranked if math.sqrt(k / GRID) <= max_distance]
    chosen = ranked[(page - 1) * per_page : page * per_page]
    return [i for _, i in chosen], [math.sqrt(k / GRID) for k, _ in chosen], len(ranked)


def _assert_matches(index, model, q, page=1, per_page=30, exclude_id=None, require=(), forbid=(), max_distance=None):
    result = index.query(
        q, page, per_page, exclude_id=exclude_id, require=list(require), forbid=list(forbid), max_distance=max_distance
    )
    ids, distances, total = _reference(model, q, page, per_page, exclude_id, require, forbid, max_distance)
    context = (index.kind, page, per_page, exclude_id, require, forbid, max_distance)
    assert result.ids.tolist() == ids, context
    assert result.distances.tolist() == distances, context
    assert result.total == total, context
    assert (result.page, result.per_page) == (page, per_page)
    # The page carries each result's stored point and classes (the service reads neither again).
    assert [model[i][0].tolist() for i in ids] == result.points.tolist(), context
    assert [tuple(sorted(model[i][1])) for i in ids] == label_classes(result.labels), context


# ---------------------------------------------------------------------------- property test

ids_st = st.integers(0, 40)
classes_st = st.frozensets(st.sampled_from(LABEL_CLASSES), max_size=3)
entry_st = st.tuples(ids_st, st.integers(0, len(PATTERNS) - 1), classes_st)
query_st = st.tuples(
    st.just("query"),
    st.integers(0, len(QUERY_VECTORS) - 1),
    st.integers(1, 6),
    st.one_of(st.integers(1, 12), st.just(MAX_PER_PAGE)),
    st.one_of(st.none(), ids_st),
    st.frozensets(st.sampled_from(LABEL_CLASSES), max_size=2),
    st.frozensets(st.sampled_from(LABEL_CLASSES), max_size=1),
    st.sampled_from(MAX_DISTANCES),
)
change_st = st.tuples(
    st.just("change"), st.lists(entry_st, max_size=6, unique_by=lambda t: t[0]), st.lists(ids_st, max_size=4)
)
op_st = st.one_of(change_st, query_st, st.just(("compact",)), st.just(("old",)))


def _batch(entries):
    ids = [i for i, _, _ in entries]
    points = PATTERNS[[p for _, p, _ in entries]].reshape(-1, DIM)
    labels = np.stack([_mask(c) for _, _, c in entries]) if entries else np.zeros((0, 2), np.uint64)
    return ids, points, labels


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(EXACT_KINDS),
    initial=st.lists(entry_st, max_size=30, unique_by=lambda t: t[0]),
    ops=st.lists(op_st, max_size=25),
    final_queries=st.lists(query_st, min_size=1, max_size=4),
    compact_min=st.integers(1, 8),
)
def test_index_equals_brute_force_under_random_changes(kind, initial, ops, final_queries, compact_min):
    index = build_index(*_batch(initial), kind=kind, compact_min=compact_min, compact_fraction=0.0)
    model = {i: (PATTERNS[p], set(c)) for i, p, c in initial}
    previous = (index, dict(model))
    for op in ops + final_queries:
        if op[0] == "change":
            _, entries, removed = op
            previous = (index, dict(model))
            index = index.with_changes(*_batch(entries), remove_ids=removed)
            for i in removed:
                model.pop(i, None)
            model.update({i: (PATTERNS[p], set(c)) for i, p, c in entries})
        elif op[0] == "compact":
            if index.needs_compaction():
                index = index.compacted()
                assert index.stats()["delta"] == index.stats()["tombstones"] == 0
        elif op[0] == "old":  # the index before the last change is untouched by it
            old_index, old_model = previous
            _assert_matches(old_index, old_model, QUERY_VECTORS[0], 1, MAX_PER_PAGE)
        else:
            _, q, page, per_page, exclude_id, require, forbid, max_distance = op
            _assert_matches(index, model, QUERY_VECTORS[q], page, per_page, exclude_id, require, forbid, max_distance)
        assert len(index) == len(model)
    assert all(i in index for i in model)
    assert not any(i in index for i in range(41) if i not in model)


# ---------------------------------------------------------------------------- examples


def _pattern_model(n: int, first_id: int = 10) -> tuple[list[int], np.ndarray, np.ndarray, dict]:
    ids = list(range(first_id, first_id + n))
    points = PATTERNS[np.arange(n) % len(PATTERNS)]
    classes = [{LABEL_CLASSES[i % len(LABEL_CLASSES)]} for i in range(n)]
    labels = np.stack([_mask(c) for c in classes])
    return ids, points, labels, {i: (p, c) for i, p, c in zip(ids, points, classes)}


@pytest.mark.parametrize("kind", EXACT_KINDS)
def test_pages_past_the_end_are_empty_with_the_right_total_even_for_huge_page_numbers(kind):
    ids, points, labels, model = _pattern_model(7)
    index = build_index(ids, points, labels, kind=kind)
    for page in (5, 2**31, 2**63, 10**30):
        result = index.query(PATTERNS[1], page=page, per_page=2)
        assert result.ids.tolist() == [] and result.distances.tolist() == [] and result.total == 7
    assert len(index.query(PATTERNS[1], page=4, per_page=2)) == 1
    assert index.query(PATTERNS[1], page=4, per_page=2, exclude_id=10).total == 6
    assert index.query(PATTERNS[1], page=2**63, per_page=MAX_PER_PAGE, require=[1]).total == 2


@pytest.mark.parametrize("kind", EXACT_KINDS)
def test_page_and_per_page_bounds_and_bad_input_are_rejected_clearly(kind):
    ids, points, labels, _ = _pattern_model(5)
    index = build_index(ids, points, labels, kind=kind)
    for bad in (0, -1, MAX_PER_PAGE + 1):
        with pytest.raises(ValueError, match="per_page must be between 1 and 100"):
            index.query(PATTERNS[0], per_page=bad)
    with pytest.raises(ValueError, match="page must be 1 or more"):
        index.query(PATTERNS[0], page=0)
    with pytest.raises(ValueError, match="must be an integer"):
        index.query(PATTERNS[0], page=1.5)
    with pytest.raises(ValueError, match=r"shape \(81,\)"):
        index.query(np.zeros(80))
    with pytest.raises(ValueError, match="class id must be between 1 and 127"):
        index.query(PATTERNS[0], require=[200])
    with pytest.raises(ValueError, match="max_distance must be a finite number"):
        index.query(PATTERNS[0], max_distance=float("nan"))
    with pytest.raises(ValueError, match="duplicate image ids"):
        build_index([1, 1], np.zeros((2, DIM)), kind=kind)
    with pytest.raises(ValueError, match="2 ids but 1 vectors"):
        index.with_changes([1, 2], np.zeros((1, DIM)))
    with pytest.raises(ValueError, match="NaN or infinite"):
        index.with_changes([1], np.full((1, DIM), np.nan))
    with pytest.raises(ValueError, match="image id must be an integer"):
        index.with_changes(remove_ids=["7"])
    with pytest.raises(ValueError, match="exclude_id must be a 64-bit integer"):
        index.query(PATTERNS[0], exclude_id=True)
    assert len(index.with_changes(remove_ids=[10, 10, 999])) == 4
    assert len(index) == 5


@pytest.mark.parametrize("kind", EXACT_KINDS)
def test_exact_ties_are_ordered_by_image_id_across_base_and_delta(kind):
    rng = np.random.default_rng(7)
    same = PATTERNS[3]
    ids = rng.permutation(np.arange(100, 160)).tolist()
    index = build_index(ids[:40], np.tile(same, (40, 1)), kind=kind)
    index = index.with_changes(ids[40:], np.tile(same, (20, 1)))
    index = index.with_changes([5], PATTERNS[4][None, :])  # same scores permuted, smaller id
    assert index.stats()["delta"] == 21
    first = index.query(same, per_page=30)
    assert first.ids.tolist() == list(range(100, 130)) and first.distances.tolist() == [0.0] * 30
    assert index.query(same, page=2, per_page=30).ids.tolist() == list(range(130, 160))
    assert index.query(same, page=3, per_page=30).ids.tolist() == [5]
    sym = ranking_transform(_raw({1: 0.75, 3: 0.75}))
    page = index.query(sym, per_page=3)
    assert page.ids.tolist() == [5, 100, 101]
    assert page.distances[0] == page.distances[1] == page.distances[2]


@pytest.mark.parametrize("kind", EXACT_KINDS)
def test_with_changes_leaves_the_original_untouched_and_upserts_replace(kind):
    ids, points, labels, model = _pattern_model(30)
    index = build_index(ids, points, labels, kind=kind)
    changed = index.with_changes([11, 500], PATTERNS[[8, 8]], np.stack([_mask({62}), _mask({62})]), remove_ids=[12, 777])
    assert 12 in index and 12 not in changed and 500 not in index and 500 in changed
    assert len(index) == 30 and len(changed) == 30
    before = index.query(PATTERNS[8], per_page=MAX_PER_PAGE)
    _assert_matches(index, model, PATTERNS[8], per_page=MAX_PER_PAGE)
    new_model = dict(model)
    new_model.pop(12)
    new_model.update({11: (PATTERNS[8], {62}), 500: (PATTERNS[8], {62})})
    for q in QUERY_VECTORS:
        _assert_matches(changed, new_model, q, per_page=MAX_PER_PAGE, require=[62])
        _assert_matches(changed, new_model, q, page=2, per_page=7)
    # Removing and re-adding the same id in one call: removals apply first.
    again = changed.with_changes([12], PATTERNS[[2]], remove_ids=[12, 11])
    assert 12 in again and 11 not in again
    assert index.query(PATTERNS[8], per_page=MAX_PER_PAGE).ids.tolist() == before.ids.tolist()
    compacted = changed.compacted()
    assert compacted.stats() == {"kind": kind, "size": 30, "base": 30, "delta": 0, "tombstones": 0}
    for q in QUERY_VECTORS:
        _assert_matches(compacted, new_model, q, page=1, per_page=13, exclude_id=500, forbid=[1])


def test_needs_compaction_follows_the_thresholds():
    ids, points, labels, _ = _pattern_model(100)
    index = build_index(ids, points, labels, compact_min=5, compact_fraction=0.0)
    grown = index.with_changes(list(range(1000, 1005)), np.tile(PATTERNS[1], (5, 1)))
    assert not grown.needs_compaction()
    assert grown.with_changes(remove_ids=[10]).needs_compaction()
    assert not build_index(ids, points, labels, compact_min=5, compact_fraction=0.5).with_changes(
        remove_ids=list(range(10, 40))
    ).needs_compaction()


@pytest.mark.parametrize("kind", EXACT_KINDS)
def test_empty_and_emptied_index_answer_with_no_results(kind):
    index = empty_index(kind)
    assert index.query(PATTERNS[1]).total == 0 and len(index) == 0
    index = index.with_changes([1], PATTERNS[[1]])
    assert index.query(PATTERNS[1], exclude_id=1).total == 0
    assert index.query(PATTERNS[1]).ids.tolist() == [1]
    emptied = index.with_changes(remove_ids=[1]).compacted()
    assert emptied.query(PATTERNS[2]).total == 0 and len(emptied) == 0


def test_labels_from_scores_and_class_masks_use_bit_c_of_word_c_div_64():
    scores = np.zeros((2, DIM))
    scores[0, [1, 63, 64, 80]] = 0.9
    scores[1, [0, 2]] = [0.9, 0.1]
    labels = labels_from_scores(scores, 0.25)
    assert labels[0].tolist() == [(1 << 1) | (1 << 63), (1 << 0) | (1 << 16)]
    assert labels[1].tolist() == [0, 0]  # slot 0 is the background, never a class
    assert class_mask([1, 63, 64, 80]).tolist() == labels[0].tolist()
    assert label_classes(labels) == [(1, 63, 64, 80), ()]


# ---------------------------------------------------------------------------- realistic vectors


@pytest.fixture(scope="module")
def dense_gallery() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """70,000 dense vectors like YOLOv5s's (every class scored), from the reference vectors.

    Rows resample the 5000 reference photos with logit noise, so near-duplicates crowd every
    query (the hard case for the scan's error bound); ids are scattered, not row numbers.
    """
    raw = np.load(REFERENCE_VECTORS)["vectors"].astype(np.float64)
    rng = np.random.default_rng(2024)
    seeds = np.clip(raw[rng.integers(0, raw.shape[0], 70_000)], 1e-3, 1 - 1e-3)
    logits = np.log(seeds) - np.log1p(-seeds) + 0.3 * rng.standard_normal(seeds.shape)
    noisy = 1 / (1 + np.exp(-logits))
    noisy[:, 0] = 0
    noisy[:500] = noisy[500:1000]  # exact duplicates too
    ids = (rng.permutation(70_000) * 5 + 3).astype(np.int64)
    return ids, ranking_transform(noisy).astype(np.float32), labels_from_scores(noisy, 0.25), query_transform(noisy)


def _check_gallery(index, ids, points, labels, queries, rows, **filters) -> None:
    require, forbid = class_mask(filters.get("require")), class_mask(filters.get("forbid"))
    ok = ((labels & require) == require).all(axis=1) & ((labels & forbid) == 0).all(axis=1)
    for qi in rows:
        q = queries[qi]
        exclude = int(ids[qi])
        keep = ok & (ids != exclude)
        keys = distance_keys(points[keep], q)
        if filters.get("max_distance") is not None:
            within = np.sqrt(keys / GRID) <= filters["max_distance"]
        else:
            within = np.ones(keys.shape[0], bool)
        kept_ids, keys = ids[keep][within], keys[within]
        order = np.lexsort((kept_ids, keys))
        for page, per_page in ((1, 30), (5, 30), (3, 100)):
            sl = order[(page - 1) * per_page : page * per_page]
            result = index.query(q, page, per_page, exclude_id=exclude, **filters)
            assert result.ids.tolist() == kept_ids[sl].tolist(), (index.kind, qi, page, filters)
            assert np.array_equal(result.distances, np.sqrt(keys[sl] / GRID))
            assert result.total == keys.shape[0]


def test_default_and_balltree_return_the_same_pages_as_brute_force_on_dense_vectors(dense_gallery):
    ids, points, labels, queries = dense_gallery
    rows = np.random.default_rng(5).integers(0, len(ids), 6)
    exact = build_index(ids, points, labels, threads=2, min_blocks_per_thread=16)  # the scan is split in two
    tree = build_index(ids, points, labels, kind="balltree")
    for index in (exact, tree):
        _check_gallery(index, ids, points, labels, queries, rows)
    person, dog = 1, 17
    for filters in ({"require": [dog]}, {"forbid": [person]}, {"max_distance": 0.6}, {"require": [person], "max_distance": 0.9}):
        _check_gallery(exact, ids, points, labels, queries, rows[:3], **filters)
    _check_gallery(tree, ids, points, labels, queries, rows[:2], require=[dog], max_distance=0.8)
    for qi in rows:
        a, b = exact.query(queries[qi], 2, 50), tree.query(queries[qi], 2, 50)
        assert a.ids.tolist() == b.ids.tolist() and a.distances.tolist() == b.distances.tolist()


@pytest.mark.parametrize("head_dims", [1, 81])
def test_pages_stay_exact_whatever_share_of_the_rotated_vector_the_scan_reads(dense_gallery, head_dims):
    # One rotated dimension makes the bound loose (most rows need their float distance); all 81
    # leave no tail. Either way pages, distances and totals must equal brute force.
    ids, points, labels, queries = dense_gallery
    rows = np.random.default_rng(6).integers(0, len(ids), 3)
    index = build_index(ids, points, labels, head_dims=head_dims)
    _check_gallery(index, ids, points, labels, queries, rows)
    _check_gallery(index, ids, points, labels, queries, rows[:2], require=[1], max_distance=0.7)


def test_changes_on_a_large_index_match_brute_force(dense_gallery):
    ids, points, labels, queries = dense_gallery
    rng = np.random.default_rng(9)
    index = build_index(ids, points, labels)
    removed = rng.choice(len(ids), 3000, replace=False)
    replaced = removed[:1000]
    points = points.copy()
    points[replaced] = points[rng.integers(0, len(ids), 1000)]
    index = index.with_changes(ids[replaced], points[replaced], labels[replaced], remove_ids=ids[removed[1000:]])
    alive = np.ones(len(ids), bool)
    alive[removed[1000:]] = False
    _check_gallery(index, ids[alive], points[alive], labels[alive], queries[alive], rng.integers(0, alive.sum(), 4))
    _check_gallery(index.compacted(), ids[alive], points[alive], labels[alive], queries[alive], [0, 1], forbid=[1])


# ---------------------------------------------------------------------------- the mutable facade


def test_neighbor_index_shim_keeps_the_old_interface():
    ids, points, _, _ = _pattern_model(20)
    shim = NeighborIndex.build(ids, points, rebuild_threshold=3, rebuild_fraction=0.0)
    shim.add(100, PATTERNS[9])
    assert not shim.remove(12345)
    assert shim.remove(10) and 10 not in shim and 100 in shim and len(shim) == 20
    shim.add_many([101, 102], PATTERNS[[9, 9]])
    assert shim.stats()["rebuilds"] >= 1
    result = shim.query(PATTERNS[9], per_page=3, exclude_id=100)
    assert isinstance(result, QueryResult) and result.ids.tolist() == [19, 101, 102]


def test_concurrent_readers_never_see_removed_ids_and_see_new_ids_at_once():
    ids, points, _, _ = _pattern_model(200)
    shim = NeighborIndex.build(ids, points, rebuild_threshold=16, rebuild_fraction=0.0)
    rng = np.random.default_rng(11)
    raw = rng.random((150, DIM)) * (rng.random((150, DIM)) < 0.05)
    raw[np.arange(150), rng.integers(1, DIM, 150)] = 0.5 + 0.5 * rng.random(150)
    raw[:, 0] = 0.0
    fresh = ranking_transform(raw).astype(np.float32)  # continuous scores: no exact duplicates
    removed_done: set[int] = set()
    state = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []

    def writer() -> None:
        try:
            for i in range(150):
                shim.remove(10 + i)
                with state:
                    removed_done.add(10 + i)
                shim.add(1000 + i, fresh[i])
                found = shim.query(fresh[i], per_page=1).ids.tolist()
                if found != [1000 + i]:
                    failures.append(f"just-added {1000 + i} not found first: {found}")
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
                leaked = gone & set(shim.query(q, page=int(local.integers(1, 3)), per_page=100).ids.tolist())
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
    assert shim.stats()["rebuilds"] >= 1


def test_the_index_never_shares_memory_the_caller_can_write():
    ids, points, labels, model = _pattern_model(20)
    writable = points.copy()
    index = build_index(ids, writable, labels)
    writable[:] = PATTERNS[0]  # the caller reuses its buffer
    _assert_matches(index, model, PATTERNS[5], per_page=MAX_PER_PAGE)
    frozen = points.copy()
    frozen.setflags(write=False)  # e.g. np.load(..., mmap_mode="r"): used in place
    assert build_index(ids, frozen, labels)._points is frozen


# ---------------------------------------------------------------------------- the approximate kind


def test_ivf_kind_finds_nearly_all_exact_neighbours_and_keeps_the_interface(dense_gallery):
    ids, points, labels, queries = dense_gallery
    exact = build_index(ids, points, labels)
    ivf = build_index(ids, points, labels, kind="ivf", nlist=64, nprobe=16)
    rows = np.random.default_rng(3).integers(0, len(ids), 20)
    row_of = {i: r for r, i in enumerate(ids.tolist())}
    recall = []
    for qi in rows:
        want = exact.query(queries[qi], exclude_id=int(ids[qi]))
        got = ivf.query(queries[qi], exclude_id=int(ids[qi]))
        recall.append(len(set(want.ids.tolist()) & set(got.ids.tolist())) / 30)
        assert got.total == want.total == len(ids) - 1 and int(ids[qi]) not in got.ids
        # Every returned distance is exact, in the contract's order.
        assert np.array_equal(got.distances, np.sort(got.distances))
        rows_of_got = [row_of[i] for i in got.ids.tolist()]
        assert np.array_equal(got.distances, np.sqrt(distance_keys(points[rows_of_got], queries[qi]) / GRID))
    assert np.mean(recall) >= 0.95
    # Class filters run inside faiss's scan: a page is full and total is exact.
    dog = 17
    filtered = ivf.query(queries[rows[0]], per_page=50, require=[dog])
    passing = ((labels[:, 0] >> np.uint64(dog)) & np.uint64(1)).astype(bool)
    assert filtered.total == int(passing.sum()) and len(filtered) == min(50, filtered.total)
    assert set(filtered.ids.tolist()) <= set(ids[passing].tolist())
    changed = ivf.with_changes([1], points[:1], labels[:1], remove_ids=[int(filtered.ids[0])])
    assert int(filtered.ids[0]) not in changed.query(queries[rows[0]], per_page=50, require=[dog]).ids
