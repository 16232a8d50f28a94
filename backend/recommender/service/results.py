"""What the use cases return: the service's own values, never storage records."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from ..classes import class_name
from ..detection import Detections
from ..explain import ClassContribution
from ..objects import NO_ASK, Ask
from ..storage import DetectionRecord, ImageRecord

# Detections at or above this score are the classes shown for an image (chips, boxes) and the
# classes a result shares with its query. It equals YOLOv5s's box threshold (chosen on coco_dev
# for precision 0.87 / recall 0.65, see the README), so listed classes are the boxes one sees.
DISPLAY_THRESHOLD = 0.3


@dataclass(frozen=True)
class ImageInfo:
    name: str
    sha256: str
    width: int
    height: int
    mime: str
    size_bytes: int
    created_at: datetime

    @classmethod
    def of(cls, record: ImageRecord) -> ImageInfo:
        return cls(record.name, record.sha256, record.width, record.height, record.mime, record.size_bytes, record.created_at)


@dataclass(frozen=True)
class DetectedObject:
    class_id: int
    class_name: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels


def objects_from_records(records: list[DetectionRecord]) -> list[DetectedObject]:
    return [DetectedObject(r.class_id, class_name(r.class_id), r.score, r.box) for r in records]


def objects_from_detections(found: Detections) -> list[DetectedObject]:
    """A detector's output as objects, highest score first (the order the database returns)."""
    boxes = np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(found.scores), kind="stable")
    return [
        DetectedObject(
            int(found.class_ids[i]), class_name(int(found.class_ids[i])), float(found.scores[i]),
            (float(boxes[i, 0]), float(boxes[i, 1]), float(boxes[i, 2]), float(boxes[i, 3])),
        )
        for i in order
    ]


@dataclass(frozen=True)
class IngestResult:
    image: ImageInfo
    duplicate: bool  # True: these bytes were already stored; ``image`` is the existing one
    detector: str
    detections: list[DetectedObject]


@dataclass(frozen=True)
class ImageDetections:
    image: ImageInfo
    detector: str
    detections: list[DetectedObject]


@dataclass(frozen=True)
class ImageFile:
    """A file to send: the original or its thumbnail."""

    path: Path
    mime: str
    sha256: str  # of the original, which the thumbnail is made from
    etag: str
    download_name: str


@dataclass(frozen=True)
class SimilarImage:
    id: int
    name: str
    sha256: str
    distance: float
    classes: list[str]  # detected in this image (score >= DISPLAY_THRESHOLD), COCO order
    shared_classes: list[str]  # the subset also detected in the query: why it matched
    contributions: list[ClassContribution]  # classes that made up most of the similarity score
    why: str  # one line summarising ``contributions``
    similarity: float = 0.0  # 1 - distance²/2: the Ochiai similarity of the default ranking
    near_duplicates: list[SimilarImage] = field(default_factory=list)  # folded into this one (collapse)
    phash: int | None = None  # perceptual hash (neardup.py), None until computed


@dataclass(frozen=True)
class SimilarPage:
    query: str | None  # the query image's name
    query_sha256: str | None
    query_classes: list[str]
    detector: str
    page: int
    per_page: int
    total: int  # images the query ranks (all indexed ones except itself that pass the constraints)
    results: list[SimilarImage]  # with collapse: group leaders only, the others in their near_duplicates
    ask: Ask = NO_ASK
    collapse: bool = False


@dataclass(frozen=True)
class FoundImage:
    """A match of a search by object names."""

    id: int
    name: str
    sha256: str
    classes: list[str]
    confidence: float  # probability that every asked class is present (see classtable.py)
    scores: dict[str, float]  # best box score of each asked class
    near_duplicates: list[FoundImage] = field(default_factory=list)
    phash: int | None = None


@dataclass(frozen=True)
class SearchPage:
    query: str
    with_classes: list[str]
    without_classes: list[str]
    detector: str
    page: int
    per_page: int
    total: int  # every match, whatever the page
    results: list[FoundImage]
    collapse: bool = False


@dataclass(frozen=True)
class ClassCount:
    class_id: int
    name: str
    images: int  # images that show the class (the chips' rule)


@dataclass(frozen=True)
class CollectionStatus:
    detector: str
    images: int
    indexed: int
    position: int  # the change-feed position the index has applied
    behind: int  # changes committed but not applied yet


@dataclass(frozen=True)
class IngestEvent:
    """One step of a batch ingest or reindex, for progress display."""

    outcome: str  # "started", "ingested", "duplicate" or "failed"
    total: int
    path: Path | None = None
    name: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class Staged:
    """A photo file made ready for a queue worker (``Ingest.stage``)."""

    path: Path
    sha256: str
    format: str
    name_hint: str
    existing: ImageInfo | None  # already in the collection: nothing to enqueue


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
    detector: str
    missing: int = 0
    computed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (image name, reason)
    activated: bool = False
