"""What the repository reads and writes, as plain values, and the conflicts a write can meet."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class NewImage:
    name: str
    sha256: str
    width: int
    height: int
    format: str
    mime: str
    size_bytes: int
    phash: int | None = field(default=None, kw_only=True)  # perceptual hash; None until computed


@dataclass(frozen=True)
class ImageRecord(NewImage):
    """A stored image: what was added, plus its id and when."""

    id: int
    created_at: datetime


@dataclass(frozen=True)
class DetectionRecord:
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels


@dataclass(frozen=True)
class ImageSummary:
    """What a result list needs about an image: its name, content hash and the classes seen in it."""

    id: int
    name: str
    sha256: str
    class_ids: tuple[int, ...]  # sorted, distinct, above the caller's score threshold
    phash: int | None = None  # perceptual hash, None until computed


@dataclass(frozen=True)
class ImageRef:
    """What a page of similar photos reads about each result; the index holds the rest."""

    id: int
    name: str
    sha256: str
    phash: int | None = None


class WriteConflict(Exception):
    """A write that could not be made as asked; nothing was written."""


class ContentExists(WriteConflict):
    """An image with the same bytes is stored already."""

    def __init__(self, existing: ImageRecord) -> None:
        super().__init__(f"these bytes are stored already as {existing.name!r}")
        self.existing = existing


class NameTaken(WriteConflict):
    """Another image has this name."""


class DetectorChanged(WriteConflict):
    """The collection switched detector while the caller was detecting with the previous one."""

    def __init__(self, active: str | None) -> None:
        super().__init__(f"the collection now uses detector {active!r}")
        self.active = active


class VectorsMissing(WriteConflict):
    """A detector cannot be activated: some images have no vector from it yet."""

    def __init__(self, detector: str, missing: int) -> None:
        super().__init__(f"{missing} image(s) have no vector from {detector} yet")
        self.detector = detector
        self.missing = missing
