"""The use-cases of the recommender: ingest, similar images, random picks, delete, reindex.

The service owns the transactions and the in-memory neighbour index:

* **ingest**: decode → SHA-256 → duplicate check → detect → store the original (atomic,
  content-addressed) → image + detections + vector in ONE transaction → index. If the
  transaction fails the stored file is removed again, so a failure leaves nothing behind.
  A process killed between the file write and the commit leaves an orphan file, which the
  next ``ingest_paths`` run (or ``clean_orphans``) removes or adopts.
* **index**: built at start-up from the stored vectors of the *active* detector, which is
  persisted in the database (state table) so a restart keeps serving the same detector.
  Vectors of different detectors are never mixed: every vector row carries its detector.
* **thread safety**: every public method may be called from several threads. Detection runs
  in at most ``detect_workers`` threads at a time (a semaphore, so a burst of uploads queues
  instead of oversubscribing the CPU); the index is thread-safe; a lock keeps commits and a
  detector switch from interleaving.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
from sqlalchemy.exc import DBAPIError, IntegrityError

from .classes import class_name
from .config import Settings
from .detection import Detections, Detector, DetectorError, create_detector
from .explain import ClassContribution, explain_matches, why
from .images import DecodedImage, ImageError, decode_image, read_image_file, thumbnail_jpeg
from .index import MAX_PER_PAGE, NeighborIndex
from .storage import (
    DetectionRecord,
    ImageRecord,
    MediaStore,
    NewImage,
    Repository,
    create_database_engine,
    ensure_schema,
)
from .storage.database import sqlite_path
from .storage.names import base_name, with_suffix
from .vectors import class_presence, query_transform, ranking_transform

# Detections at or above this score name the classes shown for an image (and the shared
# classes that explain a match). It equals YOLOv5s's box threshold (chosen on coco_dev for
# precision 0.88 / recall 0.68), so the listed classes are exactly the boxes a user sees.
DEFAULT_DISPLAY_THRESHOLD = 0.3
ACTIVE_DETECTOR_KEY = "active_detector"
# A file named on the command line is always tried; inside folders only these are picked up.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"})
# An orphan younger than this may belong to an ingest still in flight in another process.
ORPHAN_GRACE_SECONDS = 600.0

P = ParamSpec("P")
T = TypeVar("T")


# ------------------------------------------------------------------------------------ errors


class ServiceError(Exception):
    """A request the service cannot fulfil; ``message`` is meant for the end user."""

    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    code = "not_found"
    status = 404


class InvalidRequest(ServiceError):
    code = "bad_request"
    status = 400


class Unavailable(ServiceError):
    """A dependency (database, detector weights, detection capacity) is not available now."""

    code = "unavailable"
    status = 503


class DetectorUnavailable(Unavailable):
    code = "detector_unavailable"


class Busy(Unavailable):
    code = "busy"


def _database_errors(method: Callable[P, T]) -> Callable[P, T]:
    """Report a database that is down as Unavailable instead of a raw driver error."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except IntegrityError:
            raise
        except DBAPIError as exc:
            raise Unavailable(f"the database is not available: {_first_line(exc.orig or exc)}") from exc

    return wrapper


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ----------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class DetectedObject:
    class_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels

    @classmethod
    def from_record(cls, record: DetectionRecord) -> DetectedObject:
        return cls(record.class_id, class_name(record.class_id), record.score, record.box)


@dataclass(frozen=True)
class IngestResult:
    image: ImageRecord
    duplicate: bool  # True: these bytes were already stored; ``image`` is the existing one
    detector: str
    detections: list[DetectedObject]


@dataclass(frozen=True)
class SimilarImage:
    id: int
    name: str
    distance: float
    classes: list[str]  # detected in this image (score >= display threshold), COCO order
    shared_classes: list[str]  # the subset also detected in the query: why it matched
    contributions: list[ClassContribution]  # classes that made up most of the similarity score
    why: str  # one line summarising ``contributions``


@dataclass(frozen=True)
class SimilarPage:
    query: str | None  # the query image's name; None for an upload that is not stored
    query_classes: list[str]
    detector: str
    page: int
    per_page: int
    total: int  # images the query ranks (all indexed ones except itself)
    results: list[SimilarImage]


@dataclass(frozen=True)
class UploadQuery:
    """Similar images to uploaded bytes that were not stored."""

    similar: SimilarPage
    detections: list[DetectedObject]
    width: int
    height: int
    existing: str | None  # name of the stored image with exactly these bytes, if any


@dataclass(frozen=True)
class IngestEvent:
    """One step of a batch ingest, for progress display."""

    outcome: str  # "started", "ingested", "duplicate" or "failed"
    total: int
    path: Path | None = None
    name: str | None = None
    message: str | None = None


@dataclass
class IngestSummary:
    total: int = 0
    ingested: int = 0
    duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    orphans_removed: int = 0
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        done = self.ingested + self.duplicates + len(self.failed)
        return done / self.seconds if self.seconds > 0 else 0.0


@dataclass
class ReindexResult:
    detector: str  # the detector's stored name (vectors.detector)
    setting: str  # the DETECTOR setting value it came from
    missing: int = 0
    computed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image name, reason)
    activated: bool = False
    indexed: int = 0


@dataclass(frozen=True)
class _Prepared:
    """Decoded and hashed input, ready for detection."""

    data: bytes
    image: DecodedImage
    sha256: str
    name_hint: str | None
    existing: ImageRecord | None


@dataclass(frozen=True)
class _Active:
    """The detector the index serves; swapped as one object so readers see a consistent pair."""

    setting: str
    detector: Detector
    index: NeighborIndex


# ----------------------------------------------------------------------------------- service


class RecommenderService:
    def __init__(
        self,
        repository: Repository,
        media: MediaStore,
        *,
        detector_factory: Callable[[str], Detector],
        default_detector: str = "yolov5s",
        max_upload_bytes: int | None = None,
        detect_workers: int = 1,
        detect_timeout: float | None = 120.0,
        display_threshold: float = DEFAULT_DISPLAY_THRESHOLD,
        prepare_workers: int = 2,
    ) -> None:
        """Parts given explicitly (tests, embedding); ``from_settings`` wires the usual ones.

        ``detector_factory(setting)`` returns a detector for a DETECTOR setting value; it is
        called at most once per value. ``default_detector`` is the active one for a database
        that has none recorded yet; after that the database decides (see ``reindex``).
        """
        if detect_workers < 1 or prepare_workers < 1:
            raise ValueError("detect_workers and prepare_workers must be at least 1")
        self.repository = repository
        self.media = media
        self.max_upload_bytes = max_upload_bytes
        self.display_threshold = float(display_threshold)
        self.detect_workers = detect_workers
        self.prepare_workers = prepare_workers
        self._detect_timeout = detect_timeout
        self._detect_slots = threading.BoundedSemaphore(detect_workers)
        self._detector_factory = detector_factory
        self._detectors: dict[str, Detector] = {}
        self._detectors_lock = threading.Lock()
        # Held around every commit that adds a vector and around a detector switch.
        self._commit_lock = threading.RLock()
        # Two in-process ingests of the same bytes must not race on the same media file.
        self._sha_locks = [threading.Lock() for _ in range(64)]
        setting = repository.get_state(ACTIVE_DETECTOR_KEY) or default_detector
        self._active = self._load_active(setting)

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool | None = None, **kwargs: Any) -> RecommenderService:
        """The service for ``settings``; checks (or applies) the database migrations first.

        ``migrate=None`` applies migrations automatically for SQLite (a local file the service
        owns) and only checks them for PostgreSQL, where schema changes are an explicit
        operator step (``recommender db upgrade``); a database that is behind raises
        ``SchemaError`` naming that command.
        """
        url = settings.resolved_database_url
        engine = create_database_engine(url)
        try:
            is_sqlite = engine.dialect.name == "sqlite"
            if is_sqlite and sqlite_path(url) is not None:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            ensure_schema(engine, migrate=is_sqlite if migrate is None else migrate)
            kwargs.setdefault("default_detector", settings.detector)
            kwargs.setdefault("max_upload_bytes", settings.max_upload_bytes)
            kwargs.setdefault("detect_workers", settings.workers)
            kwargs.setdefault("detector_factory", _detector_factory(settings.resolved_weights_dir, kwargs["detect_workers"]))
            return cls(Repository(engine), MediaStore(settings.media_dir), **kwargs)
        except BaseException:
            engine.dispose()
            raise

    def close(self) -> None:
        self.repository.engine.dispose()

    def __enter__(self) -> RecommenderService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------------------- detectors

    @property
    def active_detector(self) -> str:
        """Stored name (``vectors.detector``) of the detector the index serves."""
        return self._active.detector.name

    @property
    def active_setting(self) -> str:
        """DETECTOR setting value of the active detector (``yolov5s`` or ``maskrcnn``)."""
        return self._active.setting

    @property
    def index_size(self) -> int:
        return len(self._active.index)

    def detector(self, setting: str) -> Detector:
        """The (lazily loaded) detector for a DETECTOR setting value, created once."""
        with self._detectors_lock:
            found = self._detectors.get(setting)
            if found is None:
                try:
                    found = self._detector_factory(setting)
                except DetectorError as exc:
                    raise InvalidRequest(str(exc)) from exc
                self._detectors[setting] = found
            return found

    def _load_active(self, setting: str) -> _Active:
        detector = self.detector(setting)
        ids, raw = self.repository.vectors(detector.name)
        index = NeighborIndex.build(ids, ranking_transform(raw)) if len(ids) else NeighborIndex()
        return _Active(setting, detector, index)

    def _detect(self, detector: Detector, rgb: np.ndarray) -> Detections:
        if not self._detect_slots.acquire(timeout=self._detect_timeout):
            raise Busy("the server is busy detecting objects in other images; try again shortly")
        try:
            return detector.detect(rgb)
        except DetectorError as exc:
            raise DetectorUnavailable(str(exc)) from exc
        finally:
            self._detect_slots.release()

    def load_detector(self) -> None:
        """Load the active detector's weights now (otherwise the first detection does)."""
        try:
            self._active.detector.load()
        except DetectorError as exc:
            raise DetectorUnavailable(str(exc)) from exc

    # ----------------------------------------------------------------------------- ingest

    def _prepare(self, data: bytes, name_hint: str | None, *, max_bytes: int | None) -> _Prepared:
        image = decode_image(data, max_bytes=max_bytes)
        sha = hashlib.sha256(data).hexdigest()
        return _Prepared(data, image, sha, name_hint, self.repository.get_by_sha256(sha))

    def _prepare_path(self, path: Path) -> _Prepared:
        return self._prepare(path.read_bytes(), path.name, max_bytes=None)

    @_database_errors
    def ingest(self, source: bytes | str | os.PathLike[str], name_hint: str | None = None) -> IngestResult:
        """Store one image (bytes, e.g. an upload, or a file path) and index it.

        Uploaded bytes are limited to ``max_upload_bytes``; files given by path are not.
        The same bytes twice return the stored image with ``duplicate=True``.
        """
        if isinstance(source, (bytes, bytearray, memoryview)):
            prepared = self._prepare(bytes(source), name_hint, max_bytes=self.max_upload_bytes)
        else:
            path = Path(source)
            data = path.read_bytes()
            prepared = self._prepare(data, name_hint or path.name, max_bytes=None)
        return self._ingest_prepared(prepared)

    def _ingest_prepared(self, prepared: _Prepared, detected: tuple[Detector, Detections] | None = None) -> IngestResult:
        if prepared.existing is not None:
            return self._duplicate(prepared.existing)
        while True:
            active = self._active
            if detected is None or detected[0] is not active.detector:
                detected = (active.detector, self._detect(active.detector, prepared.image.rgb))
            detector, found = detected
            with self._sha_locks[int(prepared.sha256[:8], 16) % len(self._sha_locks)], self._commit_lock:
                if self._active.detector is not detector:
                    continue  # the detector was switched meanwhile: detect again with the new one
                return self._store(prepared, detector, found)

    def _duplicate(self, record: ImageRecord) -> IngestResult:
        name = self.active_detector
        found = [DetectedObject.from_record(r) for r in self.repository.detections_of(record.id, name)]
        return IngestResult(record, True, name, found)

    def _store(self, prepared: _Prepared, detector: Detector, found: Detections) -> IngestResult:
        """File first, then the rows in one transaction; undo the file if the rows fail."""
        decoded, sha = prepared.image, prepared.sha256
        # Bytes stored by someone else since _prepare surface as a unique-hash conflict below.
        vector = class_presence(found)
        name = base_name(prepared.name_hint, decoded.format, sha)
        candidates = [name, with_suffix(name, sha), with_suffix(name, sha, 16)]
        if self.repository.name_exists(name):
            candidates.pop(0)
        self.media.put_original(sha, decoded.format, prepared.data)
        try:
            for attempt, candidate in enumerate(candidates):
                new = NewImage(
                    name=candidate,
                    sha256=sha,
                    width=decoded.width,
                    height=decoded.height,
                    format=decoded.format,
                    mime=decoded.mime,
                    size_bytes=len(prepared.data),
                )
                try:
                    with self.repository.transaction() as conn:
                        record = self.repository.add_image(conn, new)
                        self.repository.add_detections(conn, record.id, detector.name, found)
                        self.repository.put_vector(conn, record.id, detector.name, vector, new=True)
                except IntegrityError:
                    existing = self.repository.get_by_sha256(sha)
                    if existing is not None:  # another process stored the same bytes
                        return self._duplicate(existing)
                    if attempt == len(candidates) - 1 or not self.repository.name_exists(candidate):
                        raise
                    continue  # the name was taken concurrently: try the suffixed one
                break
        except BaseException:
            self._discard_unowned(sha, decoded.format)
            raise
        self._active.index.add(record.id, ranking_transform(vector))
        objects = [
            DetectedObject(int(c), class_name(int(c)), float(s), tuple(float(v) for v in b))  # type: ignore[arg-type]
            for c, s, b in sorted(
                zip(found.class_ids, found.scores, np.asarray(found.boxes).reshape(-1, 4)), key=lambda t: -float(t[1])
            )
        ]
        return IngestResult(record, False, detector.name, objects)

    def _discard_unowned(self, sha: str, fmt: str) -> None:
        try:
            owned = self.repository.get_by_sha256(sha) is not None
        except Exception:
            owned = False  # database gone: the file cannot belong to a committed row we can see
        if not owned:
            self.media.delete(sha, fmt)

    @_database_errors
    def ingest_paths(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        progress: Callable[[IngestEvent], None] | None = None,
        clean_orphans: bool = True,
    ) -> IngestSummary:
        """Ingest files and folders (recursively), overlapping decoding with detection.

        Each image is its own transaction, so an interrupted run (Ctrl-C, SIGTERM, even
        SIGKILL) leaves only complete images; running it again skips those by SHA-256 and
        finishes the rest. Unreadable files are reported in ``failed`` and skipped.
        """
        started = time.perf_counter()
        files, missing = find_image_files(paths)
        summary = IngestSummary(total=len(files) + len(missing))
        summary.failed.extend((str(p), "no such file or folder") for p in missing)
        notify = progress or (lambda _event: None)
        self.load_detector()  # fail before any work when the weights are missing
        if clean_orphans:
            summary.orphans_removed = self.clean_orphans()
        notify(IngestEvent("started", summary.total))
        for path, reason in summary.failed:
            notify(IngestEvent("failed", summary.total, Path(path), message=reason))

        # closing(): an interruption stops the workers now, not when the traceback is freed.
        with contextlib.closing(self._pipeline(files, self._prepare_path, self._active.detector)) as stream:
            self._consume_ingest(stream, summary, notify)
        summary.seconds = time.perf_counter() - started
        return summary

    def _consume_ingest(self, stream: Iterator, summary: IngestSummary, notify: Callable[[IngestEvent], None]) -> None:
        for path, outcome in stream:
            if isinstance(outcome, BaseException):
                reason = _reason(outcome)
                summary.failed.append((str(path), reason))
                notify(IngestEvent("failed", summary.total, path, message=reason))
                continue
            prepared, detected = outcome
            try:
                result = self._ingest_prepared(prepared, detected)
            except (ImageError, DetectorUnavailable) as exc:
                summary.failed.append((str(path), _reason(exc)))
                notify(IngestEvent("failed", summary.total, path, message=_reason(exc)))
                continue
            if result.duplicate:
                summary.duplicates += 1
                notify(IngestEvent("duplicate", summary.total, path, result.image.name))
            else:
                summary.ingested += 1
                notify(IngestEvent("ingested", summary.total, path, result.image.name))

    def _pipeline(
        self,
        items: Sequence[T],
        prepare: Callable[[T], _Prepared],
        detector: Detector,
    ) -> Iterator[tuple[T, tuple[_Prepared, tuple[Detector, Detections] | None] | BaseException]]:
        """Yield (item, (prepared, detections) | error) in input order.

        Worker threads read, decode, hash and detect ahead of the consumer (detection limited
        to ``detect_workers`` at a time); the consumer, in the calling thread, does the
        commits. Duplicates skip detection. On an exception in the consumer (Ctrl-C), queued
        work is cancelled and running work finishes; workers never write to the database.
        """

        def work(item: T) -> tuple[_Prepared, tuple[Detector, Detections] | None]:
            prepared = prepare(item)
            if prepared.existing is not None:
                return prepared, None
            return prepared, (detector, self._detect(detector, prepared.image.rgb))

        workers = self.prepare_workers + self.detect_workers
        lookahead = 2 * workers
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ingest")
        window: deque[tuple[T, Future]] = deque()
        pending = iter(items)
        try:
            for item in pending:
                window.append((item, pool.submit(work, item)))
                if len(window) >= lookahead:
                    break
            while window:
                item, future = window.popleft()
                next_item = next(pending, _END)
                if next_item is not _END:
                    window.append((next_item, pool.submit(work, next_item)))
                try:
                    outcome: Any = future.result()
                except (ImageError, OSError, DetectorUnavailable) as exc:
                    outcome = exc
                yield item, outcome
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    # --------------------------------------------------------------------------- orphans

    def clean_orphans(self, older_than: float | None = None) -> int:
        """Remove media files without an image row (left by a killed ingest); count them.

        Only files older than ``older_than`` seconds are touched (default: 10 minutes), so an
        ingest in flight in another process keeps its file. A re-run of the same ingest
        adopts its own orphans anyway: the file path is derived from the content.
        """
        grace = ORPHAN_GRACE_SECONDS if older_than is None else older_than
        orphans = self.media.find_orphans(self.repository.existing_sha256, older_than=grace)
        return self.media.remove_files(orphans)

    # ---------------------------------------------------------------------------- queries

    @_database_errors
    def get_image(self, name: str) -> ImageRecord:
        record = self.repository.get_by_name(name)
        if record is None:
            raise NotFound(f"no image named {name!r}")
        return record

    def original_path(self, name: str) -> tuple[Path, str]:
        """Path and MIME type of the stored original."""
        record = self.get_image(name)
        path = self.media.original_path(record.sha256, record.format)
        if not path.is_file():
            raise NotFound(f"the file of image {name!r} is missing from the media store")
        return path, record.mime

    def thumbnail_path(self, name: str) -> Path:
        """Path of the JPEG thumbnail, generated on first request and then cached."""
        record = self.get_image(name)
        original = self.media.original_path(record.sha256, record.format)
        if not original.is_file():
            raise NotFound(f"the file of image {name!r} is missing from the media store")
        return self.media.thumbnail(record.sha256, lambda: thumbnail_jpeg(read_image_file(original).rgb))

    @_database_errors
    def detections(self, name: str) -> list[DetectedObject]:
        """Objects the active detector found in the image, highest score first."""
        record = self.get_image(name)
        return [DetectedObject.from_record(r) for r in self.repository.detections_of(record.id, self.active_detector)]

    @_database_errors
    def random(self, n: int = 1) -> list[ImageRecord]:
        if not 1 <= n <= MAX_PER_PAGE:
            raise InvalidRequest(f"n must be between 1 and {MAX_PER_PAGE}, got {n}")
        records = []
        for image_id in self.repository.random_ids(n):
            record = self.repository.get_by_id(image_id)
            if record is not None:
                records.append(record)
        return records

    @_database_errors
    def count(self) -> int:
        return self.repository.count()

    @_database_errors
    def similar_to_image(self, name: str, page: int = 1, per_page: int = 30) -> SimilarPage:
        """Page ``page`` of the stored images most similar to the stored image ``name``."""
        _check_page(page, per_page)
        record = self.get_image(name)
        active = self._active
        vector = self.repository.vector(record.id, active.detector.name)
        if vector is None:
            raise Unavailable(
                f"image {name!r} has no vector for detector {active.detector.name!r} yet: "
                f"run `recommender reindex --detector {active.setting}`"
            )
        query_classes = self._classes_of(record.id, active.detector.name)
        return self._page(active, vector, record.id, record.name, query_classes, page, per_page)

    @_database_errors
    def similar_to_upload(self, data: bytes, page: int = 1, per_page: int = 30) -> UploadQuery:
        """Similar stored images to uploaded bytes, without storing them."""
        _check_page(page, per_page)
        prepared = self._prepare(data, None, max_bytes=self.max_upload_bytes)
        active = self._active
        existing = prepared.existing
        vector = self.repository.vector(existing.id, active.detector.name) if existing is not None else None
        if existing is not None and vector is not None:
            objects = [
                DetectedObject.from_record(r) for r in self.repository.detections_of(existing.id, active.detector.name)
            ]
            query_classes = self._classes_of(existing.id, active.detector.name)
            similar = self._page(active, vector, existing.id, existing.name, query_classes, page, per_page)
        else:
            found = self._detect(active.detector, prepared.image.rgb)
            vector = class_presence(found)
            order = np.argsort(-np.asarray(found.scores), kind="stable")
            boxes = np.asarray(found.boxes).reshape(-1, 4)
            objects = [
                DetectedObject(
                    int(found.class_ids[i]),
                    class_name(int(found.class_ids[i])),
                    float(found.scores[i]),
                    (float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
                )
                for i in order
            ]
            query_classes = sorted({o.class_id for o in objects if o.score >= self.display_threshold})
            similar = self._page(active, vector, None, None, query_classes, page, per_page)
        return UploadQuery(similar, objects, prepared.image.width, prepared.image.height, existing and existing.name)

    def _classes_of(self, image_id: int, detector: str) -> list[int]:
        summary = self.repository.summaries([image_id], detector, self.display_threshold).get(image_id)
        return list(summary.class_ids) if summary else []

    def _page(
        self,
        active: _Active,
        raw_vector: np.ndarray,
        exclude_id: int | None,
        query_name: str | None,
        query_classes: Sequence[int],
        page: int,
        per_page: int,
    ) -> SimilarPage:
        result = active.index.query(query_transform(raw_vector), page=page, per_page=per_page, exclude_id=exclude_id)
        ids = [int(i) for i in result.ids]
        summaries = self.repository.summaries(ids, active.detector.name, self.display_threshold)
        stored = self.repository.vectors_of(ids, active.detector.name)
        # Deleted between the index query and the lookups: left out of the page.
        found = [(i, d) for i, d in zip(ids, result.distances) if i in summaries and i in stored]
        explained = explain_matches(raw_vector, np.array([stored[i] for i, _ in found])) if found else []
        wanted = set(query_classes)
        results = []
        for (image_id, distance), contributions in zip(found, explained):
            summary = summaries[image_id]
            results.append(
                SimilarImage(
                    id=image_id,
                    name=summary.name,
                    distance=float(distance),
                    classes=[class_name(c) for c in summary.class_ids],
                    shared_classes=[class_name(c) for c in summary.class_ids if c in wanted],
                    contributions=contributions,
                    why=why(contributions),
                )
            )
        return SimilarPage(
            query=query_name,
            query_classes=[class_name(c) for c in query_classes],
            detector=active.detector.name,
            page=page,
            per_page=per_page,
            total=result.total,
            results=results,
        )

    # ----------------------------------------------------------------------------- delete

    @_database_errors
    def delete(self, name: str) -> ImageRecord:
        """Delete an image: its row, detections and vectors, its files and its index entry."""
        record = self.get_image(name)
        with self._commit_lock:
            with self.repository.transaction() as conn:
                if not self.repository.delete_image(conn, record.id):
                    raise NotFound(f"no image named {name!r}")
            # Rows first, files second: a crash in between leaves an orphan file, never a row
            # without its file.
            self._active.index.remove(record.id)
        with self._sha_locks[int(record.sha256[:8], 16) % len(self._sha_locks)]:
            if self.repository.get_by_sha256(record.sha256) is None:  # not re-ingested meanwhile
                self.media.delete(record.sha256, record.format)
        return record

    # ---------------------------------------------------------------------------- reindex

    @_database_errors
    def reindex(
        self,
        setting: str | None = None,
        *,
        activate: bool = False,
        progress: Callable[[IngestEvent], None] | None = None,
    ) -> ReindexResult:
        """Compute the vectors ``setting``'s detector is missing; optionally make it active.

        Resumable: each image is committed on its own, and a re-run only does what is still
        missing. With ``activate`` the index is rebuilt from that detector's vectors and the
        choice is stored in the database, so a restart serves the same detector.
        """
        setting = setting or self._active.setting
        detector = self.detector(setting)
        try:
            detector.load()
        except DetectorError as exc:
            raise DetectorUnavailable(str(exc)) from exc
        result = ReindexResult(detector=detector.name, setting=setting)
        notify = progress or (lambda _event: None)
        missing = self.repository.missing_vectors(detector.name)
        result.missing = len(missing)
        notify(IngestEvent("started", len(missing)))
        self._compute_vectors(missing, detector, result, notify)
        if activate:
            with self._commit_lock:
                # Images ingested by the previous detector while we worked.
                late = self.repository.missing_vectors(detector.name)
                result.missing += len(late)
                self._compute_vectors(late, detector, result, lambda _event: None)
                active = self._load_active(setting)
                with self.repository.transaction() as conn:
                    self.repository.set_state(conn, ACTIVE_DETECTOR_KEY, setting)
                self._active = active
            result.activated = True
        result.indexed = len(self._active.index)
        return result

    def _compute_vectors(
        self,
        records: Sequence[ImageRecord],
        detector: Detector,
        result: ReindexResult,
        notify: Callable[[IngestEvent], None],
    ) -> None:
        def prepare(record: ImageRecord) -> _Prepared:
            path = self.media.original_path(record.sha256, record.format)
            if not path.is_file():
                raise FileNotFoundError(f"the file of {record.name!r} is missing from the media store")
            data = path.read_bytes()
            return _Prepared(data, decode_image(data), record.sha256, record.name, None)

        total = len(records)
        with contextlib.closing(self._pipeline(records, prepare, detector)) as stream:
            for record, outcome in stream:
                self._save_vector(record, outcome, detector, result, notify, total)

    def _save_vector(
        self,
        record: ImageRecord,
        outcome: tuple[_Prepared, tuple[Detector, Detections] | None] | BaseException,
        detector: Detector,
        result: ReindexResult,
        notify: Callable[[IngestEvent], None],
        total: int,
    ) -> None:
        if isinstance(outcome, BaseException):
            result.failed.append((record.name, _reason(outcome)))
            notify(IngestEvent("failed", total, name=record.name, message=_reason(outcome)))
            return
        _prepared, detected = outcome
        assert detected is not None
        found = detected[1]
        vector = class_presence(found)
        with self._commit_lock:
            with self.repository.transaction() as conn:
                if self.repository.get_by_id(record.id, conn) is None:
                    return  # deleted meanwhile
                self.repository.replace_detections(conn, record.id, detector.name, found)
                self.repository.put_vector(conn, record.id, detector.name, vector)
            if self._active.detector.name == detector.name:
                self._active.index.add(record.id, ranking_transform(vector))
        result.computed += 1
        notify(IngestEvent("ingested", total, name=record.name))


# ------------------------------------------------------------------------------------ helpers

_END = object()


def _detector_factory(weights_dir: Path, detect_workers: int) -> Callable[[str], Detector]:
    def create(setting: str) -> Detector:
        detector = create_detector(setting, weights_dir)
        # Concurrent detections share the cores: one runtime thread per detection each was
        # measured faster than every detection spreading over all cores (bench/ingest.py).
        if isinstance(getattr(detector, "threads", None), int):
            detector.threads = max(1, (os.cpu_count() or 1) // detect_workers)  # type: ignore[attr-defined]
        return detector

    return create


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (ImageError, ServiceError)):
        return exc.message
    if isinstance(exc, FileNotFoundError) and exc.filename is None:
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror or exc}"
    return _first_line(exc)


def _check_page(page: int, per_page: int) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise InvalidRequest(f"page must be a whole number from 1, got {page!r}")
    if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequest(f"per_page must be a whole number from 1 to {MAX_PER_PAGE}, got {per_page!r}")


def find_image_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """Files named directly plus image files (by suffix) found recursively in folders.

    Returns (files in a stable order without repeats, paths that do not exist). Hidden
    files and folders (starting with '.') inside folders are skipped.
    """
    files: list[Path] = []
    missing: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(
                    Path(dirpath) / f
                    for f in filenames
                    if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_SUFFIXES
                )
            files.extend(sorted(found))
        elif path.exists():
            files.append(path)
        else:
            missing.append(path)
    return list(dict.fromkeys(files)), missing

