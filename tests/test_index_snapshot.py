"""Index snapshots: round trip, memory-mapped loading, atomic replacement, clear errors."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pytest

from recommender.index import KINDS, SnapshotError, build_index, load_snapshot, save_snapshot

DIM = 81


def _index(kind: str = "exact", n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    points = rng.random((n, DIM)) ** 4  # skewed like class scores
    labels = rng.integers(0, 2**63, (n, 2), dtype=np.uint64)
    return build_index(rng.permutation(n) * 3 + 1, points, labels, kind=kind), rng.random((5, DIM))


def _same_pages(a, b, queries) -> None:
    for q in queries:
        for kw in ({}, {"page": 3, "per_page": 17}, {"require": [5], "max_distance": 2.5}):
            ra, rb = a.query(q, **kw), b.query(q, **kw)
            assert ra.ids.tolist() == rb.ids.tolist() and ra.distances.tolist() == rb.distances.tolist()
            assert ra.total == rb.total


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_round_trip_keeps_pages_meta_and_pending_changes(tmp_path: Path, kind: str):
    index, queries = _index(kind)
    changed = index.with_changes([1, 99999], np.ones((2, DIM)) * 0.5, remove_ids=[4, 7])
    assert save_snapshot(changed, tmp_path / "yolov5s", {"position": 41, "detector": "yolov5s"})
    loaded, meta = load_snapshot(tmp_path / "yolov5s")
    assert meta == {"position": 41, "detector": "yolov5s"}
    assert loaded.kind == kind and len(loaded) == len(changed) and 99999 in loaded and 4 not in loaded
    _same_pages(changed, loaded, queries)
    # Changes after loading work on the mapped base as on an in-memory one.
    later = loaded.with_changes([5], np.zeros((1, DIM)), remove_ids=[10])
    _same_pages(changed.with_changes([5], np.zeros((1, DIM)), remove_ids=[10]), later, queries)


def test_a_snapshot_with_another_number_of_codes_loads_exact_and_compacts_to_the_default(tmp_path: Path):
    # An upgrade that changes HEAD_DIMS must not break the snapshot a running service saved.
    rng = np.random.default_rng(3)
    ids, points = np.arange(1, 2001), rng.random((2000, DIM)) ** 4
    older = build_index(ids, points, head_dims=24)
    del older.options["head_dims"]  # as the former default built it: the service passes no head_dims
    save_snapshot(older, tmp_path / "s", {"position": 1})
    loaded, _ = load_snapshot(tmp_path / "s")
    assert loaded._engine.blocks.shape[1] == 24
    queries = rng.random((5, DIM))
    _same_pages(build_index(ids, points), loaded, queries)
    # Changes and the compaction that folds them in (or the next save) use the new default.
    changed = loaded.with_changes([5000], np.full((1, DIM), 0.3), remove_ids=[7])
    keep = ids != 7
    expected = build_index(np.append(ids[keep], 5000), np.vstack([points[keep], np.full((1, DIM), 0.3)]))
    _same_pages(expected, changed, queries)
    compacted = changed.compacted()
    assert compacted._engine.blocks.shape[1] == expected._engine.blocks.shape[1] != 24
    _same_pages(expected, compacted, queries)


def test_loading_maps_the_big_arrays_read_only(tmp_path: Path):
    index, queries = _index()
    save_snapshot(index, tmp_path, {})
    loaded, _ = load_snapshot(tmp_path)
    for array in (loaded._points, loaded._ids, loaded._engine.blocks):
        assert isinstance(array, np.memmap) and not array.flags.writeable
    in_memory, _ = load_snapshot(tmp_path, mmap=False)
    assert not isinstance(in_memory._points, np.memmap)
    _same_pages(loaded, in_memory, queries)


def _snap_file(directory: Path, name: str) -> Path:
    return (directory / "current").resolve() / name


def test_missing_truncated_and_corrupt_snapshots_raise_snapshot_error(tmp_path: Path):
    with pytest.raises(SnapshotError, match="no index snapshot"):
        load_snapshot(tmp_path / "nothing")
    index, _ = _index()
    save_snapshot(index, tmp_path, {})

    path = _snap_file(tmp_path, "points.npy")
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(SnapshotError, match="truncated"):
        load_snapshot(tmp_path)

    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(SnapshotError, match="corrupt"):
        load_snapshot(tmp_path)
    load_snapshot(tmp_path, verify=False)  # sizes and headers still fine: the caller chose

    path.write_bytes(data)
    load_snapshot(tmp_path)
    _snap_file(tmp_path, "engine_blocks.npy").unlink()
    with pytest.raises(SnapshotError, match="missing"):
        load_snapshot(tmp_path)

    save_snapshot(index, tmp_path, {})
    _snap_file(tmp_path, "manifest.json").write_text("{not json")
    with pytest.raises(SnapshotError, match="manifest"):
        load_snapshot(tmp_path)


def test_a_newer_snapshot_is_not_replaced_by_an_older_one_and_old_ones_are_removed(tmp_path: Path):
    index, _ = _index(n=500)
    assert save_snapshot(index, tmp_path, {"position": 10}, order_key="position")
    assert not save_snapshot(index, tmp_path, {"position": 9}, order_key="position")
    assert save_snapshot(index, tmp_path, {"position": 12}, order_key="position")
    assert load_snapshot(tmp_path)[1] == {"position": 12}
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(("snap-", ".tmp-"))]) == 1


def _writer(directory: str, seed: int) -> None:
    index, _ = _index(n=2000 + seed, seed=seed)
    for round_ in range(3):
        save_snapshot(index, directory, {"writer": seed, "round": round_})


def test_concurrent_writers_in_several_processes_leave_one_complete_snapshot(tmp_path: Path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), seed)) for seed in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    loaded, meta = load_snapshot(tmp_path)
    expected, queries = _index(n=2000 + meta["writer"], seed=meta["writer"])
    assert len(loaded) == 2000 + meta["writer"]
    _same_pages(expected, loaded, queries)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(("snap-", ".tmp-"))]) == 1


def test_the_callers_extra_arrays_come_back_with_the_snapshot(tmp_path: Path):
    index, _queries = _index("exact")
    extra = {"class_bounds": np.arange(82, dtype=np.int64), "class_scores": np.linspace(0, 1, 7, dtype=np.float32)}
    assert save_snapshot(index, tmp_path, {"position": 3}, extra=extra)
    _loaded, meta = load_snapshot(tmp_path)
    assert meta["position"] == 3 and set(meta["extra"]) == set(extra)
    for name, array in extra.items():
        assert meta["extra"][name].dtype == array.dtype and np.array_equal(meta["extra"][name], array)
