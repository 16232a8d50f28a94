"""An n-photo collection in the real database, written in bulk without running the detector.

Each photo is a distinct row (own name, content hash, perceptual hash); its YOLOv5s vector is
one of the 400 coco_dev vectors (``index_data``), resampled with logit noise ``sigma``; its
detections are one box per class scoring at least the detector's box threshold (0.30, also
the display threshold), so the class table and the page's chips come from the detections
table as in production. The schema, the active detector and the change feed are made by the
service itself (``bootstrap.build``) before the bulk writes, and the bulk writes append
nothing to the feed: a starting server reads every vector (feed position 1) and is consistent.

Writes go through the driver in bulk: COPY on PostgreSQL (vectors as a binary COPY made by
numpy, the other tables as text), ``executemany`` in one transaction on SQLite. Photos are
made and written in chunks, so a million does not hold a float64 copy of everything.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from index_data import DEFAULT_CACHE, _noisy, coco_dev_vectors
from recommender import bootstrap
from recommender.config import Settings
from recommender.detection.yolov5 import DEFAULT_SCORE_THRESHOLD
from recommender.storage import create_database_engine
from recommender.storage.bulk import _ARRAY_BYTES, _PG_SIGNATURE, _ROW

_CHUNK = 100_000
_CREATED = "2024-01-01 00:00:00+00"


def name_of(image_id: int) -> str:
    return f"scale-{image_id:07d}.jpg"


def fill(settings: Settings, n: int, sigma: float, weights: Path, seed: int = 0) -> dict:
    """Write n photos into the (empty) database of ``settings``; returns counts and seconds."""
    started = time.perf_counter()
    spec = bootstrap.detector_spec(settings)  # the detector a new collection gets: its name and vectors
    seeds = coco_dev_vectors(DEFAULT_CACHE, weights, spec.aggregation)
    bootstrap.build(settings, migrate=True).close()  # schema, active detector, collection id
    # Unbounded, like a migration: the service's engine breaks off any call over DB_TIMEOUT.
    engine = create_database_engine(settings.resolved_database_url)
    rng = np.random.default_rng(seed)
    detections = 0
    try:
        with engine.begin() as conn:
            db = conn.connection.driver_connection
            write = _write_postgresql if engine.dialect.name == "postgresql" else _write_sqlite
            if engine.dialect.name == "sqlite":
                db.execute("PRAGMA synchronous = OFF")  # this bulk load only; a crash means rebuilding it
            for start in range(0, n, _CHUNK):
                count = min(_CHUNK, n - start)
                raw = _noisy(seeds[rng.integers(0, seeds.shape[0], count)], sigma, rng).astype(np.float32)
                ids = np.arange(start + 1, start + count + 1, dtype=np.int64)
                detections += write(db, ids, raw, rng, spec.name)
            if engine.dialect.name == "postgresql":
                for table in ("images", "detections"):  # later uploads take ids after ours
                    db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        if engine.dialect.name == "postgresql":
            import psycopg

            url = engine.url
            with psycopg.connect(host=url.host, port=url.port, user=url.username, password=url.password,
                                 dbname=url.database, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")  # as a database that has been running a while would be
    finally:
        engine.dispose()
    return {"photos": n, "detections": detections, "seconds": round(time.perf_counter() - started, 1)}


def _boxes(raw: np.ndarray, rng: np.random.Generator):
    rows, cols = np.nonzero(raw >= DEFAULT_SCORE_THRESHOLD)
    corner = rng.uniform(0, 320, (rows.size, 2))
    size = rng.uniform(20, 300, (rows.size, 2))
    return rows, cols, raw[rows, cols], corner, np.minimum(corner + size, [640, 480])


def _image_fields(image_id: int, phash: int) -> tuple:
    return (image_id, name_of(image_id), f"{image_id:064x}", 640, 480, "JPEG", "image/jpeg",
            100_000 + image_id % 50_000, _CREATED, phash)


def _write_sqlite(db, ids: np.ndarray, raw: np.ndarray, rng: np.random.Generator, detector: str) -> int:
    phashes = rng.integers(-(2**63), 2**63 - 1, ids.size, dtype=np.int64)
    db.executemany(
        "INSERT INTO images (id, name, sha256, width, height, format, mime, size_bytes, created_at, phash) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (_image_fields(i, h) for i, h in zip(ids.tolist(), phashes.tolist())),
    )
    db.executemany('INSERT INTO vectors (image_id, detector, "values") VALUES (?, ?, ?)',
                   ((i, detector, raw[k].astype("<f4").tobytes()) for k, i in enumerate(ids.tolist())))
    rows, cols, scores, lo, hi = _boxes(raw, rng)
    db.executemany(
        "INSERT INTO detections (image_id, detector, class_id, score, x1, y1, x2, y2) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        ((int(ids[r]), detector, int(c), float(s), *a, *b)
         for r, c, s, a, b in zip(rows.tolist(), cols.tolist(), scores.tolist(), lo.tolist(), hi.tolist())),
    )
    return int(rows.size)


def _write_postgresql(db, ids: np.ndarray, raw: np.ndarray, rng: np.random.Generator, detector: str) -> int:
    phashes = rng.integers(-(2**63), 2**63 - 1, ids.size, dtype=np.int64)
    images = "".join("\t".join(map(str, _image_fields(i, h))) + "\n" for i, h in zip(ids.tolist(), phashes.tolist()))
    rows, cols, scores, lo, hi = _boxes(raw, rng)
    boxes = "".join(
        f"{ids[r]}\t{detector}\t{c}\t{s!r}\t{a[0]:.1f}\t{a[1]:.1f}\t{b[0]:.1f}\t{b[1]:.1f}\n"
        for r, c, s, a, b in zip(rows.tolist(), cols.tolist(), scores.tolist(), lo.tolist(), hi.tolist())
    )
    with db.cursor() as cursor:
        with cursor.copy("COPY images (id, name, sha256, width, height, format, mime, size_bytes, created_at, phash) "
                         "FROM STDIN") as copy:
            copy.write(images)
        with cursor.copy('COPY vectors (image_id, detector, "values") FROM STDIN (FORMAT binary)') as copy:
            copy.write(_binary_vectors(ids, raw, detector))
        with cursor.copy("COPY detections (image_id, detector, class_id, score, x1, y1, x2, y2) FROM STDIN") as copy:
            copy.write(boxes)
    return int(rows.size)


def _binary_vectors(ids: np.ndarray, raw: np.ndarray, detector: str) -> bytes:
    """A binary COPY stream of (image_id int4, detector text, values float4[81])."""
    # The row layout bulk.py reads back, with the detector's name (fixed length) as a middle field.
    layout = np.dtype(_ROW.descr[:3] + [("name_len", ">i4"), ("name", f"S{len(detector)}")] + _ROW.descr[3:])
    rows = np.zeros(ids.size, dtype=layout)
    rows["fields"], rows["id_len"], rows["id"] = 3, 4, ids
    rows["name_len"], rows["name"] = len(detector), detector.encode()
    rows["array_len"], rows["ndim"], rows["has_null"], rows["oid"] = _ARRAY_BYTES, 1, 0, 700
    rows["size"], rows["lower"] = raw.shape[1], 1
    rows["values"]["len"], rows["values"]["value"] = 4, raw
    header = _PG_SIGNATURE + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
    return header + rows.tobytes() + b"\xff\xff"
