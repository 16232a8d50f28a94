"""The use cases, split by job: ``ingest`` (add photos), ``queries`` (read), ``admin`` (delete, reindex).

``bootstrap.build`` assembles a ``Recommender``; web views, CLI commands and tasks call its parts
and get the values of ``results`` back (never storage records), or a ``ServiceError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..storage import Repository
from .admin import Admin
from .collection import LiveCollection
from .detectors import Detectors
from .errors import (
    Busy,
    DetectorUnavailable,
    InvalidRequest,
    NotFound,
    PhotoFailed,
    ServiceError,
    StorageFull,
    Unavailable,
    first_line,
)
from .ingest import Ingest, reason
from .pipeline import find_image_files
from .queries import Queries
from .results import (
    DISPLAY_THRESHOLD,
    ClassCount,
    CollectionStatus,
    DetectedObject,
    FoundImage,
    ImageDetections,
    ImageFile,
    ImageInfo,
    IngestEvent,
    IngestResult,
    IngestSummary,
    ReindexResult,
    SearchPage,
    SimilarImage,
    SimilarPage,
    Staged,
)


@dataclass
class Recommender:
    ingest: Ingest
    queries: Queries
    admin: Admin
    detectors: Detectors
    collection: LiveCollection
    _repository: Repository

    def close(self) -> None:
        self.collection.close()
        self._repository.close()

    def __enter__(self) -> Recommender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = [
    "DISPLAY_THRESHOLD",
    "Admin",
    "Busy",
    "ClassCount",
    "CollectionStatus",
    "DetectedObject",
    "DetectorUnavailable",
    "Detectors",
    "FoundImage",
    "ImageDetections",
    "ImageFile",
    "ImageInfo",
    "Ingest",
    "IngestEvent",
    "IngestResult",
    "IngestSummary",
    "InvalidRequest",
    "LiveCollection",
    "NotFound",
    "PhotoFailed",
    "Queries",
    "Recommender",
    "ReindexResult",
    "SearchPage",
    "ServiceError",
    "SimilarImage",
    "SimilarPage",
    "Staged",
    "StorageFull",
    "Unavailable",
    "find_image_files",
    "first_line",
    "reason",
]
