"""Read use cases: similar photos, random picks, one image's files and detections, collection status."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..classes import CLASS_NAMES, class_name
from ..explain import explain_points, why
from ..images import THUMBNAIL_SIDE, decode_image, thumbnail_jpeg
from ..index import MAX_PER_PAGE, label_classes
from ..neardup import fold
from ..objects import NO_ASK, Ask, parse_search, similarity_of
from ..storage import ImageRecord, MediaStore, PageReader, Repository
from ..storage.names import is_plausible_name
from .collection import LiveCollection, Snapshot
from .errors import InvalidRequest, NotFound, Unavailable, database_errors
from .results import (
    DISPLAY_THRESHOLD,
    ClassCount,
    CollectionStatus,
    FoundImage,
    ImageDetections,
    ImageFile,
    ImageInfo,
    SearchPage,
    SimilarImage,
    SimilarPage,
    objects_from_records,
)

# A page number beyond this cannot exist (it would skip more images than any collection holds).
MAX_PAGE = 10**9


@dataclass(eq=False)
class Queries:
    _repository: Repository
    _media: MediaStore
    _collection: LiveCollection

    # -- one image --------------------------------------------------------------------------
    def image(self, name: str) -> ImageInfo:
        with database_errors():
            return ImageInfo.of(self._record(name))

    def original(self, name: str) -> ImageFile:
        with database_errors():
            record = self._record(name)
        return ImageFile(self._original_path(record), record.mime, record.sha256, record.sha256, record.name)

    def thumbnail(self, name: str) -> ImageFile:
        """The JPEG thumbnail, made at ingest; for images stored before that, on first request."""
        with database_errors():
            record = self._record(name)
            original = self._original_path(record)
            # Decoded at (about) the thumbnail's size, never the original's: a JPEG at 1/8 scale.
            make = lambda: thumbnail_jpeg(decode_image(original.read_bytes(), max_side=THUMBNAIL_SIDE).rgb)  # noqa: E731
            path = self._media.thumbnail(record.sha256, make)
        stem = record.name.rsplit(".", 1)[0]
        return ImageFile(path, "image/jpeg", record.sha256, f"{record.sha256}-thumb", f"{stem}-thumb.jpg")

    def detections(self, name: str) -> ImageDetections:
        """Objects the active detector found in the image, highest score first."""
        with database_errors():
            record = self._record(name)
            detector = self._collection.current().detector
            found = objects_from_records(self._repository.detections_of(record.id, detector))
        return ImageDetections(ImageInfo.of(record), detector, found)

    def _record(self, name: str) -> ImageRecord:
        # Checked before any query: a NUL byte is a bad name, not a database outage.
        record = self._repository.get_by_name(name) if is_plausible_name(name) else None
        if record is None:
            raise NotFound(f"no image named {name!r}")
        return record

    def _original_path(self, record: ImageRecord):
        path = self._media.original_path(record.sha256, record.format)
        if not path.is_file():
            raise NotFound(f"the file of image {record.name!r} is missing from the media store")
        return path

    # -- collections ------------------------------------------------------------------------
    def random(self, n: int = 1) -> list[ImageInfo]:
        if not 1 <= n <= MAX_PER_PAGE:
            raise InvalidRequest(f"n must be between 1 and {MAX_PER_PAGE}, got {n}")
        with database_errors():
            return [ImageInfo.of(r) for r in self._repository.get_many(self._repository.random_ids(n))]

    def count(self) -> int:
        """Images in the collection (without loading the index)."""
        with database_errors():
            return self._repository.count()

    def status(self) -> CollectionStatus:
        with database_errors():
            snapshot = self._collection.current()
            return CollectionStatus(
                detector=snapshot.detector,
                images=self._repository.count(),
                indexed=len(snapshot.index),
                position=snapshot.position,
                behind=self._collection.behind(),
            )

    def stored_vectors(self) -> tuple[list[str], np.ndarray]:
        """Names and raw vectors of the active detector, by image id (for evaluation)."""
        with database_errors():
            detector = self._collection.current().detector
            ids, raw = self._repository.vectors(detector)
            names = {r.id: r.name for r in self._repository.get_many(ids.tolist())}
        return [names[int(i)] for i in ids], raw

    # -- similar ----------------------------------------------------------------------------
    def similar(self, name: str, page: int = 1, per_page: int = 30, ask: Ask = NO_ASK,
                collapse: bool = False) -> SimilarPage:
        """Page ``page`` of the stored images most similar to the stored image ``name``.

        ``ask`` filters (inside the index scan, so ``total`` and pages are exact) and moves the
        query; ``collapse`` folds near-identical results of the page into the best-ranked one.
        """
        check_page(page, per_page)
        ask.check()
        with database_errors():
            snapshot = self._collection.current()  # may load the index: before holding a connection
            with self._repository.page_reader() as reader:
                # Checked before any query: a NUL byte is a bad name, not a database outage.
                found = reader.image_by_name(name, snapshot.detector, DISPLAY_THRESHOLD) if is_plausible_name(name) else None
                if found is None:
                    raise NotFound(f"no image named {name!r}")
                record, vector, query_classes = found
                if vector is None:
                    raise Unavailable(
                        f"image {name!r} has no vector from detector {snapshot.detector!r} yet: "
                        f"run `recommender reindex --detector {snapshot.detector}`"
                    )
                page_ = self._page(reader, snapshot, ask.moved(vector), record, query_classes, page, per_page, ask)
        return _collapsed(page_) if collapse else page_

    def _page(self, reader: PageReader, snapshot: Snapshot, raw: np.ndarray, query: ImageRecord,
              query_classes: Sequence[int], page: int, per_page: int, ask: Ask) -> SimilarPage:
        u = snapshot.ranking.query_transform(raw)
        result = snapshot.index.query(
            u, page=page, per_page=per_page, exclude_id=query.id,
            require=ask.with_ids, forbid=ask.without_ids, max_distance=ask.max_distance,
        )
        # Points and classes come with the index's answer (the same facts the scan filtered on).
        refs = reader.refs_by_id(result.ids.tolist())
        explained = explain_points(u, result.points)
        wanted = set(query_classes)
        results = []
        for image_id, distance, class_ids, contributions in zip(
                result.ids.tolist(), result.distances.tolist(), label_classes(result.labels), explained):
            ref = refs.get(image_id)
            if ref is None:
                continue  # deleted between the index query and this lookup
            results.append(
                SimilarImage(
                    id=image_id, name=ref.name, sha256=ref.sha256, distance=distance,
                    classes=[class_name(c) for c in class_ids],
                    shared_classes=[class_name(c) for c in class_ids if c in wanted],
                    contributions=contributions, why=why(contributions),
                    similarity=float(similarity_of(distance)), phash=ref.phash,
                )
            )
        return SimilarPage(
            query=query.name, query_sha256=query.sha256, query_classes=[class_name(c) for c in query_classes],
            detector=snapshot.detector, page=page, per_page=per_page, total=result.total, results=results, ask=ask,
        )

    # -- by object names --------------------------------------------------------------------
    def search(self, text: str, page: int = 1, per_page: int = 30, collapse: bool = False) -> SearchPage:
        """Photos showing the classes ``text`` names (``-name`` excludes), most confident first.

        Confidence and order are defined in ``classtable.py``; ``total`` counts every match.
        """
        check_page(page, per_page)
        required, excluded = parse_search(text)
        with database_errors():
            snapshot = self._collection.current()
            calibrate = lambda scores: _calibrate(scores, snapshot.ranking.presence)  # noqa: E731
            hits = snapshot.classes.search(required, excluded, page, per_page, calibrate, snapshot.index.ids)
            ids = [int(i) for i in hits.ids]
            summaries = self._repository.summaries(ids, snapshot.detector, DISPLAY_THRESHOLD)
        results = [
            FoundImage(
                id=i, name=summaries[i].name, sha256=summaries[i].sha256,
                classes=[class_name(c) for c in summaries[i].class_ids], confidence=float(confidence),
                scores={class_name(c): round(float(v), 4) for c, v in zip(required, row)}, phash=summaries[i].phash,
            )
            for i, confidence, row in zip(ids, hits.confidence, hits.scores)
            if i in summaries  # deleted since the snapshot was taken
        ]
        if collapse:
            results = _fold(results)
        return SearchPage(
            query=text, with_classes=[class_name(c) for c in required], without_classes=[class_name(c) for c in excluded],
            detector=snapshot.detector, page=page, per_page=per_page, total=hits.total, results=results, collapse=collapse,
        )

    def classes(self) -> list[ClassCount]:
        """Every class with how many indexed images show it, most frequent first."""
        with database_errors():
            counts = self._collection.current().classes.counts()
        found = [ClassCount(c, CLASS_NAMES[c], int(counts[c])) for c in range(1, len(CLASS_NAMES))]
        return sorted(found, key=lambda c: (-c.images, c.class_id))


def _calibrate(scores: np.ndarray, presence: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Calibrated presence probabilities of best box scores (columns are classes; no BG slot),
    with the calibration of the detector the snapshot serves."""
    padded = np.zeros((scores.shape[0], scores.shape[1] + 1), dtype=np.float64)
    padded[:, 1:] = scores
    return presence(padded)[:, 1:]


def _fold(results: list) -> list:
    """Near-identical results of one page folded into the best-ranked one (see neardup.fold)."""
    groups = fold([r.phash for r in results])
    return [replace(results[g[0]], near_duplicates=[results[i] for i in g[1:]]) for g in groups]


def _collapsed(page: SimilarPage) -> SimilarPage:
    return replace(page, results=_fold(page.results), collapse=True)


def check_page(page: object, per_page: object) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or not 1 <= page <= MAX_PAGE:
        raise InvalidRequest(f"page must be a whole number from 1 to {MAX_PAGE}, got {page!r}")
    if isinstance(per_page, bool) or not isinstance(per_page, int) or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequest(f"per_page must be a whole number from 1 to {MAX_PER_PAGE}, got {per_page!r}")
