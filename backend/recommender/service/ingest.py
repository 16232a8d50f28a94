"""Ingest: decode → SHA-256 → duplicate check → detect → store the file → one transaction for the rows.

The original is written (atomically, content-addressed) before the rows are committed, under
the media lock of its hash, so a committed image always has its file; if the rows fail, the
file is removed again unless another image owns it. A process killed between the two leaves an
orphan file, which ``Admin.clean_orphans`` (run by every batch ingest) removes later.

Through a queue the work is split in two: ``stage`` (where the files are) hashes a photo and
puts its original in the media store with a queue mark; ``stored`` (in a worker, later, maybe
on another machine) decodes, detects and commits it, keyed by its SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path

from ..detection import Detections
from ..images import WORKING_SIDE, DecodedImage, ImageError, decode_image, sniff_format, thumbnail_jpeg
from ..neardup import perceptual_hash
from ..storage import ContentExists, DetectorChanged, ImageRecord, MediaStore, NameTaken, NewImage, Repository
from ..storage.names import base_name, with_suffix
from ..vectors import class_presence
from .collection import LiveCollection
from .detectors import Detectors
from .errors import DetectorUnavailable, PhotoFailed, ServiceError, Unavailable, database_errors, first_line
from .pipeline import find_image_files, ordered_map
from .results import (
    ImageInfo,
    IngestEvent,
    IngestResult,
    IngestSummary,
    Staged,
    objects_from_detections,
    objects_from_records,
)

Progress = Callable[[IngestEvent], None]
# Retries when the collection switches detector while a photo is being detected.
_DETECTOR_SWITCH_RETRIES = 3


@dataclass(frozen=True)
class Prepared:
    """Decoded and hashed input, ready for detection."""

    data: bytes
    image: DecodedImage  # reduced to WORKING_SIDE at most
    sha256: str
    name_hint: str | None
    existing: ImageRecord | None
    phash: int | None  # perceptual hash of the pixels; None for a duplicate (not needed)
    thumbnail: bytes | None  # made now, from pixels at hand, so no request decodes the original for it


@dataclass(eq=False)
class Ingest:
    _repository: Repository
    _media: MediaStore
    _detectors: Detectors
    _collection: LiveCollection
    _: KW_ONLY
    max_upload_bytes: int | None
    clean_orphans: Callable[[], int]
    prepare_threads: int = 2

    def upload(self, data: bytes, name_hint: str | None = None) -> IngestResult:
        """Store uploaded bytes (at most MAX_UPLOAD_MB) and index them; the same bytes twice are a duplicate."""
        with database_errors():
            return self._finish(self._prepare(data, name_hint, self.max_upload_bytes))

    def file(self, path: str | os.PathLike[str], name_hint: str | None = None) -> IngestResult:
        """Store one image file (no size limit: the operator chose it)."""
        path = Path(path)
        with database_errors():
            return self._finish(self._prepare(path.read_bytes(), name_hint or path.name, None))

    def paths(self, paths: Iterable[str | os.PathLike[str]], *, progress: Progress | None = None,
              clean_orphans: bool = True) -> IngestSummary:
        """Ingest files and folders (recursively), decoding and detecting ahead in threads.

        Each image is its own transaction, so an interrupted run (Ctrl-C, SIGTERM, even
        SIGKILL) leaves only complete images; running it again skips those by SHA-256 and
        finishes the rest. Unreadable files are reported in ``failed`` and skipped.
        """
        started = time.perf_counter()
        files, missing = find_image_files(paths)
        summary = IngestSummary(total=len(files) + len(missing))
        summary.failed.extend((str(p), "no such file or folder") for p in missing)
        notify = progress or (lambda _event: None)
        with database_errors():
            detector = self.load_detector()  # fail before any work when the weights are missing
            if clean_orphans:
                summary.orphans_removed = self.clean_orphans()
            notify(IngestEvent("started", summary.total))
            for path, reason in summary.failed:
                notify(IngestEvent("failed", summary.total, Path(path), message=reason))

            def work(path: Path) -> tuple[Prepared, Detections | None]:
                prepared = self._prepare(path.read_bytes(), path.name, None)
                return prepared, None if prepared.existing else self._detect(detector, prepared.image)

            threads = self.prepare_threads + self._detectors.slots
            expected = (ImageError, OSError, ServiceError)
            for path, outcome in ordered_map(files, work, threads=threads, expected=expected):
                self._count(summary, notify, path, outcome, detector)
        summary.seconds = time.perf_counter() - started
        return summary

    def _count(self, summary: IngestSummary, notify: Progress, path: Path, outcome: object, detector: str) -> None:
        try:
            if isinstance(outcome, BaseException):
                raise outcome
            prepared, found = outcome  # type: ignore[misc]
            result = self._finish(prepared, (detector, found) if found is not None else None)
        except (ImageError, OSError, DetectorUnavailable) as exc:
            summary.failed.append((str(path), reason(exc)))
            notify(IngestEvent("failed", summary.total, path, message=reason(exc)))
            return
        if result.duplicate:
            summary.duplicates += 1
        else:
            summary.ingested += 1
        notify(IngestEvent("duplicate" if result.duplicate else "ingested", summary.total, path, result.image.name))

    def load_detector(self) -> str:
        """Load (and warm up) the collection's detector now, so the first photo is not slow; its name."""
        with database_errors():
            detector = self._active()
        self._detectors.load(detector)
        return detector

    # -- through a queue: stage here, ingest in a worker --------------------------------------
    def stage(self, path: str | os.PathLike[str]) -> Staged:
        """Hash a photo file and store its original for a queue worker; no decoding, no detection.

        The original goes into the content-addressed media store with a queue mark, so the
        orphan cleaner spares it until its task has run. A photo already in the collection is
        only looked up. Raises ImageError (not an image), OSError (unreadable), Unavailable.
        """
        path = Path(path)
        data = path.read_bytes()
        fmt = sniff_format(data)
        if fmt is None:
            decode_image(data)  # raises NotAnImageError with the message in-process ingest gives
        sha = hashlib.sha256(data).hexdigest()
        with database_errors():
            existing = self._repository.get_by_sha256(sha)
        if existing is None:
            with self._media.lock(sha):
                self._media.mark_queued(sha)  # first, so a staged original never lacks its mark
                self._media.put_original(sha, fmt, data)
        return Staged(path, sha, fmt, path.name, ImageInfo.of(existing) if existing is not None else None)

    def stage_files(self, files: Sequence[Path]) -> Iterator[tuple[Path, Staged | BaseException]]:
        """``stage`` for many files, several at once (reads and fsyncs overlap), in input order.

        A file that cannot be staged is yielded with its ImageError or OSError; Unavailable stops.
        """
        return ordered_map(files, self.stage, threads=2 * self.prepare_threads, expected=(ImageError, OSError))

    def stored(self, sha256: str, fmt: str, name_hint: str | None) -> IngestResult:
        """Ingest an original that ``stage`` put in the media store: a queue worker's task.

        Idempotent: a photo already stored (its task delivered again after a worker died, or
        enqueued twice) is a duplicate. A photo that cannot be ingested (undecodable, detector
        error, original gone) raises PhotoFailed after removing its original: trying again
        would not help. Unavailable (the database, busy detectors) leaves all in place for a retry.
        """
        with database_errors():
            try:
                result = self._stored(sha256, fmt, name_hint)
            except (ImageError, OSError, ServiceError) as exc:
                if isinstance(exc, Unavailable) and not isinstance(exc, DetectorUnavailable):
                    raise
                self._drop_queued(sha256, fmt)
                raise PhotoFailed(reason(exc)) from exc
        self._media.unmark_queued(sha256)
        return result

    def _stored(self, sha256: str, fmt: str, name_hint: str | None) -> IngestResult:
        existing = self._repository.get_by_sha256(sha256)
        if existing is not None:
            return self._duplicate(existing)
        try:
            data = self._media.original_path(sha256, fmt).read_bytes()
        except FileNotFoundError:
            raise PhotoFailed("its original is no longer in the media store (removed before the task ran)") from None
        prepared = self._prepare(data, name_hint, None)
        if prepared.sha256 != sha256:
            raise PhotoFailed("its stored original is damaged (the SHA-256 does not match)")
        return self._finish(prepared, keep_file=True)

    def _drop_queued(self, sha256: str, fmt: str) -> None:
        with self._media.lock(sha256):
            if self._repository.get_by_sha256(sha256) is None:
                self._media.delete(sha256, fmt)
            self._media.unmark_queued(sha256)

    # -- one image --------------------------------------------------------------------------
    def _prepare(self, data: bytes, name_hint: str | None, max_bytes: int | None) -> Prepared:
        # Nothing needs more pixels than the working size: decoding no more bounds memory.
        image = decode_image(data, max_bytes=max_bytes, max_side=WORKING_SIDE)
        sha = hashlib.sha256(data).hexdigest()
        existing = self._repository.get_by_sha256(sha)
        if existing is not None:
            return Prepared(data, image, sha, name_hint, existing, None, None)
        return Prepared(data, image, sha, name_hint, existing, perceptual_hash(image.rgb), thumbnail_jpeg(image.rgb))

    def _detect(self, detector: str, image: DecodedImage) -> Detections:
        """Detections in the original's pixels, found on the (possibly reduced) decoded copy."""
        return self._detectors.detect(detector, image.rgb).scaled(*image.scale)

    def _active(self) -> str:
        active = self._repository.active_detector()
        assert active is not None, "bootstrap records the active detector"
        return active

    def _finish(self, prepared: Prepared, detected: tuple[str, Detections] | None = None, *,
                keep_file: bool = False) -> IngestResult:
        if prepared.existing is not None:
            return self._duplicate(prepared.existing)
        for _attempt in range(_DETECTOR_SWITCH_RETRIES):
            detector = self._active()
            if detected is None or detected[0] != detector:
                detected = (detector, self._detect(detector, prepared.image))
            try:
                return self._store(prepared, *detected, keep_file=keep_file)
            except DetectorChanged:
                detected = None  # switched while we detected: detect again with the new one
            except ContentExists as exc:
                return self._duplicate(exc.existing)
        raise ServiceError("the collection keeps switching detectors; try again")

    def _store(self, prepared: Prepared, detector: str, found: Detections, *, keep_file: bool = False) -> IngestResult:
        decoded, sha = prepared.image, prepared.sha256
        name = base_name(prepared.name_hint, decoded.format, sha)
        candidates = [name, with_suffix(name, sha), with_suffix(name, sha, 16)]
        with self._media.lock(sha):
            try:
                self._media.put_original(sha, decoded.format, prepared.data)
                if prepared.thumbnail is not None:
                    self._media.put_thumbnail(sha, prepared.thumbnail)
                record = self._store_rows(prepared, candidates, detector, found)
            except BaseException:
                # A queued original stays for the task's retry; the task removes it if it fails for good.
                if not keep_file and self._repository.get_by_sha256(sha) is None:
                    self._media.delete(sha, decoded.format)
                raise
        self._collection.refresh_if_loaded()
        return IngestResult(ImageInfo.of(record), False, detector, objects_from_detections(found))

    def _store_rows(self, prepared: Prepared, candidates: list[str], detector: str, found: Detections) -> ImageRecord:
        decoded = prepared.image
        vector = class_presence(found)
        for candidate in candidates:
            new = NewImage(
                name=candidate, sha256=prepared.sha256, width=decoded.width, height=decoded.height,
                format=decoded.format, mime=decoded.mime, size_bytes=len(prepared.data), phash=prepared.phash,
            )
            try:
                return self._repository.store_image(new, detector, found, vector)
            except NameTaken:
                continue  # "photo.jpg" is another photo: try "photo-<hash>.jpg"
        raise ServiceError(f"no free name for {candidates[0]!r}")

    def _duplicate(self, record: ImageRecord) -> IngestResult:
        detector = self._active()
        found = objects_from_records(self._repository.detections_of(record.id, detector))
        return IngestResult(ImageInfo.of(record), True, detector, found)


def reason(exc: BaseException) -> str:
    """One line saying why a file was skipped."""
    if isinstance(exc, (ImageError, ServiceError)):
        return exc.message
    if isinstance(exc, FileNotFoundError) and exc.filename is None:
        return str(exc)
    if isinstance(exc, OSError):
        return f"cannot read the file: {exc.strerror or exc}"
    return first_line(exc)
