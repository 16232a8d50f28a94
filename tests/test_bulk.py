"""Bulk reading of one detector's vectors equals Repository.vectors, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from recommender.classes import NUM_CLASSES
from recommender.storage import NewImage, Repository, create_database_engine, upgrade
from recommender.storage.bulk import read_vectors


@pytest.fixture
def repo(database_url: str):
    engine = create_database_engine(database_url)
    upgrade(engine)
    yield Repository(engine)
    engine.dispose()


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
    with repo.transaction() as conn:
        ids = [repo.add_image(conn, _image(i)).id for i in range(300)]
        # Inserted out of id order, and some images only have the other detector's vector.
        for row in rng.permutation(300):
            if row % 7:
                repo.put_vector(conn, ids[row], "yolov5s", vectors[row], new=True)
            repo.put_vector(conn, ids[row], "maskrcnn-coco", vectors[299 - row], new=True)
    expected_ids, expected = repo.vectors("yolov5s")
    got_ids, got = read_vectors(repo.engine, "yolov5s")
    assert got_ids.dtype == np.int64 and got.dtype == np.float32 and got.shape == (len(expected_ids), NUM_CLASSES)
    assert got_ids.tolist() == expected_ids.tolist() and len(got_ids) == 300 - 43
    assert np.array_equal(got, expected)
    other_ids, other = read_vectors(repo.engine, "maskrcnn-coco")
    assert other_ids.tolist() == sorted(ids) and np.array_equal(other, repo.vectors("maskrcnn-coco")[1])


def test_bulk_read_of_a_detector_without_vectors_is_empty(repo: Repository):
    ids, values = read_vectors(repo.engine, "nobody")
    assert ids.shape == (0,) and values.shape == (0, NUM_CLASSES)


def test_sqlite_row_batch_fallback_reads_the_same(tmp_path):
    from recommender.storage.bulk import _sqlite_batches, _sqlite_concatenated

    engine = create_database_engine(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    upgrade(engine)
    repo = Repository(engine)
    vectors = np.random.default_rng(4).random((50, NUM_CLASSES)).astype(np.float32)
    with repo.transaction() as conn:
        for i in range(50):
            repo.put_vector(conn, repo.add_image(conn, _image(i)).id, "yolov5s", vectors[i], new=True)
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        fast, slow = _sqlite_concatenated(driver, "yolov5s"), _sqlite_batches(driver, "yolov5s")
    assert fast is not None and np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
    assert np.array_equal(slow[1], vectors)
    engine.dispose()
