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
    ServiceError,
    StorageFull,
    Unavailable,
    first_line,
)
from .ingest import Ingest
from .pipeline import find_image_files
from .queries import Queries
from .results import (
    DISPLAY_THRESHOLD,
    CollectionStatus,
    DetectedObject,
    ImageDetections,
    ImageFile,
    ImageInfo,
    IngestEvent,
    IngestResult,
    IngestSummary,
    ReindexResult,
    SimilarImage,
    SimilarPage,
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
    "CollectionStatus",
    "DetectedObject",
    "DetectorUnavailable",
    "Detectors",
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
    "Queries",
    "Recommender",
    "ReindexResult",
    "ServiceError",
    "SimilarImage",
    "SimilarPage",
    "StorageFull",
    "Unavailable",
    "find_image_files",
    "first_line",
]
