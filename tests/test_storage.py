"""Storage: migrations, the repository on SQLite and PostgreSQL, the media store, image names."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from recommender.classes import NUM_CLASSES
from recommender.detection import Detections
from recommender.storage import (
    ContentExists,
    DetectorChanged,
    MediaStore,
    NameTaken,
    NewImage,
    Repository,
    SchemaError,
    VectorsMissing,
    check_schema,
    create_database_engine,
    upgrade,
)
from recommender.storage.migrate import head_revision
from recommender.storage.names import base_name, with_suffix
from recommender.storage.schema import metadata


@pytest.fixture
def engine(database_url: str):
    engine = create_database_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def repo(engine) -> Repository:
    return Repository(engine)


def _sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def _new(i: int, name: str | None = None) -> NewImage:
    return NewImage(
        name=name or f"{i:012d}.jpg",
        sha256=_sha(i),
        width=640,
        height=480,
        format="JPEG",
        mime="image/jpeg",
        size_bytes=1000 + i,
    )


def _detections(pairs: list[tuple[int, float]]) -> Detections:
    n = len(pairs)
    class_scores = np.zeros(NUM_CLASSES, dtype=np.float32)
    for c, s in pairs:
        class_scores[c] = max(class_scores[c], s)
    return Detections(
        class_ids=np.array([c for c, _ in pairs], dtype=np.int32),
        scores=np.array([s for _, s in pairs], dtype=np.float32),
        boxes=np.tile(np.array([[1.5, 2.5, 100.25, 200.75]], dtype=np.float32), (n, 1)),
        class_scores=class_scores,
    )


def _vector(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = (rng.random(NUM_CLASSES) * (rng.random(NUM_CLASSES) < 0.1)).astype(np.float32)
    v[0] = 0.0
    return v


# --------------------------------------------------------------------------------- migrations


def test_a_new_database_is_reported_unmigrated_with_the_command_to_run(database_url: str) -> None:
    engine = create_database_engine(database_url)
    try:
        with pytest.raises(SchemaError, match="recommender db upgrade"):
            check_schema(engine)
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_schema_the_code_uses(engine) -> None:
    check_schema(engine)  # at head now
    assert {"images", "detections", "vectors", "state", "changes"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
    # Migrating again is a no-op.
    assert upgrade(engine) == head_revision()


def test_upgrading_a_0001_database_keeps_every_row_and_renames_maskrcnn(database_url: str) -> None:
    engine = create_database_engine(database_url)
    try:
        upgrade(engine, "0001")
        vector = _vector(1)
        blob = vector.tobytes() if engine.dialect.name == "sqlite" else vector.tolist()
        with engine.begin() as conn:
            for i in (1, 2, 3):
                conn.execute(
                    text("INSERT INTO images (id, name, sha256, width, height, format, mime, size_bytes, created_at) "
                         "VALUES (:id, :name, :sha, 640, 480, 'JPEG', 'image/jpeg', 1, CURRENT_TIMESTAMP)"),
                    {"id": i, "name": f"{i}.jpg", "sha": _sha(i)},
                )
                conn.execute(text("INSERT INTO detections (image_id, detector, class_id, score, x1, y1, x2, y2) "
                                  "VALUES (:id, 'maskrcnn-coco', 1, 0.9, 0, 0, 1, 1)"), {"id": i})
                conn.execute(text('INSERT INTO vectors (image_id, detector, "values") VALUES (:id, \'maskrcnn-coco\', :v)'),
                             {"id": i, "v": blob})
            conn.execute(text("INSERT INTO state (key, value) VALUES ('active_detector', 'maskrcnn')"))
        assert upgrade(engine) == head_revision()
        repo = Repository(engine)
        # Rebuilding the images table (SQLite) must not cascade into detections and vectors.
        assert repo.count() == 3 and repo.detectors() == {"maskrcnn": 3}
        assert len(repo.detections_of(2, "maskrcnn")) == 1
        assert np.array_equal(repo.vector(3, "maskrcnn"), vector)
        assert repo.active_detector() == "maskrcnn"
    finally:
        engine.dispose()


def test_vector_values_are_stored_as_real_array_on_postgresql_and_float32_blob_on_sqlite(engine, repo) -> None:
    vector = _vector(1)
    image = _store(repo, 1, vector=vector)
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            udt = conn.execute(
                text("SELECT udt_name FROM information_schema.columns WHERE table_name = 'vectors' AND column_name = 'values'")
            ).scalar_one()
            assert udt == "_float4"
            assert conn.execute(text('SELECT pg_typeof("values")::text FROM vectors')).scalar_one() == "real[]"
            stored = conn.execute(text('SELECT "values" FROM vectors')).scalar_one()
            assert len(stored) == NUM_CLASSES
        else:
            kind, length = conn.execute(text('SELECT typeof("values"), length("values") FROM vectors')).one()
            assert (kind, length) == ("blob", 4 * NUM_CLASSES)
    # Round trip is exact for float32.
    ids, matrix = repo.vectors("yolov5s")
    assert ids.tolist() == [image.id]
    assert matrix.dtype == np.float32 and np.array_equal(matrix[0], vector)
    assert np.array_equal(repo.vector(image.id, "yolov5s"), vector)


# --------------------------------------------------------------------------------- repository


def _store(repo: Repository, i: int, *, name: str | None = None, detector: str = "yolov5s",
           pairs: list[tuple[int, float]] | None = None, vector: np.ndarray | None = None):
    repo.ensure_active(detector)
    return repo.store_image(_new(i, name), detector, _detections(pairs or []), _vector(i) if vector is None else vector)


def test_repository_round_trip(repo) -> None:
    first = _store(repo, 1, pairs=[(1, 0.9), (62, 0.35), (1, 0.2)])
    second = _store(repo, 2)

    assert repo.get_by_name("000000000001.jpg") == first
    assert repo.get_by_sha256(_sha(2)) == second
    assert repo.get_by_id(first.id) == first
    assert repo.get_many([second.id, 999_999, first.id]) == [second, first]
    assert repo.get_by_name("nope.jpg") is None
    assert first.created_at.tzinfo is not None
    assert repo.count() == 2

    found = repo.detections_of(first.id, "yolov5s")
    assert [(d.class_id, round(d.score, 4)) for d in found] == [(1, 0.9), (62, 0.35), (1, 0.2)]
    assert found[0].box == (1.5, 2.5, 100.25, 200.75)
    assert repo.detections_of(first.id, "maskrcnn") == []

    summaries = repo.summaries([second.id, first.id, 999_999], "yolov5s", min_score=0.3)
    assert set(summaries) == {first.id, second.id}
    assert summaries[first.id].class_ids == (1, 62)  # 0.2 is below the threshold
    assert summaries[first.id].sha256 == _sha(1)
    assert summaries[second.id].class_ids == ()

    assert repo.missing_vectors("yolov5s") == []
    assert [r.id for r in repo.missing_vectors("maskrcnn")] == [first.id, second.id]
    assert repo.detectors() == {"yolov5s": 2}
    assert repo.existing_sha256([_sha(1), _sha(2), _sha(3)]) == {_sha(1), _sha(2)}


def test_deleting_an_image_cascades_to_its_detections_and_vectors(engine, repo) -> None:
    image = _store(repo, 1, pairs=[(3, 0.8)])
    assert repo.store_vector(image.id, "other", _detections([(4, 0.5)]), _vector(2))
    assert repo.delete_image(image.id) is True
    assert repo.delete_image(image.id) is False
    assert repo.store_vector(image.id, "other", _detections([]), _vector(2)) is False  # gone: nothing stored
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM detections")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM vectors")).scalar_one() == 0
    assert repo.count() == 0


def test_conflicting_writes_are_refused_and_leave_no_rows(repo) -> None:
    _store(repo, 1, name="a.jpg")
    with pytest.raises(NameTaken):
        _store(repo, 2, name="a.jpg")
    with pytest.raises(ContentExists) as exists:
        _store(repo, 1, name="b.jpg")
    assert exists.value.existing.name == "a.jpg"
    # Detected with a detector the collection no longer uses: refused, nothing half-written.
    with pytest.raises(DetectorChanged):
        repo.store_image(_new(3), "maskrcnn", _detections([(3, 0.8)]), _vector(3))
    with pytest.raises(ValueError, match="81"):
        repo.store_image(_new(4), "yolov5s", _detections([]), np.zeros(80, dtype=np.float32))
    bad = _vector(5)
    bad[3] = np.nan
    with pytest.raises(ValueError):
        repo.store_image(_new(5), "yolov5s", _detections([]), bad)
    assert repo.count() == 1 and repo.get_by_sha256(_sha(3)) is None
    assert repo.feed_head() == 2  # the activation and the one image


def test_vectors_of_two_detectors_for_the_same_images_never_mix(repo) -> None:
    stored: dict[str, dict[int, np.ndarray]] = {"yolov5s": {}, "maskrcnn": {}}
    for i in range(5):
        image = _store(repo, i)
        stored["yolov5s"][image.id] = _vector(i)
        if i < 4:  # one image not yet reindexed for the second detector
            repo.store_vector(image.id, "maskrcnn", _detections([]), _vector(100 + i))
            stored["maskrcnn"][image.id] = _vector(100 + i)
    for detector, expected in stored.items():
        ids, matrix = repo.vectors(detector)
        assert ids.tolist() == sorted(expected)
        for image_id, row in zip(ids.tolist(), matrix):
            assert np.array_equal(row, expected[image_id])
    # Replacing one detector's vector leaves the other's alone.
    some_id = min(stored["yolov5s"])
    repo.store_vector(some_id, "yolov5s", _detections([]), _vector(999))
    assert np.array_equal(repo.vector(some_id, "yolov5s"), _vector(999))
    assert np.array_equal(repo.vector(some_id, "maskrcnn"), stored["maskrcnn"][some_id])
    assert repo.vectors_of([some_id, 999_999], "maskrcnn").keys() == {some_id}


def test_random_ids_are_distinct_existing_images_and_reach_all_of_them(repo) -> None:
    ids = [_store(repo, i).id for i in range(40)]
    for image_id in ids[5:30]:  # holes in the id range, as after deletions
        repo.delete_image(image_id)
    alive = set(ids[:5] + ids[30:])
    seen: set[int] = set()
    for _ in range(60):
        picked = repo.random_ids(3)
        assert len(picked) == 3 and len(set(picked)) == 3
        assert set(picked) <= alive
        seen |= set(picked)
    assert seen == alive
    assert sorted(repo.random_ids(100)) == sorted(alive)  # asking for more returns all


# ---------------------------------------------------------------------------------- change feed


def test_every_write_appends_to_the_feed_in_its_own_transaction(repo) -> None:
    assert repo.active_detector() is None and repo.feed_head() == 0
    assert repo.ensure_active("yolov5s") == "yolov5s"
    assert repo.ensure_active("maskrcnn") == "yolov5s"  # the first one recorded counts
    first = _store(repo, 1)
    second = _store(repo, 2)
    repo.store_vector(first.id, "maskrcnn", _detections([]), _vector(7))
    repo.delete_image(second.id)
    third = _store(repo, 3)
    with pytest.raises(VectorsMissing):
        repo.activate("maskrcnn")  # the third image has no maskrcnn vector yet: refused, nothing written
    repo.store_vector(third.id, "maskrcnn", _detections([]), _vector(8))
    repo.activate("maskrcnn")
    changes, oldest = repo.feed_since(0, 100)
    assert oldest == 1
    assert [(c.seq, c.kind, c.image_id, c.detector) for c in changes] == [
        (1, "activate", None, "yolov5s"),
        (2, "vector", first.id, "yolov5s"),
        (3, "vector", second.id, "yolov5s"),
        (4, "vector", first.id, "maskrcnn"),
        (5, "delete", second.id, None),
        (6, "vector", third.id, "yolov5s"),
        (7, "vector", third.id, "maskrcnn"),
        (8, "activate", None, "maskrcnn"),
    ]
    assert repo.feed_since(3, 1)[0][0].seq == 4
    assert repo.active_detector() == "maskrcnn"


def test_image_ids_are_never_reused_after_a_delete(repo) -> None:
    first = _store(repo, 1)
    last = _store(repo, 2)
    repo.delete_image(last.id)  # the highest id: SQLite without AUTOINCREMENT would hand it out again
    assert _store(repo, 3).id > last.id > first.id


def test_feed_numbers_follow_commit_order_under_concurrent_writers(repo) -> None:
    repo.ensure_active("yolov5s")
    errors: list[BaseException] = []

    def writer(start: int) -> None:
        try:
            for i in range(start, start + 15):
                repo.store_image(_new(i), "yolov5s", _detections([(1, 0.5)]), _vector(i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(100 * k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    changes, _oldest = repo.feed_since(0, 1000)
    assert [c.seq for c in changes] == list(range(1, 62))  # no gap, no repeat
    assert sorted(c.image_id for c in changes[1:]) == sorted(repo.vectors("yolov5s")[0].tolist())


# ------------------------------------------------------------------------------- media store


def test_originals_are_kept_byte_for_byte_under_content_addressed_paths(tmp_path: Path, coco_dev_images) -> None:
    store = MediaStore(tmp_path / "media")
    data = coco_dev_images[0].read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    path = store.put_original(sha, "JPEG", data)
    assert path == tmp_path / "media" / "originals" / sha[:2] / sha[2:4] / f"{sha}.jpg"
    assert path.read_bytes() == data
    assert store.put_original(sha, "JPEG", data) == path  # idempotent
    # No temporary files remain next to it.
    assert [p.name for p in path.parent.iterdir()] == [path.name]
    with pytest.raises(ValueError):
        store.original_path("../../etc/passwd", "JPEG")


def test_thumbnails_are_generated_once_then_served_from_the_cache(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    sha = _sha(1)
    calls = []

    def make() -> bytes:
        calls.append(1)
        return b"\xff\xd8thumbnail"

    first = store.thumbnail(sha, make)
    second = store.thumbnail(sha, make)
    assert first == second and first.read_bytes() == b"\xff\xd8thumbnail"
    assert len(calls) == 1


def test_delete_removes_original_and_thumbnail(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    sha = _sha(1)
    original = store.put_original(sha, "PNG", b"png bytes")
    thumb = store.thumbnail(sha, lambda: b"jpeg bytes")
    assert store.delete(sha) == 2
    assert not original.exists() and not thumb.exists()
    assert store.delete(sha, "PNG") == 0


def test_orphans_are_files_without_a_row_once_old_enough(tmp_path: Path) -> None:
    store = MediaStore(tmp_path)
    owned, orphan, young = _sha(1), _sha(2), _sha(3)
    store.put_original(owned, "JPEG", b"a")
    store.thumbnail(owned, lambda: b"t")
    old_orphan = store.put_original(orphan, "JPEG", b"b")
    old_thumb = store.thumbnail(orphan, lambda: b"t")
    store.put_original(young, "JPEG", b"c")
    leftover = old_orphan.parent / ".tmp-abc123"  # a write killed before its rename
    leftover.write_bytes(b"partial")
    an_hour_ago = time.time() - 3600
    for path in (old_orphan, old_thumb, leftover, store.original_path(owned, "JPEG"), store.thumbnail_path(owned)):
        os.utime(path, (an_hour_ago, an_hour_ago))

    def known(hashes):
        return set(hashes) & {owned}

    orphans = store.find_orphans(known, older_than=600, batch=1)
    assert {f.path for f in orphans} == {old_orphan, old_thumb, leftover}
    assert store.remove_files(orphans) == 3
    # With no grace period the young orphan goes too; the owned files never do.
    assert [f.sha256 for f in store.find_orphans(known, older_than=0)] == [young]
    assert store.original_path(owned, "JPEG").exists() and store.thumbnail_path(owned).exists()


def test_temporary_files_of_a_dead_writer_are_orphans_at_once(tmp_path: Path) -> None:
    import subprocess
    import sys

    from recommender.storage.media import _HOST

    store = MediaStore(tmp_path)
    folder = store.original_path(_sha(1), "JPEG").parent
    folder.mkdir(parents=True)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(finished.stdout)
    dead = folder / f".tmp-{dead_pid}@{_HOST}-x1y2z3"
    mine = folder / f".tmp-{os.getpid()}@{_HOST}-a1b2c3"  # a write of this process in progress
    elsewhere = folder / f".tmp-{dead_pid}@other.host-q9"  # another machine: only age tells
    for path in (dead, mine, elsewhere):
        path.write_bytes(b"partial")
    assert [f.path for f in store.find_orphans(lambda hashes: set(), older_than=600)] == [dead]


# ------------------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("hint", "fmt", "expected"),
    [
        ("000000000139.jpg", "JPEG", "000000000139.jpg"),
        ("holiday.JPEG", "JPEG", "holiday.jpeg"),
        ("../../etc/My photo (1).jpg", "JPEG", "My_photo_1.jpg"),
        ("C:\\Users\\me\\cat.png", "PNG", "cat.png"),
        ("cat.png", "JPEG", "cat.jpg"),  # the extension follows the real format
        ("scan.final", "PNG", "scan.final.png"),
        ("noextension", "WEBP", "noextension.webp"),
        (".hidden.gif", "GIF", "hidden.gif"),
    ],
)
def test_image_names_are_safe_and_match_the_real_format(hint: str, fmt: str, expected: str) -> None:
    assert base_name(hint, fmt, _sha(1)) == expected


def test_names_without_usable_characters_fall_back_to_the_hash_and_are_bounded() -> None:
    sha = _sha(1)
    assert base_name("????.jpg", "JPEG", sha) == f"image-{sha[:12]}.jpg"
    assert base_name(None, "PNG", sha) == f"image-{sha[:12]}.png"
    long = base_name("x" * 1000 + ".jpg", "JPEG", sha)
    assert len(long) <= 104 and long.endswith(".jpg")
    assert with_suffix("cat.jpg", sha) == f"cat-{sha[:8]}.jpg"
