"""Operator use cases: delete an image, compute another detector's vectors and switch to it, clean media
and the change feed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass
from datetime import datetime, timedelta, timezone

from ..detection import Detections
from ..images import WORKING_SIDE, ImageError, decode_image
from ..neardup import perceptual_hash
from ..storage import ImageRecord, MediaStore, Repository, VectorsMissing
from ..storage.names import is_plausible_name
from ..vectors import class_presence
from .collection import LiveCollection
from .detectors import Detectors
from .errors import NotFound, ServiceError, Unavailable, database_errors
from .ingest import reason
from .pipeline import ordered_map
from .results import ImageInfo, IngestEvent, ReindexResult

# An orphan younger than this may belong to an ingest still in flight in another process.
ORPHAN_GRACE_SECONDS = 600.0
# Activation rounds: each computes the vectors of images added meanwhile by the old detector.
_ACTIVATION_ROUNDS = 10


@dataclass(eq=False)
class Admin:
    _repository: Repository
    _media: MediaStore
    _detectors: Detectors
    _collection: LiveCollection
    _: KW_ONLY
    prepare_threads: int = 2

    def delete(self, name: str) -> ImageInfo:
        """Delete an image: its row, detections and vectors, its files; every index follows the feed."""
        with database_errors():
            record = self._repository.get_by_name(name) if is_plausible_name(name) else None
            if record is None:
                raise NotFound(f"no image named {name!r}")
            with self._media.lock(record.sha256):
                if not self._repository.delete_image(record.id):
                    raise NotFound(f"no image named {name!r}")
                # Rows first, files second: a crash in between leaves an orphan file, never a
                # row without its file. The lock keeps an upload of the same bytes out meanwhile.
                self._media.delete(record.sha256, record.format)
        self._collection.refresh_if_loaded()
        return ImageInfo.of(record)

    def reindex(self, detector: str | None = None, *, activate: bool = False,
                progress: Callable[[IngestEvent], None] | None = None) -> ReindexResult:
        """Compute the vectors ``detector`` is missing; optionally make it the one the index serves.

        Resumable: each image is committed on its own, and a re-run does only what is missing.
        Activation is refused by the database while any image lacks a vector (photos may keep
        arriving, detected by the old detector), so it computes those and tries again.
        """
        notify = progress or (lambda _event: None)
        with database_errors():
            name = detector or self._collection.current().detector
            self._detectors.get(name)  # an unknown name fails here, before any work
            result = ReindexResult(detector=name)
            missing = self._repository.missing_vectors(name)
            result.missing = len(missing)
            notify(IngestEvent("started", len(missing)))
            self._compute(missing, name, result, notify)
            if activate:
                self._activate(name, result)
        self._collection.refresh_if_loaded()
        return result

    def _activate(self, name: str, result: ReindexResult) -> None:
        for _round in range(_ACTIVATION_ROUNDS):
            try:
                self._repository.activate(name)
            except VectorsMissing:
                late = self._repository.missing_vectors(name)
                result.missing += len(late)
                before = len(result.failed)
                self._compute(late, name, result, lambda _event: None)
                if len(result.failed) > before:
                    raise ServiceError(f"cannot switch to {name}: {result.failed[-1][0]} has no vector ({result.failed[-1][1]})")
                continue
            result.activated = True
            return
        raise Unavailable(f"photos keep arriving faster than {name} can detect them; try the switch again later")

    def _compute(self, records: Sequence[ImageRecord], detector: str, result: ReindexResult,
                 notify: Callable[[IngestEvent], None]) -> None:
        def work(record: ImageRecord) -> Detections:
            path = self._media.original_path(record.sha256, record.format)
            if not path.is_file():
                raise FileNotFoundError(f"the file of {record.name!r} is missing from the media store")
            image = decode_image(path.read_bytes(), max_side=WORKING_SIDE)
            return self._detectors.detect(detector, image.rgb).scaled(*image.scale)

        total = len(records)
        if total:
            self._detectors.load(detector)  # only now: switching back to stored vectors needs no weights
        threads = self.prepare_threads + self._detectors.slots
        for record, outcome in ordered_map(records, work, threads=threads, expected=(ImageError, OSError, ServiceError)):
            if isinstance(outcome, BaseException):
                result.failed.append((record.name, reason(outcome)))
                notify(IngestEvent("failed", total, name=record.name, message=reason(outcome)))
                continue
            if self._repository.store_vector(record.id, detector, outcome, class_presence(outcome)):
                result.computed += 1
            notify(IngestEvent("ingested", total, name=record.name))

    def backfill_hashes(self, progress: Callable[[IngestEvent], None] | None = None) -> tuple[int, list[tuple[str, str]]]:
        """Compute the perceptual hash of every image stored without one; (computed, failed)."""
        notify = progress or (lambda _event: None)

        def work(record: ImageRecord) -> int:
            path = self._media.original_path(record.sha256, record.format)
            if not path.is_file():
                raise FileNotFoundError(f"the file of {record.name!r} is missing from the media store")
            return perceptual_hash(decode_image(path.read_bytes()).rgb)

        computed, failed = 0, []
        with database_errors():
            records = self._repository.missing_hashes()
            notify(IngestEvent("started", len(records)))
            threads = self.prepare_threads + self._detectors.slots
            for record, outcome in ordered_map(records, work, threads=threads, expected=(ImageError, OSError)):
                if isinstance(outcome, BaseException):
                    failed.append((record.name, reason(outcome)))
                    notify(IngestEvent("failed", len(records), name=record.name, message=reason(outcome)))
                    continue
                self._repository.set_hash(record.id, outcome)
                computed += 1
                notify(IngestEvent("ingested", len(records), name=record.name))
        return computed, failed

    def clean_orphans(self, older_than: float | None = None) -> int:
        """Remove media files without an image row (left by a killed ingest); count them.

        Only files older than ``older_than`` seconds are touched (default: 10 minutes), so an
        ingest in flight in another process keeps its file.
        """
        grace = ORPHAN_GRACE_SECONDS if older_than is None else older_than
        with database_errors():
            orphans = self._media.find_orphans(self._repository.existing_sha256, older_than=grace)
        return self._media.remove_files(orphans)

    def prune_feed(self, keep_days: float) -> int:
        """Forget changes older than ``keep_days`` (the newest is always kept); count them.

        Every process that follows the feed is normally less than a second behind; one further
        behind than the pruning (stopped for longer, say) rebuilds its index from the tables.
        """
        with database_errors():
            return self._repository.prune_feed(datetime.now(timezone.utc) - timedelta(days=keep_days))
