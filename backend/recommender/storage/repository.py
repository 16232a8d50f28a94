"""Reads and writes of images, detections, vectors, collection state and the change feed.

Every write method is one transaction, and every write an index must know about appends to the
change feed in that same transaction; so the feed and the tables can never disagree. Read
methods open their own short connection.
"""

from __future__ import annotations

import contextlib
import random as _random
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import Connection, Engine, Row, delete, exists, func, insert, select, update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError

from ..classes import NUM_CLASSES
from ..detection.base import Detections
from . import bulk, feed, pages, records
from .database import breaker_of
from .pages import IN_CHUNK as _IN_CHUNK
from .pages import record_of as _record
from .records import DetectionRecord, ImageRecord, ImageSummary, NewImage
from .schema import detections as detections_t
from .schema import images as images_t
from .schema import state as state_t
from .schema import vectors as vectors_t

# Rows per round trip of a whole-table read: each stays well inside the time limit of a call.
_SCAN_PAGE = 20_000
ACTIVE_DETECTOR = "active_detector"
COLLECTION_ID = "collection_id"


class Repository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._breaker = breaker_of(engine)
        # PostgreSQL reads need no transaction: at READ COMMITTED each statement sees the newest
        # commits either way, and autocommit saves a BEGIN and a ROLLBACK round trip per read.
        self._read_options = {"isolation_level": "AUTOCOMMIT"} if engine.dialect.name == "postgresql" else {}

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._admitted(), self.engine.connect().execution_options(**self._read_options) as conn:
            yield conn

    @contextlib.contextmanager
    def _writing(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        with self._admitted(), self.engine.begin() as conn:
            yield conn

    def _admitted(self) -> contextlib.AbstractContextManager[None]:
        # While the database does not answer, one call at a time finds out; the rest fail at once.
        if self._breaker is None:
            return contextlib.nullcontext()
        return self._breaker.admit((OperationalError, InterfaceError))

    # -- writes (one transaction each) ------------------------------------------------------
    def store_image(self, image: NewImage, detector: str, found: Detections, vector: np.ndarray) -> ImageRecord:
        """Add an image with its detections and vector, if ``detector`` is still the active one.

        Raises ContentExists, NameTaken or DetectorChanged, having written nothing.
        """
        try:
            with self._writing() as conn:
                created = datetime.now(timezone.utc)
                inserted = conn.execute(insert(images_t).values(**image.__dict__, created_at=created))
                record = ImageRecord(id=int(inserted.inserted_primary_key[0]), created_at=created, **image.__dict__)
                _insert_detections(conn, record.id, detector, found)
                conn.execute(insert(vectors_t).values(image_id=record.id, detector=detector, values=_checked(vector)))
                feed.lock(conn)
                # Checked under the feed lock, which an activation holds too: either it committed
                # before (and we see it) or it will see this image as missing a vector.
                active = _state(conn, ACTIVE_DETECTOR)
                if active != detector:
                    raise records.DetectorChanged(active)
                feed.append(conn, feed.VECTOR, record.id, detector)
                return record
        except IntegrityError:
            existing = self.get_by_sha256(image.sha256)
            if existing is not None:
                raise records.ContentExists(existing) from None
            if self.name_exists(image.name):
                raise records.NameTaken(image.name) from None
            raise

    def store_vector(self, image_id: int, detector: str, found: Detections, vector: np.ndarray) -> bool:
        """Add or replace one detector's detections and vector of an image; False if it is gone."""
        image_id = int(image_id)
        values = _checked(vector)
        with self._writing() as conn:
            if conn.execute(select(images_t.c.id).where(images_t.c.id == image_id)).first() is None:
                return False
            d, v = detections_t.c, vectors_t.c
            conn.execute(delete(detections_t).where(d.image_id == image_id, d.detector == detector))
            conn.execute(delete(vectors_t).where(v.image_id == image_id, v.detector == detector))
            _insert_detections(conn, image_id, detector, found)
            conn.execute(insert(vectors_t).values(image_id=image_id, detector=detector, values=values))
            feed.lock(conn)
            feed.append(conn, feed.VECTOR, image_id, detector)
        return True

    def delete_image(self, image_id: int) -> bool:
        """Delete an image; its detections and vectors go with it (ON DELETE CASCADE)."""
        with self._writing() as conn:
            if conn.execute(delete(images_t).where(images_t.c.id == int(image_id))).rowcount == 0:
                return False
            feed.lock(conn)
            feed.append(conn, feed.DELETE, int(image_id))
        return True

    def activate(self, detector: str) -> None:
        """Make ``detector`` the one the index serves; VectorsMissing unless every image has its vector."""
        with self._writing() as conn:
            _set_state(conn, ACTIVE_DETECTOR, detector)  # first write: SQLite's write lock from here
            feed.lock(conn)
            missing = conn.execute(select(func.count()).select_from(images_t).where(~_has_vector(detector))).scalar_one()
            if missing:
                raise records.VectorsMissing(detector, int(missing))
            feed.append(conn, feed.ACTIVATE, None, detector)

    def ensure_active(self, default: str) -> str:
        """The active detector, recording ``default`` first for a collection that has none yet."""
        active = self.active_detector()
        if active is not None:
            return active
        try:
            with self._writing() as conn:
                conn.execute(insert(state_t).values(key=ACTIVE_DETECTOR, value=default))
                feed.lock(conn)
                feed.append(conn, feed.ACTIVATE, None, default)
        except IntegrityError:
            pass  # another process recorded one first: that one counts
        active = self.active_detector()
        assert active is not None
        return active

    def collection_id(self) -> str:
        """A random id of this collection, made on first use: tells its index snapshots from others'."""
        with self._reading() as conn:
            found = _state(conn, COLLECTION_ID)
        if found is not None:
            return found
        try:
            with self._writing() as conn:
                conn.execute(insert(state_t).values(key=COLLECTION_ID, value=uuid.uuid4().hex))
        except IntegrityError:
            pass  # another process made it first
        with self._reading() as conn:
            made = _state(conn, COLLECTION_ID)
        assert made is not None
        return made

    # -- state and feed ---------------------------------------------------------------------
    def active_detector(self) -> str | None:
        with self._reading() as conn:
            return _state(conn, ACTIVE_DETECTOR)

    def feed_head(self) -> int:
        with self._reading() as conn:
            return feed.head(conn)

    def prune_feed(self, before: datetime) -> int:
        with self._writing() as conn:
            return feed.prune(conn, before)

    def feed_since(self, position: int, limit: int) -> tuple[list[feed.Change], int]:
        """Changes after ``position`` (at most ``limit``) and the oldest sequence number kept."""
        with self._reading() as conn:
            return feed.since(conn, position, limit), feed.oldest(conn)

    # -- single images ----------------------------------------------------------------------
    def get_by_name(self, name: str) -> ImageRecord | None:
        return self._one(images_t.c.name == name)

    def get_by_sha256(self, sha256: str) -> ImageRecord | None:
        return self._one(images_t.c.sha256 == sha256)

    def get_by_id(self, image_id: int) -> ImageRecord | None:
        return self._one(images_t.c.id == int(image_id))

    def get_many(self, ids: Sequence[int]) -> list[ImageRecord]:
        """The images that exist among ``ids``, in the order given."""
        found: dict[int, ImageRecord] = {}
        with self._reading() as conn:
            for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
                found.update((int(r.id), _record(r)) for r in conn.execute(select(images_t).where(images_t.c.id.in_(chunk))))
        return [found[int(i)] for i in ids if int(i) in found]

    def name_exists(self, name: str) -> bool:
        with self._reading() as conn:
            return bool(conn.execute(select(exists().where(images_t.c.name == name))).scalar_one())

    def _one(self, condition: object) -> ImageRecord | None:
        with self._reading() as conn:
            row = conn.execute(select(images_t).where(condition)).first()  # type: ignore[arg-type]
        return _record(row) if row is not None else None

    def detections_of(self, image_id: int, detector: str) -> list[DetectionRecord]:
        """Detections of one image by one detector, highest score first."""
        d = detections_t.c
        query = (
            select(d.class_id, d.score, d.x1, d.y1, d.x2, d.y2)
            .where(d.image_id == int(image_id), d.detector == detector)
            .order_by(d.score.desc(), d.id)
        )
        with self._reading() as conn:
            return [
                DetectionRecord(int(r.class_id), float(r.score), (float(r.x1), float(r.y1), float(r.x2), float(r.y2)))
                for r in conn.execute(query)
            ]

    def vector(self, image_id: int, detector: str) -> np.ndarray | None:
        v = vectors_t.c
        with self._reading() as conn:
            return conn.execute(select(v["values"]).where(v.image_id == int(image_id), v.detector == detector)).scalar_one_or_none()

    # -- collections ------------------------------------------------------------------------
    def count(self) -> int:
        with self._reading() as conn:
            return int(conn.execute(select(func.count()).select_from(images_t)).scalar_one())

    def vectors(self, detector: str) -> tuple[np.ndarray, np.ndarray]:
        """All stored vectors of one detector: (image ids int64[N], float32[N, 81]), by id."""
        v = vectors_t.c
        rows: list[Row] = []
        with self._reading() as conn:
            # In pages by id, so each round trip stays short however large the collection.
            while True:
                after = rows[-1][0] if rows else -1
                query = select(v.image_id, v["values"]).where(v.detector == detector, v.image_id > after)
                page = conn.execute(query.order_by(v.image_id).limit(_SCAN_PAGE)).all()
                rows.extend(page)
                if len(page) < _SCAN_PAGE:
                    break
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        matrix = np.empty((len(rows), NUM_CLASSES), dtype=np.float32)
        for i, row in enumerate(rows):
            matrix[i] = row[1]
        return ids, matrix

    def all_vectors(self, detector: str) -> tuple[np.ndarray, np.ndarray]:
        """``vectors`` read in bulk (a binary stream, no Python object per row): for loading an index."""
        return bulk.read_vectors(self.engine, detector)

    def shown_classes(self, detector: str, min_score: float, ids: Sequence[int] | None = None):
        """(image ids, class ids, best box scores) of every class shown at ``min_score``: all images, or ``ids``."""
        return bulk.read_class_scores(self.engine, detector, min_score, None if ids is None else [int(i) for i in ids])

    def missing_hashes(self) -> list[ImageRecord]:
        """Images without a perceptual hash yet (stored before migration 0003), oldest first."""
        with self._reading() as conn:
            return [_record(r) for r in conn.execute(select(images_t).where(images_t.c.phash.is_(None)).order_by(images_t.c.id))]

    def set_hash(self, image_id: int, phash: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(images_t).where(images_t.c.id == int(image_id)).values(phash=int(phash)))

    def vectors_of(self, ids: Sequence[int], detector: str) -> dict[int, np.ndarray]:
        """Stored vectors of some images for one detector: image id -> float32[81]."""
        v = vectors_t.c
        found: dict[int, np.ndarray] = {}
        with self._reading() as conn:
            for chunk in _chunks(list(dict.fromkeys(int(i) for i in ids))):
                query = select(v.image_id, v["values"]).where(v.detector == detector, v.image_id.in_(chunk))
                for image_id, values in conn.execute(query):
                    found[int(image_id)] = np.asarray(values, dtype=np.float32)
        return found

    def missing_vectors(self, detector: str) -> list[ImageRecord]:
        """Images that have no vector for ``detector`` yet, oldest first."""
        found: list[ImageRecord] = []
        with self._reading() as conn:
            while True:
                after = found[-1].id if found else -1
                query = select(images_t).where(~_has_vector(detector), images_t.c.id > after).order_by(images_t.c.id)
                page = [_record(r) for r in conn.execute(query.limit(_SCAN_PAGE))]
                found.extend(page)
                if len(page) < _SCAN_PAGE:
                    return found

    def detectors(self) -> dict[str, int]:
        """Detector name -> number of images with a vector from it."""
        v = vectors_t.c
        with self._reading() as conn:
            return {name: int(n) for name, n in conn.execute(select(v.detector, func.count()).group_by(v.detector))}

    def summaries(self, ids: Sequence[int], detector: str, min_score: float) -> dict[int, ImageSummary]:
        """Name, hash and detected classes (score >= ``min_score``) of each image, one query per chunk."""
        with self._reading() as conn:
            return pages.summaries_by_id(conn, ids, detector, min_score)

    @contextlib.contextmanager
    def page_reader(self) -> Iterator[pages.PageReader]:
        """The reads of one similar-photos request on one connection (a checkout costs round trips)."""
        with self._reading() as conn:
            yield pages.PageReader(conn)

    def random_ids(self, n: int, rng: _random.Random | None = None) -> list[int]:
        """Up to ``n`` distinct image ids, uniformly at random, without sorting the whole table."""
        rng = rng or _random.SystemRandom()
        ids = images_t.c.id
        with self._reading() as conn:
            low, high, total = conn.execute(select(func.min(ids), func.max(ids), func.count()).select_from(images_t)).one()
            if not total or n <= 0:
                return []
            if total <= 4 * n:
                every = list(conn.execute(select(ids)).scalars())
                return rng.sample(every, min(n, len(every)))
            # Rejection sampling over the id range is uniform over the ids that exist.
            chosen: list[int] = []
            seen: set[int] = set()
            for _attempt in range(20):
                wanted = n - len(chosen)
                candidates = {rng.randint(low, high) for _ in range(wanted * 2)} - seen
                seen |= candidates
                found = list(conn.execute(select(ids).where(ids.in_(sorted(candidates)))).scalars())
                rng.shuffle(found)
                chosen.extend(found[:wanted])
                if len(chosen) >= n:
                    break
            if len(chosen) < n:  # ids very sparse after many deletions: let the database pick
                rest = select(ids).where(ids.not_in(chosen)).order_by(func.random()).limit(n - len(chosen))
                chosen.extend(conn.execute(rest).scalars())
            return chosen

    def existing_sha256(self, hashes: Iterable[str]) -> set[str]:
        """The subset of ``hashes`` that belongs to an image row."""
        found: set[str] = set()
        with self._reading() as conn:
            for chunk in _chunks(sorted(set(hashes))):
                found.update(conn.execute(select(images_t.c.sha256).where(images_t.c.sha256.in_(chunk))).scalars())
        return found


def _has_vector(detector: str):
    return exists().where(vectors_t.c.image_id == images_t.c.id, vectors_t.c.detector == detector)


def _state(conn: Connection, key: str) -> str | None:
    return conn.execute(select(state_t.c.value).where(state_t.c.key == key)).scalar_one_or_none()


def _set_state(conn: Connection, key: str, value: str) -> None:
    conn.execute(delete(state_t).where(state_t.c.key == key))
    conn.execute(insert(state_t).values(key=key, value=value))


def _checked(vector: np.ndarray) -> np.ndarray:
    values = np.asarray(vector, dtype=np.float32).ravel()
    if values.shape != (NUM_CLASSES,) or not np.all(np.isfinite(values)):
        raise ValueError(f"a vector must be {NUM_CLASSES} finite floats, got shape {values.shape}")
    return values


def _insert_detections(conn: Connection, image_id: int, detector: str, found: Detections) -> None:
    if len(found) == 0:
        return
    boxes = np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4)
    rows = [
        {"image_id": image_id, "detector": detector, "class_id": int(c), "score": float(s),
         "x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])}
        for c, s, b in zip(found.class_ids, found.scores, boxes, strict=True)
    ]
    conn.execute(insert(detections_t), rows)


def _chunks(items: list, size: int = _IN_CHUNK) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
