"""Read one detector's vectors in bulk, without a Python object per value.

* PostgreSQL: ``COPY (SELECT image_id, "values" ...) TO STDOUT (FORMAT binary)`` through
  psycopg 3. Every row of that stream has the same layout (2 fields; int4 id; a one-dimensional
  float4 array of 81 elements without NULLs), so the stream is parsed by one numpy structured
  dtype, in chunks, and every row's framing is checked.
* SQLite: the vectors are 324-byte float32 BLOBs. SQLite concatenates them itself
  (``group_concat`` over the ordered rows) and returns one blob and one text of ids, viewed as
  one float32 matrix: no Python object per row. If that cannot be trusted (see
  ``_sqlite_concatenated``) rows are fetched in large batches straight from the driver.

Both return exactly what ``Repository.vectors`` returns: (ids int64[n], float32[n, 81]) ordered
by image id. Reads go in pages of ``PAGE_ROWS`` images, each on a connection of its own: the
service bounds every database call by DB_TIMEOUT, and one statement over a million rows takes
longer than that on a busy machine (the start-up then failed and retried forever).
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine

from ..classes import NUM_CLASSES

_PG_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_FLOAT4_OID = 700
_ARRAY_BYTES = 20 + NUM_CLASSES * 8  # ndim, has-null flag, element type, size, lower bound; (len, value)s
_ROW = np.dtype(
    [
        ("fields", ">i2"),
        ("id_len", ">i4"),
        ("id", ">i4"),
        ("array_len", ">i4"),
        ("ndim", ">i4"),
        ("has_null", ">i4"),
        ("oid", ">u4"),
        ("size", ">i4"),
        ("lower", ">i4"),
        ("values", [("len", ">i4"), ("value", ">f4")], (NUM_CLASSES,)),
    ]
)
_SQLITE_BATCH = 65_536
# Images per call of a whole-collection read: about a second per call on a loaded 2-core machine.
PAGE_ROWS = 100_000


class BulkReadError(RuntimeError):
    """The database returned vectors in a shape the bulk reader does not expect."""


def read_vectors(engine: Engine, detector: str) -> tuple[np.ndarray, np.ndarray]:
    """(image ids int64[n], float32[n, 81]) of one detector, ordered by image id."""
    read_page = {"postgresql": _read_postgresql, "sqlite": _read_sqlite}.get(engine.dialect.name)
    if read_page is None:
        raise BulkReadError(f"no bulk reader for {engine.dialect.name!r}")
    pages: list[tuple[np.ndarray, np.ndarray]] = []
    after = -1
    while True:
        pages.append(read_page(engine, detector, after, PAGE_ROWS))
        if pages[-1][0].shape[0] < PAGE_ROWS:
            break
        after = int(pages[-1][0][-1])
    if len(pages) == 1:
        return pages[0]
    return np.concatenate([p[0] for p in pages]), np.concatenate([p[1] for p in pages])


def _read_postgresql(engine: Engine, detector: str, after: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    from psycopg import sql

    statement = sql.SQL(
        'COPY (SELECT image_id, "values" FROM vectors WHERE detector = {} AND image_id > {} ORDER BY image_id LIMIT {}) '
        "TO STDOUT (FORMAT binary)"
    ).format(sql.Literal(detector), sql.Literal(int(after)), sql.Literal(int(limit)))
    parser = _CopyParser()
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for chunk in copy:
                parser.feed(chunk)
        conn.rollback()
    return parser.result()


class _CopyParser:
    """Incremental parser of a binary COPY stream of fixed-layout rows."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._header_done = False
        self._ended = False
        self._ids: list[np.ndarray] = []
        self._values: list[np.ndarray] = []

    def feed(self, chunk: bytes | memoryview) -> None:
        self._buffer += chunk
        if len(self._buffer) >= 8 << 20:
            self._parse()

    def _parse(self) -> None:
        buf = self._buffer
        if not self._header_done:
            if len(buf) < 19:
                return
            if bytes(buf[:11]) != _PG_SIGNATURE:
                raise BulkReadError("not a binary COPY stream")
            extension = int.from_bytes(buf[15:19], "big")
            del buf[: 19 + extension]
            self._header_done = True
        n = len(buf) // _ROW.itemsize
        if n:
            rows = np.frombuffer(bytes(buf[: n * _ROW.itemsize]), dtype=_ROW)
            _check_rows(rows)
            self._ids.append(rows["id"].astype(np.int64))
            self._values.append(rows["values"]["value"].astype(np.float32))
            del buf[: n * _ROW.itemsize]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        self._parse()
        if bytes(self._buffer) != b"\xff\xff":
            raise BulkReadError(f"unexpected {len(self._buffer)} bytes at the end of the COPY stream")
        if not self._ids:
            return np.empty(0, np.int64), np.empty((0, NUM_CLASSES), np.float32)
        return np.concatenate(self._ids), np.concatenate(self._values)


def _check_rows(rows: np.ndarray) -> None:
    framing = (
        (rows["fields"] == 2)
        & (rows["id_len"] == 4)
        & (rows["array_len"] == _ARRAY_BYTES)
        & (rows["ndim"] == 1)
        & (rows["has_null"] == 0)
        & (rows["oid"] == _FLOAT4_OID)
        & (rows["size"] == NUM_CLASSES)
        & (rows["values"]["len"] == 4).all(axis=1)
    )
    if not framing.all():
        bad = int(np.flatnonzero(~framing)[0])
        raise BulkReadError(f"vector of image {int(rows['id'][bad])} is not {NUM_CLASSES} non-null REALs")


def _read_sqlite(engine: Engine, detector: str, after: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        found = _sqlite_concatenated(driver, detector, after, limit)
        return found if found is not None else _sqlite_batches(driver, detector, after, limit)


def _sqlite_concatenated(driver, detector: str, after: int = -1, limit: int = -1) -> tuple[np.ndarray, np.ndarray] | None:
    """One row for the whole detector: all blobs concatenated by SQLite, all ids as one text.

    group_concat works on text, which in a UTF-8 database is the blob's bytes unchanged; the
    two aggregates run over the same ordered rows, so ids and blobs stay aligned. Anything
    unexpected (another encoding, a blob of another length, ids out of order) returns None
    and the caller takes the row-batch path.
    """
    if driver.execute("PRAGMA encoding").fetchone()[0] != "UTF-8":
        return None
    blob, id_text, count = driver.execute(
        "SELECT CAST(group_concat(v, x'') AS BLOB), group_concat(image_id), count(*) "
        'FROM (SELECT image_id, "values" AS v FROM vectors WHERE detector = ? AND image_id > ? ORDER BY image_id LIMIT ?)',
        (detector, after, limit),
    ).fetchone()
    if count == 0:
        return np.empty(0, np.int64), np.empty((0, NUM_CLASSES), np.float32)
    ids = np.array(id_text.split(","), dtype=np.int64)
    if len(blob) != count * NUM_CLASSES * 4 or ids.shape[0] != count or not (np.diff(ids) > 0).all():
        return None
    return ids, np.frombuffer(blob, dtype="<f4").reshape(count, NUM_CLASSES).astype(np.float32)


def _sqlite_batches(driver, detector: str, after: int = -1, limit: int = -1) -> tuple[np.ndarray, np.ndarray]:
    ids: list[int] = []
    blobs: list[bytes] = []
    cursor = driver.cursor()
    try:
        cursor.execute('SELECT image_id, "values" FROM vectors WHERE detector = ? AND image_id > ? ORDER BY image_id LIMIT ?',
                       (detector, after, limit))
        while batch := cursor.fetchmany(_SQLITE_BATCH):
            batch_ids, batch_blobs = zip(*batch)
            ids.extend(batch_ids)
            blobs.extend(batch_blobs)
    finally:
        cursor.close()
    data = b"".join(blobs)
    if len(data) != len(ids) * NUM_CLASSES * 4:
        sizes = {len(b) for b in blobs}
        raise BulkReadError(f"vector blobs of {sorted(sizes)} bytes, expected {NUM_CLASSES * 4}")
    values = np.frombuffer(data, dtype="<f4").reshape(len(ids), NUM_CLASSES).astype(np.float32)
    return np.asarray(ids, dtype=np.int64), values


def read_class_scores(engine: Engine, detector: str, min_score: float,
                      ids: list[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image ids int64, class ids int64, best score float32): one row per class an image shows.

    "Shows" means a box of the class at ``min_score`` or more (the page's chips' rule); the
    score is the best such box's. All images (in windows of ``PAGE_ROWS`` image ids, a call
    each), or only ``ids``.
    """
    marker = "%s" if engine.dialect.name == "postgresql" else "?"
    query = (f"SELECT image_id, class_id, MAX(score) FROM detections WHERE detector = {marker} AND score >= {marker}"
             " AND {} GROUP BY image_id, class_id")
    head = (detector, float(min_score))
    if ids is None:
        calls = [[(query.format(f"image_id BETWEEN {marker} AND {marker}"), (*head, low, low + PAGE_ROWS - 1))]
                 for low in _id_windows(engine)]
    else:
        chunks = [ids[i : i + 900] for i in range(0, len(ids), 900)]
        calls = [[(query.format(f"image_id IN ({', '.join([marker] * len(c))})"), (*head, *c)) for c in chunks]]
    rows: list[tuple] = []
    for statements in calls:
        rows.extend(_fetch_all(engine, statements))
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    table = np.array(rows, dtype=np.float64)
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2].astype(np.float32)


def _id_windows(engine: Engine) -> range:
    """Lowest image id of each window of PAGE_ROWS ids that can hold images (primary-key lookups)."""
    with engine.connect() as conn:
        low, high = conn.exec_driver_sql("SELECT min(id), max(id) FROM images").one()
        conn.rollback()
    return range(0) if low is None else range(int(low), int(high) + 1, PAGE_ROWS)


def _fetch_all(engine: Engine, statements: list[tuple[str, tuple]]) -> list[tuple]:
    """Every row of some statements, run on one connection through the driver (no SQLAlchemy rows)."""
    rows: list[tuple] = []
    with engine.connect() as conn:
        cursor = conn.connection.driver_connection.cursor()
        try:
            for statement, params in statements:
                cursor.execute(statement, params)
                rows.extend(cursor.fetchall())
        finally:
            cursor.close()
        conn.rollback()
    return rows
