"""The service use-cases on SQLite and PostgreSQL, with the real YOLOv5s detector."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import text

from recommender import bootstrap
from recommender.config import Settings
from recommender.detection import SPECS, WeightsMissingError, create_detector, resolve
from recommender.detection.yolov5 import YoloV5Detector
from recommender.images import CorruptImageError, NotAnImageError
from recommender.service import DISPLAY_THRESHOLD, InvalidRequest, NotFound, Recommender
from recommender.service.collection import build_lock, one_builder
from recommender.service.errors import SetupError
from recommender.storage import MediaStore, Repository, create_database_engine, upgrade
from recommender.vectors import detector_ranking

DEFAULT = resolve("yolov5s").name  # what DETECTOR=yolov5s stores with the default profile
ALT = "yolov5s-alt"  # registry name of the second detector in these tests


@pytest.fixture(scope="session")
def yolo(weights_dir: Path):
    detector = create_detector(DEFAULT, weights_dir)
    try:
        detector.load()
    except WeightsMissingError as exc:
        pytest.fail(f"YOLOv5s weights are needed for these tests; run `recommender fetch-weights` ({exc})")
    return detector


@pytest.fixture(scope="session")
def yolo_alt(weights_dir: Path):
    """A second, separately loaded real YOLOv5s under its own name: vectors it produces are kept apart."""
    detector = YoloV5Detector(weights_dir, name=ALT, **SPECS[DEFAULT].options)
    detector.load()
    return detector


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


def _build(settings: Settings, yolo, yolo_alt) -> Recommender:
    return bootstrap.build(settings, migrate=True, detector_factory={DEFAULT: yolo, ALT: yolo_alt}.__getitem__)


@pytest.fixture
def service(settings, yolo, yolo_alt):
    with _build(settings, yolo, yolo_alt) as service:
        yield service


@pytest.fixture
def parts(settings, service):
    """The repository and media store under the service, for checking what it wrote."""
    engine = create_database_engine(settings.resolved_database_url)
    yield Repository(engine), MediaStore(settings.media_dir)
    engine.dispose()


@pytest.fixture(scope="session")
def photos(coco_dev_images) -> list[Path]:
    # A handful of varied photos (people, animals, vehicles, food, indoor scenes).
    return coco_dev_images[:8]


def _media_files(media: MediaStore) -> list[Path]:
    return sorted(p for p in media.root.rglob("*") if p.is_file() and p.parent.name != "locks")


def _row_counts(repo: Repository) -> tuple[int, int, int]:
    with repo.engine.connect() as conn:
        return tuple(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in ("images", "detections", "vectors"))


def _indexed(service: Recommender) -> int:
    return service.queries.status().indexed


def _brute_force(repo: Repository, detector: str, query_id: int) -> list[tuple[int, float]]:
    ids, raw = repo.vectors(detector)
    # Stored images are indexed with index_transform, a query is looked up with query_transform,
    # both calibrated for the detector.
    ranking = detector_ranking(detector)
    space = ranking.index_transform(raw)
    query = ranking.query_transform(raw[ids.tolist().index(query_id)])
    distances = np.sqrt(((space - query) ** 2).sum(axis=1))
    ranked = sorted((round(float(d), 6), int(i)) for i, d in zip(ids, distances) if i != query_id)
    return [(i, d) for d, i in ranked]


def _ids(service: Recommender, repo: Repository, name: str, per_page: int = 10) -> list[int]:
    return [r.id for r in service.queries.similar(name, per_page=per_page).results]


# ------------------------------------------------------------------------------------ ingest


def test_ingested_photos_are_stored_detected_and_ranked_like_brute_force(service, parts, photos, yolo) -> None:
    repo, media = parts
    results = [service.ingest.file(path) for path in photos]
    assert [r.image.name for r in results] == [p.name for p in photos]  # coco names unchanged
    assert not any(r.duplicate for r in results)
    for path, result in zip(photos, results):
        data = path.read_bytes()
        assert result.image.sha256 == hashlib.sha256(data).hexdigest()
        assert (result.image.width, result.image.height) == Image.open(path).size
        assert media.original_path(result.image.sha256, "JPEG").read_bytes() == data
        assert result.detector == DEFAULT
    assert _indexed(service) == len(photos)

    query = repo.get_by_name(results[0].image.name)
    expected = _brute_force(repo, DEFAULT, query.id)
    pages = [service.queries.similar(query.name, page=p, per_page=3) for p in (1, 2, 3)]
    got = [(r.id, round(r.distance, 6)) for page in pages for r in page.results]
    assert got == expected
    assert all(page.total == len(photos) - 1 for page in pages)
    past_end = service.queries.similar(query.name, page=4, per_page=3)
    assert past_end.results == [] and past_end.total == len(photos) - 1

    # Every result explains itself with classes it shares with the query.
    first = pages[0]
    assert first.query == query.name and first.detector == DEFAULT
    for item in first.results:
        assert set(item.shared_classes) == set(item.classes) & set(first.query_classes)
    # The classes shown are the stored detections above the display threshold.
    shown = {d.class_name for d in service.queries.detections(query.name).detections if d.score >= DISPLAY_THRESHOLD}
    assert set(first.query_classes) == shown


def test_a_duplicate_upload_returns_the_stored_image(service, parts, photos) -> None:
    repo, media = parts
    data = photos[0].read_bytes()
    first = service.ingest.upload(data, "first-name.jpg")
    again = service.ingest.upload(data, "another-name.jpg")
    assert again.duplicate and not first.duplicate
    assert again.image == first.image
    assert [d.class_id for d in again.detections] == [d.class_id for d in first.detections]
    assert repo.count() == 1
    assert len(_media_files(media)) == 2  # the original and the thumbnail made at ingest


def test_undecodable_or_non_image_uploads_leave_no_row_and_no_file(service, parts, photos) -> None:
    repo, media = parts
    truncated = photos[0].read_bytes()[:3000]
    with pytest.raises(CorruptImageError):
        service.ingest.upload(truncated, "broken.jpg")
    with pytest.raises(NotAnImageError):
        service.ingest.upload(b"%PDF-1.4 not an image at all", "doc.jpg")
    assert _row_counts(repo) == (0, 0, 0)
    assert _media_files(media) == []


def test_a_database_failure_during_ingest_rolls_back_and_removes_the_stored_file(service, parts, photos) -> None:
    repo, media = parts
    service.ingest.file(photos[0])
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
        service.ingest.file(photos[1])
    assert _row_counts(repo)[0] == 1
    assert repo.get_by_name(photos[1].name) is None
    assert _media_files(media) == files_before
    assert _indexed(service) == 1


def test_names_from_clients_are_sanitised_and_collisions_get_a_hash_suffix(service, photos) -> None:
    first = service.ingest.upload(photos[0].read_bytes(), "../My Holiday (1).png")
    second = service.ingest.upload(photos[1].read_bytes(), "My Holiday (1).jpg")
    sha = second.image.sha256
    assert first.image.name == "My_Holiday_1.jpg"  # JPEG bytes: the extension follows the content
    assert second.image.name == f"My_Holiday_1-{sha[:8]}.jpg"
    png = io.BytesIO()
    Image.open(photos[2]).save(png, format="PNG")
    third = service.ingest.upload(png.getvalue(), None)
    assert third.image.name.endswith(".png") and third.image.mime == "image/png"


def test_concurrent_uploads_of_the_same_photo_store_it_once(service, parts, photos) -> None:
    repo, media = parts
    data = photos[3].read_bytes()
    results, errors = [], []

    def upload() -> None:
        try:
            results.append(service.ingest.upload(data, "same.jpg"))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(not r.duplicate for r in results) == 1
    assert len({r.image.sha256 for r in results}) == 1
    assert repo.count() == 1 and _indexed(service) == 1
    assert len(_media_files(media)) == 2  # the original and the thumbnail made at ingest


# ----------------------------------------------------------------------------------- queries


def test_unknown_names_and_bad_pages_are_reported(service, photos) -> None:
    service.ingest.file(photos[0])
    with pytest.raises(NotFound) as err:
        service.queries.similar("missing.jpg")
    assert err.value.status == 404 and "missing.jpg" in err.value.message
    for page, per_page in ((0, 30), (1, 0), (1, 101), (2**63, 30)):
        with pytest.raises(InvalidRequest) as bad:
            service.queries.similar(photos[0].name, page=page, per_page=per_page)
        assert bad.value.status == 400
    for name in ("a\x00b", "tab\there", "x" * 300):  # never a valid name: no query is even made
        with pytest.raises(NotFound):
            service.queries.image(name)
        with pytest.raises(NotFound):
            service.admin.delete(name)
    with pytest.raises(NotFound):
        service.admin.delete("missing.jpg")


def test_random_returns_distinct_stored_images(service, photos) -> None:
    for path in photos[:4]:
        service.ingest.file(path)
    picked = service.queries.random(3)
    assert len({r.name for r in picked}) == 3
    assert {r.name for r in picked} <= {p.name for p in photos[:4]}


def test_thumbnails_are_small_jpegs_made_once(service, photos) -> None:
    service.ingest.file(photos[0])
    path = service.queries.thumbnail(photos[0].name).path
    thumb = Image.open(path)
    assert thumb.format == "JPEG" and max(thumb.size) <= 320
    mtime = path.stat().st_mtime_ns
    assert service.queries.thumbnail(photos[0].name).path == path and path.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------------------ delete


def test_delete_removes_rows_files_and_index_entry(service, parts, photos) -> None:
    repo, media = parts
    for path in photos[:4]:
        service.ingest.file(path)
    victim = repo.get_by_name(photos[1].name)
    thumb = service.queries.thumbnail(victim.name).path
    original = media.original_path(victim.sha256, victim.format)
    assert thumb.exists() and original.exists()

    service.admin.delete(victim.name)
    assert not thumb.exists() and not original.exists()
    with pytest.raises(NotFound):
        service.queries.image(victim.name)
    assert _row_counts(repo) == (3, _row_counts(repo)[1], 3)
    with repo.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM detections WHERE image_id = :i"), {"i": victim.id}).scalar_one() == 0
    assert _indexed(service) == 3
    for path in (photos[0], photos[2], photos[3]):
        names = [r.name for r in service.queries.similar(path.name).results]
        assert victim.name not in names and len(names) == 2
    # The same photo can come back later, under a new id.
    again = service.ingest.file(photos[1])
    assert not again.duplicate and repo.get_by_name(again.image.name).id > victim.id


# ----------------------------------------------------------------------------- live collection


def test_another_process_sees_ingests_deletes_and_switches_through_the_feed(settings, yolo, yolo_alt, photos) -> None:
    """Two services on one database stand for two processes: each follows the other's writes."""
    with _build(settings, yolo, yolo_alt) as writer, _build(settings, yolo, yolo_alt) as reader:
        for path in photos[:3]:
            writer.ingest.file(path)
        assert reader.queries.status().indexed == 3  # first use loads everything
        for path in photos[3:6]:
            writer.ingest.file(path)
        writer.admin.delete(photos[0].name)
        assert reader.queries.status().behind == 4
        assert reader.collection.refresh().position == writer.collection.current().position
        names = [r.name for r in reader.queries.similar(photos[1].name).results]
        assert sorted(names) == sorted(p.name for p in photos[2:6]) and reader.queries.status().indexed == 5

        writer.admin.reindex(ALT, activate=True)
        reader.collection.refresh()
        assert reader.queries.status().detector == ALT
        assert reader.queries.similar(photos[1].name).detector == ALT


def test_a_follower_thread_applies_changes_within_a_second(settings, yolo, yolo_alt, photos) -> None:
    with _build(settings, yolo, yolo_alt) as writer, _build(settings, yolo, yolo_alt) as reader:
        writer.ingest.file(photos[0])
        reader.collection.refresh()
        reader.collection.follow(interval=0.1)
        writer.ingest.file(photos[1])
        deadline = time.monotonic() + 5
        while reader.collection.current().position < writer.collection.current().position:
            assert time.monotonic() < deadline, "the follower did not catch up within 5 s"
            time.sleep(0.05)
        assert [r.name for r in reader.queries.similar(photos[0].name).results] == [photos[1].name]


def test_a_process_far_behind_rebuilds_instead_of_replaying(settings, yolo, yolo_alt, photos) -> None:
    with _build(settings, yolo, yolo_alt) as writer:
        reader = bootstrap.build(settings, detector_factory={DEFAULT: yolo}.__getitem__)
        reader.collection._rebuild_after = 2  # noqa: SLF001 - a small threshold instead of 50,000 changes
        try:
            writer.ingest.file(photos[0])
            reader.collection.refresh()
            for path in photos[1:5]:
                writer.ingest.file(path)
            snapshot = reader.collection.refresh()
            assert len(snapshot.index) == 5 and snapshot.position == writer.collection.current().position
        finally:
            reader.close()


def test_processes_starting_together_build_the_index_once_and_the_others_map_it(settings, yolo, yolo_alt, photos,
                                                                                   caplog) -> None:
    with _build(settings, yolo, yolo_alt) as writer:
        for path in photos[:4]:
            writer.ingest.file(path)
    shutil.rmtree(settings.snapshot_dir, ignore_errors=True)
    starting = [_build(settings, yolo, yolo_alt) for _ in range(2)]  # two web workers, cold
    lock = build_lock(settings.snapshot_dir / f"{DEFAULT}.{settings.index}")
    caplog.set_level(logging.INFO, logger="recommender.service.collection")
    try:
        # Both queue behind a build in progress (held here), as workers do behind the first one.
        with one_builder(lock):
            threads = [threading.Thread(target=s.collection.current) for s in starting]
            for t in threads:
                t.start()
            time.sleep(1.0)
        for t in threads:
            t.join(timeout=60)
        how = [r.getMessage() for r in caplog.records if r.getMessage().startswith("index of ")]
        assert sum("built from the database" in m for m in how) == 1, how
        assert sum("mapped from its snapshot" in m for m in how) == 1, how
        answers = [[r.name for r in s.queries.similar(photos[0].name).results] for s in starting]
        assert answers[0] == answers[1] and len(answers[0]) == 3
    finally:
        for s in starting:
            s.close()


# ---------------------------------------------------------------------- detectors and reindex


def test_switching_detector_never_mixes_vectors_and_survives_a_restart(settings, service, parts, yolo, yolo_alt, photos) -> None:
    repo, _media = parts
    names = [service.ingest.file(path).image.name for path in photos[:5]]
    records = [repo.get_by_name(n) for n in names]
    yolo_vectors = {i: v for i, v in zip(*repo.vectors(DEFAULT))}
    # The second detector's vectors, stored directly: one-hot patterns unlike YOLO's, so any
    # mixing shows in the ranking.
    for k, record in enumerate(records):
        vector = np.zeros(81, dtype=np.float32)
        vector[1 + k % 2] = 1.0
        repo.store_vector(record.id, ALT, yolo.detect(np.zeros((8, 8, 3), np.uint8)), vector)

    query = records[0]
    assert _ids(service, repo, query.name) == [i for i, _d in _brute_force(repo, DEFAULT, query.id)]

    result = service.admin.reindex(ALT, activate=True)
    assert result.activated and result.computed == 0 and _indexed(service) == 5
    assert service.queries.status().detector == ALT
    assert _ids(service, repo, query.name) == [i for i, _d in _brute_force(repo, ALT, query.id)]
    assert _ids(service, repo, query.name)[:2] == [records[2].id, records[4].id]  # same one-hot class

    with _build(settings, yolo, yolo_alt) as restarted:  # a restart reads the active detector back
        assert restarted.queries.status().detector == ALT
        assert _ids(restarted, repo, query.name) == _ids(service, repo, query.name)
        # A photo ingested now gets only the active detector's vector; reindex fills in the other.
        new = repo.get_by_name(restarted.ingest.file(photos[5]).image.name)
        assert repo.vector(new.id, DEFAULT) is None and repo.vector(new.id, ALT) is not None
        back = restarted.admin.reindex(DEFAULT, activate=True)
        assert back.computed == 1 and back.activated and restarted.queries.status() .indexed == 6
    for image_id, vector in yolo_vectors.items():
        assert np.array_equal(repo.vector(image_id, DEFAULT), vector)  # untouched by the switch


def test_reindex_is_resumable_after_an_interruption(service, parts, photos, yolo) -> None:
    repo, _media = parts
    for path in photos[:6]:
        service.ingest.file(path)
    done = []

    def interrupt_after_two(event) -> None:
        if event.outcome == "ingested":
            done.append(event.name)
            if len(done) == 2:
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        service.admin.reindex(ALT, progress=interrupt_after_two)
    assert len(repo.vectors(ALT)[0]) == 2
    assert service.queries.status().detector == DEFAULT  # not activated by an interrupted run

    resumed = service.admin.reindex(ALT)
    assert (resumed.missing, resumed.computed, resumed.failed) == (4, 4, [])
    ids, alt = repo.vectors(ALT)
    _ids_, main = repo.vectors(DEFAULT)
    assert len(ids) == 6
    # Same model, separately stored: equal vectors, and detections stored per detector.
    np.testing.assert_allclose(alt, main, atol=1e-5)
    assert service.admin.reindex(ALT).computed == 0


# ---------------------------------------------------------------------- start-up and cleanup


def test_sqlite_is_migrated_at_start_and_postgresql_must_be_migrated_explicitly(database_url: str, tmp_path: Path, yolo) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    factory = {DEFAULT: yolo}.__getitem__
    if database_url.startswith("sqlite"):
        with bootstrap.build(settings, detector_factory=factory) as service:
            assert service.queries.count() == 0
    else:
        with pytest.raises(SetupError, match="recommender db upgrade"):
            bootstrap.build(settings, detector_factory=factory)
        engine = create_database_engine(database_url)
        upgrade(engine)
        engine.dispose()
        with bootstrap.build(settings, detector_factory=factory) as service:
            assert service.queries.count() == 0


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
    summary = service.ingest.paths([folder, photos[0], tmp_path / "nope.jpg"], progress=events.append)
    assert (summary.ingested, summary.duplicates) == (3, 1)
    assert sorted(Path(p).name for p, _reason in summary.failed) == ["broken.jpg", "nope.jpg"]
    assert summary.orphans_removed == 1
    assert not stale.exists() and fresh.exists()  # a young file may belong to another ingest
    assert events[0].outcome == "started" and events[0].total == 6
    assert len(events) == 7
    assert repo.count() == 3
