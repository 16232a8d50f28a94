"""The service use-cases on SQLite and PostgreSQL, with the real YOLOv5s detector."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from recommender.config import Settings
from recommender.detection import WeightsMissingError, create_detector
from recommender.images import CorruptImageError, NotAnImageError
from recommender.service import (
    InvalidRequest,
    NotFound,
    RecommenderService,
)
from recommender.storage import MediaStore, Repository, SchemaError, create_database_engine, upgrade
from recommender.vectors import query_transform, ranking_transform

ALT = "yolov5s-alt"  # setting and stored name of the second detector in these tests


@pytest.fixture(scope="session")
def yolo(weights_dir: Path):
    detector = create_detector("yolov5s", weights_dir)
    try:
        detector.load()
    except WeightsMissingError as exc:
        pytest.fail(f"YOLOv5s weights are needed for these tests; run `recommender fetch-weights` ({exc})")
    return detector


@pytest.fixture(scope="session")
def yolo_alt(weights_dir: Path):
    """A second, separately loaded real YOLOv5s, stored under its own detector name."""
    detector = create_detector("yolov5s", weights_dir)
    detector.name = ALT  # an instance attribute: vectors it produces are kept apart
    detector.load()
    return detector


@pytest.fixture
def parts(database_url: str, tmp_path: Path):
    engine = create_database_engine(database_url)
    upgrade(engine)
    yield Repository(engine), MediaStore(tmp_path / "media")
    engine.dispose()


def _make_service(parts, yolo, yolo_alt, **kwargs) -> RecommenderService:
    repo, media = parts
    detectors = {"yolov5s": yolo, ALT: yolo_alt}
    return RecommenderService(repo, media, detector_factory=detectors.__getitem__, **kwargs)


@pytest.fixture
def service(parts, yolo, yolo_alt) -> RecommenderService:
    return _make_service(parts, yolo, yolo_alt)


@pytest.fixture(scope="session")
def photos(coco_dev_images) -> list[Path]:
    # A handful of varied photos (people, animals, vehicles, food, indoor scenes).
    return coco_dev_images[:8]


def _media_files(media: MediaStore) -> list[Path]:
    return sorted(p for p in media.root.rglob("*") if p.is_file())


def _row_counts(repo: Repository) -> tuple[int, int, int]:
    with repo.engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in ("images", "detections", "vectors"))


def _brute_force(repo: Repository, detector: str, query_id: int) -> list[tuple[int, float]]:
    ids, raw = repo.vectors(detector)
    # Stored images are indexed with ranking_transform, a query is looked up with query_transform.
    space = ranking_transform(raw)
    query = query_transform(raw[ids.tolist().index(query_id)])
    distances = np.sqrt(((space - query) ** 2).sum(axis=1))
    ranked = sorted((round(float(d), 6), int(i)) for i, d in zip(ids, distances) if i != query_id)
    return [(i, d) for d, i in ranked]


# ------------------------------------------------------------------------------------ ingest


def test_ingested_photos_are_stored_detected_and_ranked_like_brute_force(service, parts, photos, yolo) -> None:
    repo, media = parts
    results = [service.ingest(path) for path in photos]
    assert [r.image.name for r in results] == [p.name for p in photos]  # coco names unchanged
    assert not any(r.duplicate for r in results)
    for path, result in zip(photos, results):
        data = path.read_bytes()
        assert result.image.sha256 == hashlib.sha256(data).hexdigest()
        assert (result.image.width, result.image.height) == Image.open(path).size
        assert media.original_path(result.image.sha256, "JPEG").read_bytes() == data
        assert result.detector == "yolov5s"
    assert service.index_size == len(photos)

    query = results[0].image
    expected = _brute_force(repo, "yolov5s", query.id)
    pages = [service.similar_to_image(query.name, page=p, per_page=3) for p in (1, 2, 3)]
    got = [(r.id, round(r.distance, 6)) for page in pages for r in page.results]
    assert got == expected
    assert all(page.total == len(photos) - 1 for page in pages)
    past_end = service.similar_to_image(query.name, page=4, per_page=3)
    assert past_end.results == [] and past_end.total == len(photos) - 1

    # Every result explains itself with classes it shares with the query.
    first = pages[0]
    assert first.query == query.name and first.detector == "yolov5s"
    for item in first.results:
        assert set(item.shared_classes) == set(item.classes) & set(first.query_classes)
    # The classes shown are the stored detections above the display threshold.
    shown = {d.class_name for d in service.detections(query.name) if d.score >= service.display_threshold}
    assert set(first.query_classes) == shown


def test_a_duplicate_upload_returns_the_stored_image(service, parts, photos) -> None:
    repo, media = parts
    data = photos[0].read_bytes()
    first = service.ingest(data, "first-name.jpg")
    again = service.ingest(data, "another-name.jpg")
    assert again.duplicate and not first.duplicate
    assert again.image == first.image
    assert [d.class_id for d in again.detections] == [d.class_id for d in first.detections]
    assert repo.count() == 1
    assert len(_media_files(media)) == 1


def test_undecodable_or_non_image_uploads_leave_no_row_and_no_file(service, parts, photos) -> None:
    repo, media = parts
    truncated = photos[0].read_bytes()[:3000]
    with pytest.raises(CorruptImageError):
        service.ingest(truncated, "broken.jpg")
    with pytest.raises(NotAnImageError):
        service.ingest(b"%PDF-1.4 not an image at all", "doc.jpg")
    assert _row_counts(repo) == (0, 0, 0)
    assert _media_files(media) == []


def test_a_database_failure_during_ingest_rolls_back_and_removes_the_stored_file(service, parts, photos) -> None:
    repo, media = parts
    service.ingest(photos[0])
    # A real failure inside the transaction, after the image row and detections were written.
    with repo.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON vectors FOR EACH ROW EXECUTE FUNCTION refuse()"))
        else:
            conn.execute(text("CREATE TRIGGER refuse BEFORE INSERT ON vectors BEGIN SELECT RAISE(ABORT, 'disk full'); END"))
    files_before = _media_files(media)
    with pytest.raises(Exception, match="disk full"):
        service.ingest(photos[1])
    assert _row_counts(repo)[0] == 1
    assert repo.get_by_name(photos[1].name) is None
    assert _media_files(media) == files_before
    assert service.index_size == 1


def test_names_from_clients_are_sanitised_and_collisions_get_a_hash_suffix(service, photos) -> None:
    first = service.ingest(photos[0].read_bytes(), "../My Holiday (1).png")
    second = service.ingest(photos[1].read_bytes(), "My Holiday (1).jpg")
    sha = second.image.sha256
    assert first.image.name == "My_Holiday_1.jpg"  # JPEG bytes: the extension follows the content
    assert second.image.name == f"My_Holiday_1-{sha[:8]}.jpg"
    png = io.BytesIO()
    Image.open(photos[2]).save(png, format="PNG")
    third = service.ingest(png.getvalue(), None)
    assert third.image.name.endswith(".png") and third.image.mime == "image/png"


def test_concurrent_uploads_of_the_same_photo_store_it_once(service, parts, photos) -> None:
    repo, media = parts
    data = photos[3].read_bytes()
    results, errors = [], []

    def upload() -> None:
        try:
            results.append(service.ingest(data, "same.jpg"))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.image.id for r in results}) == 1
    assert repo.count() == 1 and service.index_size == 1
    assert len(_media_files(media)) == 1


# ----------------------------------------------------------------------------------- queries


def test_similar_to_an_upload_ranks_without_storing(service, parts, photos) -> None:
    repo, _media = parts
    for path in photos[:5]:
        service.ingest(path)
    fresh = service.similar_to_upload(photos[6].read_bytes(), per_page=10)
    assert fresh.existing is None and fresh.similar.query is None
    assert fresh.similar.total == 5 and len(fresh.similar.results) == 5
    assert repo.count() == 5
    assert fresh.detections and all(0 < d.score <= 1 for d in fresh.detections)
    assert {d.class_name for d in fresh.detections if d.score >= service.display_threshold} == set(
        fresh.similar.query_classes
    )

    stored = service.similar_to_upload(photos[0].read_bytes(), per_page=10)
    assert stored.existing == photos[0].name
    assert stored.similar.total == 4  # the stored copy is the query, not a result
    by_name = service.similar_to_image(photos[0].name, per_page=10)
    assert [r.name for r in stored.similar.results] == [r.name for r in by_name.results]


def test_unknown_names_and_bad_pages_are_reported(service, photos) -> None:
    service.ingest(photos[0])
    with pytest.raises(NotFound) as err:
        service.similar_to_image("missing.jpg")
    assert err.value.status == 404 and "missing.jpg" in err.value.message
    for page, per_page in ((0, 30), (1, 0), (1, 101)):
        with pytest.raises(InvalidRequest) as bad:
            service.similar_to_image(photos[0].name, page=page, per_page=per_page)
        assert bad.value.status == 400
    with pytest.raises(NotFound):
        service.delete("missing.jpg")


def test_random_returns_distinct_stored_images(service, photos) -> None:
    for path in photos[:4]:
        service.ingest(path)
    picked = service.random(3)
    assert len({r.name for r in picked}) == 3
    assert {r.name for r in picked} <= {p.name for p in photos[:4]}


def test_thumbnails_are_small_jpegs_made_once(service, photos) -> None:
    service.ingest(photos[0])
    path = service.thumbnail_path(photos[0].name)
    thumb = Image.open(path)
    assert thumb.format == "JPEG" and max(thumb.size) <= 320
    mtime = path.stat().st_mtime_ns
    assert service.thumbnail_path(photos[0].name) == path and path.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------------ delete


def test_delete_removes_rows_files_and_index_entry(service, parts, photos) -> None:
    repo, media = parts
    for path in photos[:4]:
        service.ingest(path)
    victim = repo.get_by_name(photos[1].name)
    thumb = service.thumbnail_path(victim.name)
    original = media.original_path(victim.sha256, victim.format)
    assert thumb.exists() and original.exists()

    service.delete(victim.name)
    assert not thumb.exists() and not original.exists()
    with pytest.raises(NotFound):
        service.get_image(victim.name)
    assert _row_counts(repo) == (3, _row_counts(repo)[1], 3)
    with repo.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM detections WHERE image_id = :i"), {"i": victim.id}).scalar_one() == 0
    assert service.index_size == 3
    for path in (photos[0], photos[2], photos[3]):
        names = [r.name for r in service.similar_to_image(path.name).results]
        assert victim.name not in names and len(names) == 2
    # The same photo can come back later.
    assert not service.ingest(photos[1]).duplicate


# ---------------------------------------------------------------------- detectors and reindex


def test_switching_detector_never_mixes_vectors_and_survives_a_restart(parts, yolo, yolo_alt, photos) -> None:
    repo, media = parts
    service = _make_service(parts, yolo, yolo_alt)
    records = [service.ingest(path).image for path in photos[:5]]
    yolo_vectors = {i: v for i, v in zip(*repo.vectors("yolov5s"))}
    # The second detector's vectors, stored directly: one-hot patterns unlike YOLO's, so any
    # mixing shows in the ranking.
    alt_vectors = {}
    with repo.transaction() as conn:
        for k, record in enumerate(records):
            vector = np.zeros(81, dtype=np.float32)
            vector[1 + k % 2] = 1.0
            repo.put_vector(conn, record.id, ALT, vector)
            alt_vectors[record.id] = vector

    def ranking(svc: RecommenderService, name: str) -> list[int]:
        return [r.id for r in svc.similar_to_image(name, per_page=10).results]

    query = records[0]
    assert ranking(service, query.name) == [i for i, _d in _brute_force(repo, "yolov5s", query.id)]

    result = service.reindex(ALT, activate=True)
    assert result.activated and result.computed == 0 and result.indexed == 5
    assert service.active_detector == ALT
    assert ranking(service, query.name) == [i for i, _d in _brute_force(repo, ALT, query.id)]
    assert ranking(service, query.name)[:2] == [records[2].id, records[4].id]  # same one-hot class

    restarted = _make_service(parts, yolo, yolo_alt)  # a restart reads the active detector back
    assert restarted.active_detector == ALT
    assert ranking(restarted, query.name) == ranking(service, query.name)

    # A photo ingested now gets only the active detector's vector; reindex fills in the other.
    new = restarted.ingest(photos[5]).image
    assert repo.vector(new.id, "yolov5s") is None and repo.vector(new.id, ALT) is not None
    back = restarted.reindex("yolov5s", activate=True)
    assert back.computed == 1 and restarted.active_detector == "yolov5s" and back.indexed == 6
    for image_id, vector in yolo_vectors.items():
        assert np.array_equal(repo.vector(image_id, "yolov5s"), vector)  # untouched by the switch


def test_reindex_is_resumable_after_an_interruption(service, parts, photos, yolo) -> None:
    repo, _media = parts
    for path in photos[:6]:
        service.ingest(path)
    done = []

    def interrupt_after_two(event) -> None:
        if event.outcome == "ingested":
            done.append(event.name)
            if len(done) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        service.reindex(ALT, progress=interrupt_after_two)
    assert len(repo.vectors(ALT)[0]) == 2
    assert service.active_detector == "yolov5s"  # not activated by an interrupted run

    resumed = service.reindex(ALT)
    assert (resumed.missing, resumed.computed, resumed.failed) == (4, 4, [])
    ids, alt = repo.vectors(ALT)
    _ids, main = repo.vectors("yolov5s")
    assert len(ids) == 6
    # Same model, separately stored: equal vectors, and detections stored per detector.
    np.testing.assert_allclose(alt, main, atol=1e-5)
    assert service.reindex(ALT).computed == 0


# ---------------------------------------------------------------------- start-up and cleanup


def test_sqlite_is_migrated_at_start_and_postgresql_must_be_migrated_explicitly(database_url: str, tmp_path: Path, yolo) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    factory = {"yolov5s": yolo}.__getitem__
    if database_url.startswith("sqlite"):
        with RecommenderService.from_settings(settings, detector_factory=factory) as service:
            assert service.count() == 0
    else:
        with pytest.raises(SchemaError, match="recommender db upgrade"):
            RecommenderService.from_settings(settings, detector_factory=factory)
        engine = create_database_engine(database_url)
        upgrade(engine)
        engine.dispose()
        with RecommenderService.from_settings(settings, detector_factory=factory) as service:
            assert service.count() == 0


def test_ingest_paths_skips_bad_files_and_cleans_old_orphans(service, parts, photos, tmp_path: Path) -> None:
    repo, media = parts
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for path in photos[:3]:
        (folder / "nested" / path.name).write_bytes(path.read_bytes())
    (folder / "broken.jpg").write_bytes(photos[3].read_bytes()[:2000])
    (folder / "notes.txt").write_text("not picked up: not an image suffix")
    stale = media.put_original(hashlib.sha256(b"orphan").hexdigest(), "JPEG", b"orphan")
    fresh = media.put_original(hashlib.sha256(b"in flight").hexdigest(), "JPEG", b"in flight")
    an_hour_ago = time.time() - 3600
    os.utime(stale, (an_hour_ago, an_hour_ago))

    events = []
    summary = service.ingest_paths([folder, photos[0], tmp_path / "nope.jpg"], progress=events.append)
    assert (summary.ingested, summary.duplicates) == (3, 1)
    assert sorted(Path(p).name for p, _reason in summary.failed) == ["broken.jpg", "nope.jpg"]
    assert summary.orphans_removed == 1
    assert not stale.exists() and fresh.exists()  # a young file may belong to another ingest
    assert events[0].outcome == "started" and events[0].total == 6
    assert len(events) == 7
    assert repo.count() == 3
