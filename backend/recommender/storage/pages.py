"""The reads of one similar-photos request: the asked image, then the page's images, one query each.

A request used to make five reads (the image by name, its vector, its classes, the page's
names and classes, the page's vectors), each on a connection of its own (on PostgreSQL a
checkout is a ping, BEGIN and ROLLBACK: three more round trips) and with a freshly built
``select()``: at 100k photos that cost more than the index scan. Here both reads share one
connection (``PageReader``), and each is one query prepared once at import (SQLAlchemy reuses
the compiled form). The asked image's row joins its vector and aggregates its shown classes in
SQL. The page's rows are only names and hashes: their points and classes come with the index's
answer, so the page reads no vector blob and no detection (at 1M photos on SQLite that read
took 2.1 of 13 ms).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timezone

import numpy as np
from sqlalchemy import BigInteger, Connection, Row, String, and_, bindparam, cast, func, select
from sqlalchemy.dialects import postgresql

from .records import ImageRecord, ImageRef, ImageSummary
from .schema import detections as detections_t
from .schema import images as images_t
from .schema import vectors as vectors_t

# SQLite's default limit on bound parameters is 32766 (older builds 999); stay well below.
IN_CHUNK = 900


def _shown_classes():
    """The classes an image shows (a box at ``min_score`` or more), as "c1,c2,...": one subquery."""
    d, i = detections_t.c, images_t.c
    return (
        select(func.aggregate_strings(cast(d.class_id, String), ","))
        .where(d.image_id == i.id, d.detector == bindparam("detector"), d.score >= bindparam("min_score"))
        .scalar_subquery()
        .label("shown")
    )


class _ByIds:
    """A select read for a list of image ids, both ways prepared at import.

    On PostgreSQL one array parameter (``id = ANY``): the statement text never changes, so the
    server keeps it prepared, and SQLAlchemy renders no placeholder per id (a page's names:
    0.74 -> 0.54 ms at 100k photos). Elsewhere ``IN`` lists of at most IN_CHUNK ids.
    """

    def __init__(self, statement) -> None:
        ids = images_t.c.id
        self._array = statement.where(ids == func.any(bindparam("ids", type_=postgresql.ARRAY(BigInteger))))
        self._listed = statement.where(ids.in_(bindparam("ids", expanding=True)))

    def rows(self, conn: Connection, ids: Sequence[int], **params) -> list[Row]:
        distinct = list(dict.fromkeys(int(i) for i in ids))
        if conn.dialect.name == "postgresql":
            return list(conn.execute(self._array, {"ids": distinct, **params}))
        return [row for start in range(0, len(distinct), IN_CHUNK)
                for row in conn.execute(self._listed, {"ids": distinct[start : start + IN_CHUNK], **params})]


_v = vectors_t.c
_BY_NAME = (
    select(images_t, _v["values"].label("vector"), _shown_classes())
    .select_from(images_t.outerjoin(vectors_t, and_(_v.image_id == images_t.c.id, _v.detector == bindparam("detector"))))
    .where(images_t.c.name == bindparam("name"))
)
_REFS = _ByIds(select(images_t.c.id, images_t.c.name, images_t.c.sha256, images_t.c.phash))
_SUMMARIES = _ByIds(select(images_t.c.id, images_t.c.name, images_t.c.sha256, images_t.c.phash, _shown_classes()))

Found = tuple[ImageRecord, "np.ndarray | None", tuple[int, ...]]


def record_of(row: Row) -> ImageRecord:
    created = row.created_at
    if created.tzinfo is None:  # SQLite keeps no offset; we always write UTC
        created = created.replace(tzinfo=timezone.utc)
    return ImageRecord(
        id=int(row.id), name=row.name, sha256=row.sha256, width=int(row.width), height=int(row.height),
        format=row.format, mime=row.mime, size_bytes=int(row.size_bytes), created_at=created,
        phash=_phash(row),
    )


def _classes(shown: str | None) -> tuple[int, ...]:
    # One entry per box: a class seen in several boxes is listed once.
    return tuple(sorted({int(c) for c in shown.split(",")})) if shown else ()


def image_by_name(conn: Connection, name: str, detector: str, min_score: float) -> Found | None:
    """The image ``name``, its vector from ``detector`` (None if it has none) and the classes it shows."""
    row = conn.execute(_BY_NAME, {"name": name, "detector": detector, "min_score": float(min_score)}).first()
    return None if row is None else (record_of(row), row.vector, _classes(row.shown))


class PageReader:
    """The two reads of a similar-photos request, on the connection the caller holds."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def image_by_name(self, name: str, detector: str, min_score: float) -> Found | None:
        return image_by_name(self._conn, name, detector, min_score)

    def refs_by_id(self, ids: Sequence[int]) -> dict[int, ImageRef]:
        """Name and hashes of each existing image among ``ids``."""
        return {int(r.id): ImageRef(int(r.id), r.name, r.sha256, _phash(r)) for r in _REFS.rows(self._conn, ids)}


def _phash(row: Row) -> int | None:
    return None if row.phash is None else int(row.phash)


def summaries_by_id(conn: Connection, ids: Sequence[int], detector: str, min_score: float) -> dict[int, ImageSummary]:
    """Name, hashes and classes shown at ``min_score`` of each existing image among ``ids``."""
    rows = _SUMMARIES.rows(conn, ids, detector=detector, min_score=float(min_score))
    return {int(r.id): ImageSummary(int(r.id), r.name, r.sha256, _classes(r.shown), _phash(r)) for r in rows}
