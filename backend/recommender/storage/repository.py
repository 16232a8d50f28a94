"""Reads and writes of images, detections, vectors and state. Callers own the transactions.

Write methods take the ``Connection`` of a transaction opened with ``transaction()``, so the
service can group an image, its detections and its vector into one commit. Read methods open
their own short connection unless given one.
"""

from __future__ import annotations

import contextlib
import random as _random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import Connection, Engine, Row, and_, delete, exists, func, insert, select

from ..classes import NUM_CLASSES
from ..detection.base import Detections
from .schema import detections as detections_t
from .schema import images as images_t
from .schema import state as state_t
from .schema import vectors as vectors_t

# SQLite's default limit on bound parameters is 32766 (older builds 999); stay well below.
_IN_CHUNK = 900


@dataclass(frozen=True)
class ImageRecord:
    id: int
    name: str
    sha256: str
    width: int
    height: int
    format: str
    mime: str
    size_bytes: int
    created_at: datetime


@dataclass(frozen=True)
class NewImage:
    name: str
    sha256: str
    width: int
    height: int
    format: str
    mime: str
    size_bytes: int


@dataclass(frozen=True)
class DetectionRecord:
    class_id: int
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in original pixels


@dataclass(frozen=True)
class ImageSummary:
    """What a result list needs about an image: its name and the classes seen in it."""

    id: int
    name: str
    class_ids: tuple[int, ...]  # sorted, distinct, above the caller's score threshold


class Repository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- transactions -----------------------------------------------------------------------
    def transaction(self) -> contextlib.AbstractContextManager[Connection]:
        """A connection in a transaction: committed on normal exit, rolled back on any exception."""
        return self.engine.begin()

    @contextlib.contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as own:
            yield own

    # -- writes -----------------------------------------------------------------------------
    def add_image(self, conn: Connection, image: NewImage) -> ImageRecord:
        created = datetime.now(timezone.utc)
        values = {**image.__dict__, "created_at": created}
        image_id = conn.execute(insert(images_t).values(**values)).inserted_primary_key[0]
        return ImageRecord(id=int(image_id), created_at=created, **image.__dict__)

    def add_detections(self, conn: Connection, image_id: int, detector: str, found: Detections) -> int:
        image_id = int(image_id)
        if len(found) == 0:
            return 0
        boxes = np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4)
        rows = [
            {
                "image_id": image_id,
                "detector": detector,
                "class_id": int(class_id),
                "score": float(score),
                "x1": float(box[0]),
                "y1": float(box[1]),
                "x2": float(box[2]),
                "y2": float(box[3]),
            }
            for class_id, score, box in zip(found.class_ids, found.scores, boxes, strict=True)
        ]
        conn.execute(insert(detections_t), rows)
        return len(rows)

    def replace_detections(self, conn: Connection, image_id: int, detector: str, found: Detections) -> int:
        image_id = int(image_id)
        conn.execute(
            delete(detections_t).where(detections_t.c.image_id == image_id, detections_t.c.detector == detector)
        )
        return self.add_detections(conn, image_id, detector, found)

    def put_vector(self, conn: Connection, image_id: int, detector: str, vector: np.ndarray, *, new: bool = False) -> None:
        """Store (or replace) the raw class-presence vector of one image for one detector.

        ``new=True`` skips looking for a vector to replace (an image added in this transaction).
        """
        image_id = int(image_id)
        values = np.asarray(vector, dtype=np.float32).ravel()
        if values.shape != (NUM_CLASSES,) or not np.all(np.isfinite(values)):
            raise ValueError(f"a vector must be {NUM_CLASSES} finite floats, got shape {values.shape}")
        if not new:
            conn.execute(delete(vectors_t).where(vectors_t.c.image_id == image_id, vectors_t.c.detector == detector))
        conn.execute(insert(vectors_t).values(image_id=image_id, detector=detector, values=values))

    def delete_image(self, conn: Connection, image_id: int) -> bool:
        """Delete an image; its detections and vectors go with it (ON DELETE CASCADE)."""
        image_id = int(image_id)
        return conn.execute(delete(images_t).where(images_t.c.id == image_id)).rowcount > 0

    def set_state(self, conn: Connection, key: str, value: str) -> None:
        conn.execute(delete(state_t).where(state_t.c.key == key))
        conn.execute(insert(state_t).values(key=key, value=value))

    # -- single images ----------------------------------------------------------------------
    def get_by_name(self, name: str, conn: Connection | None = None) -> ImageRecord | None:
        return self._one(images_t.c.name == name, conn)

    def get_by_sha256(self, sha256: str, conn: Connection | None = None) -> ImageRecord | None:
        return self._one(images_t.c.sha256 == sha256, conn)

    def get_by_id(self, image_id: int, conn: Connection | None = None) -> ImageRecord | None:
        return self._one(images_t.c.id == int(image_id), conn)

    def name_exists(self, name: str, conn: Connection | None = None) -> bool:
        with self._reading(conn) as c:
            return c.execute(select(exists().where(images_t.c.name == name))).scalar_one()

    def _one(self, condition: object, conn: Connection | None) -> ImageRecord | None:
        with self._reading(conn) as c:
            row = c.execute(select(images_t).where(condition)).first()  # type: ignore[arg-type]
        return _record(row) if row is not None else None

    def detections_of(self, image_id: int, detector: str, conn: Connection | None = None) -> list[DetectionRecord]:
        """Detections of one image by one detector, highest score first."""
        d = detections_t.c
        image_id = int(image_id)  # numpy integers do not bind on every driver
        query = (
            select(d.class_id, d.score, d.x1, d.y1, d.x2, d.y2)
            .where(d.image_id == image_id, d.detector == detector)
            .order_by(d.score.desc(), d.id)
        )
        with self._reading(conn) as c:
            return [
                DetectionRecord(int(r.class_id), float(r.score), (float(r.x1), float(r.y1), float(r.x2), float(r.y2)))
                for r in c.execute(query)
            ]

    def vector(self, image_id: int, detector: str, conn: Connection | None = None) -> np.ndarray | None:
        image_id = int(image_id)  # numpy integers do not bind on every driver
        query = select(vectors_t.c["values"]).where(vectors_t.c.image_id == image_id, vectors_t.c.detector == detector)
        with self._reading(conn) as c:
            return c.execute(query).scalar_one_or_none()

    # -- collections ------------------------------------------------------------------------
    def count(self, conn: Connection | None = None) -> int:
        with self._reading(conn) as c:
            return int(c.execute(select(func.count()).select_from(images_t)).scalar_one())

    def vectors(self, detector: str, conn: Connection | None = None) -> tuple[np.ndarray, np.ndarray]:
        """All stored vectors of one detector: (image ids int64[N], float32[N, 81]), by id."""
        query = (
            select(vectors_t.c.image_id, vectors_t.c["values"])
            .where(vectors_t.c.detector == detector)
            .order_by(vectors_t.c.image_id)
        )
        with self._reading(conn) as c:
            rows = c.execute(query).all()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.empty((len(rows), NUM_CLASSES), dtype=np.float32)
        for i, row in enumerate(rows):
            matrix[i] = row[1]
        return ids, matrix

    def vectors_of(self, ids: Sequence[int], detector: str, conn: Connection | None = None) -> dict[int, np.ndarray]:
        """Stored vectors of some images for one detector: image id -> float32[81]."""
        found: dict[int, np.ndarray] = {}
        with self._reading(conn) as c:
            for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
                query = select(vectors_t.c.image_id, vectors_t.c["values"]).where(
                    vectors_t.c.detector == detector, vectors_t.c.image_id.in_(chunk)
                )
                for image_id, values in c.execute(query):
                    found[int(image_id)] = np.asarray(values, dtype=np.float32)
        return found

    def missing_vectors(self, detector: str, conn: Connection | None = None) -> list[ImageRecord]:
        """Images that have no vector for ``detector`` yet, oldest first."""
        has_vector = exists().where(vectors_t.c.image_id == images_t.c.id, vectors_t.c.detector == detector)
        query = select(images_t).where(~has_vector).order_by(images_t.c.id)
        with self._reading(conn) as c:
            return [_record(r) for r in c.execute(query)]

    def detectors(self, conn: Connection | None = None) -> dict[str, int]:
        """Detector name -> number of images with a vector from it."""
        query = select(vectors_t.c.detector, func.count()).group_by(vectors_t.c.detector)
        with self._reading(conn) as c:
            return {name: int(n) for name, n in c.execute(query)}

    def summaries(
        self, ids: Sequence[int], detector: str, min_score: float, conn: Connection | None = None
    ) -> dict[int, ImageSummary]:
        """Name and detected classes (score >= ``min_score``) of each image, in one query per chunk."""
        result: dict[int, ImageSummary] = {}
        join = images_t.outerjoin(
            detections_t,
            and_(
                detections_t.c.image_id == images_t.c.id,
                detections_t.c.detector == detector,
                detections_t.c.score >= min_score,
            ),
        )
        with self._reading(conn) as c:
            for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
                query = (
                    select(images_t.c.id, images_t.c.name, detections_t.c.class_id)
                    .select_from(join)
                    .where(images_t.c.id.in_(chunk))
                )
                names: dict[int, str] = {}
                classes: dict[int, set[int]] = {}
                for image_id, name, class_id in c.execute(query):
                    names[image_id] = name
                    bucket = classes.setdefault(image_id, set())
                    if class_id is not None:
                        bucket.add(int(class_id))
                for image_id, name in names.items():
                    result[image_id] = ImageSummary(image_id, name, tuple(sorted(classes[image_id])))
        return result

    def random_ids(self, n: int, conn: Connection | None = None, rng: _random.Random | None = None) -> list[int]:
        """Up to ``n`` distinct image ids, uniformly at random, without sorting the whole table."""
        rng = rng or _random.SystemRandom()
        with self._reading(conn) as c:
            low, high, total = c.execute(
                select(func.min(images_t.c.id), func.max(images_t.c.id), func.count()).select_from(images_t)
            ).one()
            if not total or n <= 0:
                return []
            if total <= 4 * n:
                all_ids = list(c.execute(select(images_t.c.id)).scalars())
                return rng.sample(all_ids, min(n, len(all_ids)))
            # Rejection sampling over the id range is uniform over the ids that exist.
            chosen: list[int] = []
            seen: set[int] = set()
            for _attempt in range(20):
                wanted = n - len(chosen)
                candidates = {rng.randint(low, high) for _ in range(wanted * 2)} - seen
                seen |= candidates
                found = c.execute(select(images_t.c.id).where(images_t.c.id.in_(sorted(candidates)))).scalars()
                found_list = list(found)
                rng.shuffle(found_list)
                chosen.extend(found_list[:wanted])
                if len(chosen) >= n:
                    break
            if len(chosen) < n:  # ids very sparse after many deletions: let the database pick
                rest = select(images_t.c.id).where(images_t.c.id.not_in(chosen)).order_by(func.random())
                chosen.extend(c.execute(rest.limit(n - len(chosen))).scalars())
            return chosen

    def existing_sha256(self, hashes: Iterable[str], conn: Connection | None = None) -> set[str]:
        """The subset of ``hashes`` that belongs to an image row."""
        found: set[str] = set()
        with self._reading(conn) as c:
            for chunk in _chunks(sorted(set(hashes))):
                found.update(c.execute(select(images_t.c.sha256).where(images_t.c.sha256.in_(chunk))).scalars())
        return found

    def get_state(self, key: str, conn: Connection | None = None) -> str | None:
        with self._reading(conn) as c:
            return c.execute(select(state_t.c.value).where(state_t.c.key == key)).scalar_one_or_none()


def _chunks(items: list, size: int = _IN_CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _record(row: Row) -> ImageRecord:
    created = row.created_at
    if created.tzinfo is None:  # SQLite keeps no offset; we always write UTC
        created = created.replace(tzinfo=timezone.utc)
    return ImageRecord(
        id=int(row.id),
        name=row.name,
        sha256=row.sha256,
        width=int(row.width),
        height=int(row.height),
        format=row.format,
        mime=row.mime,
        size_bytes=int(row.size_bytes),
        created_at=created,
    )
