"""Bulk reading of one detector's vectors equals Repository.vectors, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from recommender.classes import NUM_CLASSES
from recommender.classtable import ClassTable, class_bits
from recommender.detection import Detections
from recommender.storage import NewImage, Repository, create_database_engine, upgrade
from recommender.storage.bulk import read_vectors


@pytest.fixture
def repo(database_url: str):
    engine = create_database_engine(database_url)
    upgrade(engine)
    yield Repository(engine)
    engine.dispose()


NOTHING = Detections(np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros((0, 4), np.float32), np.zeros(81, np.float32))


def _image(i: int) -> NewImage:
    sha = hashlib.sha256(f"bulk {i}".encode()).hexdigest()
    return NewImage(name=f"{i:06d}.jpg", sha256=sha, width=4, height=3, format="JPEG", mime="image/jpeg", size_bytes=10)


def test_bulk_read_equals_repository_vectors(repo: Repository):
    rng = np.random.default_rng(3)
    # Values that a lossy path would change: tiny, subnormal-adjacent, exact 0 and 1, many digits.
    vectors = rng.random((300, NUM_CLASSES)).astype(np.float32) ** 8
    vectors[:, 0] = 0.0
    vectors[5] = 1.0
    vectors[6, 7] = np.float32(1e-30)
    repo.ensure_active("maskrcnn")
    ids = [repo.store_image(_image(i), "maskrcnn", NOTHING, vectors[299 - i]).id for i in range(300)]
    # Stored out of id order, and some images only have the other detector's vector.
    for row in rng.permutation(300):
        if row % 7:
            repo.store_vector(ids[row], "yolov5s", NOTHING, vectors[row])
    expected_ids, expected = repo.vectors("yolov5s")
    got_ids, got = read_vectors(repo.engine, "yolov5s")
    assert got_ids.dtype == np.int64 and got.dtype == np.float32 and got.shape == (len(expected_ids), NUM_CLASSES)
    assert got_ids.tolist() == expected_ids.tolist() and len(got_ids) == 300 - 43
    assert np.array_equal(got, expected)
    other_ids, other = read_vectors(repo.engine, "maskrcnn")
    assert other_ids.tolist() == sorted(ids) and np.array_equal(other, repo.vectors("maskrcnn")[1])


def test_bulk_read_of_a_detector_without_vectors_is_empty(repo: Repository):
    ids, values = read_vectors(repo.engine, "nobody")
    assert ids.shape == (0,) and values.shape == (0, NUM_CLASSES)


def test_sqlite_row_batch_fallback_reads_the_same(tmp_path):
    from recommender.storage.bulk import _sqlite_batches, _sqlite_concatenated

    engine = create_database_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    upgrade(engine)
    repo = Repository(engine)
    vectors = np.random.default_rng(4).random((50, NUM_CLASSES)).astype(np.float32)
    repo.ensure_active("yolov5s")
    for i in range(50):
        repo.store_image(_image(i), "yolov5s", NOTHING, vectors[i])
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        fast, slow = _sqlite_concatenated(driver, "yolov5s"), _sqlite_batches(driver, "yolov5s")
    assert fast is not None and np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    assert np.array_equal(slow[1], vectors)
    engine.dispose()


def test_class_bits_are_the_classes_the_chips_show(database_url: str) -> None:
    """Class bits (read in bulk, or for a few images) equal the classes of boxes at or above the display threshold."""
    engine = create_database_engine(database_url)
    upgrade(engine)
    repo = Repository(engine)
    repo.ensure_active("yolov5s")
    boxes = {1: [(1, 0.9), (63, 0.31), (64, 0.5), (80, 0.29)], 2: [(17, 0.2)], 3: [(1, 0.95), (1, 0.4), (62, 0.3)]}
    ids = []
    for i, pairs in boxes.items():
        found = Detections(
            np.array([c for c, _ in pairs], np.int32), np.array([s for _, s in pairs], np.float32),
            np.ones((len(pairs), 4), np.float32), np.zeros(81, np.float32),
        )
        image = NewImage(f"{i}.jpg", f"{i:064x}", 10, 10, "JPEG", "image/jpeg", 1)
        ids.append(repo.store_image(image, "yolov5s", found, np.zeros(81, np.float32)).id)
    table = ClassTable.build(*repo.shown_classes("yolov5s", 0.3))
    labels = table.labels(np.array(ids + [999], dtype=np.int64))
    assert np.array_equal(class_bits(np.array(ids), *repo.shown_classes("yolov5s", 0.3, ids)[:2]), labels[:3])
    expected = []
    for image_id in ids + [999]:
        summary = repo.summaries([image_id], "yolov5s", 0.3).get(image_id)
        bits = np.zeros(2, np.uint64)
        for c in summary.class_ids if summary else ():
            bits[c // 64] |= np.uint64(1) << np.uint64(c % 64)
        expected.append(bits)
    assert labels.tolist() == np.array(expected).tolist()
    assert labels[0].tolist() == [(1 << 1) | (1 << 63), 1 << 0]  # class 63 is the sign bit of word 0
    engine.dispose()


def test_reads_in_pages_return_what_one_read_returns(repo: Repository, monkeypatch) -> None:
    """A large collection is read in pages (each database call stays short); the result is the same."""
    from recommender.storage import bulk

    rng = np.random.default_rng(5)
    repo.ensure_active("yolov5s")
    for i in range(23):
        pairs = [(int(c), float(s)) for c, s in zip(rng.integers(1, 81, 3), rng.random(3))]
        found = Detections(np.array([c for c, _ in pairs], np.int32), np.array([s for _, s in pairs], np.float32),
                           np.ones((3, 4), np.float32), np.zeros(81, np.float32))
        stored = repo.store_image(_image(i), "yolov5s", found, rng.random(NUM_CLASSES).astype(np.float32))
        if i % 5 == 0:
            repo.delete_image(stored.id)  # gaps in the ids, also at a page's edge
    whole_ids, whole = read_vectors(repo.engine, "yolov5s")
    whole_classes = sorted(zip(*(a.tolist() for a in repo.shown_classes("yolov5s", 0.3))))
    for rows in (1, 4, 18, 19):
        monkeypatch.setattr(bulk, "PAGE_ROWS", rows)
        ids, values = read_vectors(repo.engine, "yolov5s")
        assert ids.tolist() == whole_ids.tolist() and np.array_equal(values, whole) and len(ids) == 18
        assert sorted(zip(*(a.tolist() for a in repo.shown_classes("yolov5s", 0.3)))) == whole_classes
    assert whole_classes  # the test has something to compare
