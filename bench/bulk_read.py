"""Time to read one detector's vectors at n rows: storage.bulk.read_vectors vs Repository.vectors.

Builds a throw-away collection of n images with one random vector each (no detector run) in
a SQLite file under --tmp and in a new PostgreSQL database (dropped afterwards), then reads it
back with both methods, interleaved, --repeat times each, and checks they return the same.

    .venv/bin/python bench/bulk_read.py --n 1000000
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from recommender.classes import NUM_CLASSES
from recommender.storage import Repository, create_database_engine, upgrade
from recommender.storage.bulk import read_vectors

DETECTOR = "yolov5s"


def _fill(engine, n: int, rng: np.random.Generator) -> None:
    vectors = rng.random((n, NUM_CLASSES), dtype=np.float32)
    with engine.begin() as conn:
        driver = conn.connection.driver_connection
        if engine.dialect.name == "sqlite":
            driver.executemany(
                "INSERT INTO images (id, name, sha256, width, height, format, mime, size_bytes, created_at) "
                "VALUES (?, ?, ?, 1, 1, 'JPEG', 'image/jpeg', 1, '2024-01-01')",
                ((i + 1, f"{i}.jpg", f"{i:064x}") for i in range(n)),
            )
            driver.executemany(
                'INSERT INTO vectors (image_id, detector, "values") VALUES (?, ?, ?)',
                ((i + 1, DETECTOR, vectors[i].astype("<f4").tobytes()) for i in range(n)),
            )
        else:
            with driver.cursor() as cur:
                with cur.copy("COPY images (id, name, sha256, width, height, format, mime, size_bytes, created_at) FROM STDIN") as cp:
                    for i in range(n):
                        cp.write_row((i + 1, f"{i}.jpg", f"{i:064x}", 1, 1, "JPEG", "image/jpeg", 1, "2024-01-01"))
                with cur.copy('COPY vectors (image_id, detector, "values") FROM STDIN') as cp:
                    for i in range(n):
                        cp.write_row((i + 1, DETECTOR, vectors[i].tolist()))


def _measure(engine, label: str, repeat: int) -> None:
    repo = Repository(engine)
    times: dict[str, list[float]] = {"bulk.read_vectors": [], "Repository.vectors": []}
    for _ in range(repeat):
        for name, fn in (("bulk.read_vectors", lambda: read_vectors(engine, DETECTOR)), ("Repository.vectors", lambda: repo.vectors(DETECTOR))):
            start = time.perf_counter()
            ids, values = fn()
            times[name].append(time.perf_counter() - start)
            if name == "bulk.read_vectors":
                first = (ids, values)
            else:
                assert np.array_equal(first[0], ids) and np.array_equal(first[1], values), "methods disagree"
    for name, samples in times.items():
        print(f"  {label:<10} {name:<20} median {statistics.median(samples):6.2f} s  min {min(samples):6.2f} s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"n = {args.n:,} vectors of {NUM_CLASSES} float32, {args.repeat} interleaved reads per method")

    if "sqlite" in args.backends:
        _sqlite(args, rng)
    if "postgresql" in args.backends:
        _postgresql(args, rng)


def _sqlite(args, rng) -> None:
    path = args.tmp / f"bulk-{uuid.uuid4().hex[:8]}.sqlite3"
    engine = create_database_engine(f"sqlite:///{path}")
    try:
        upgrade(engine)
        start = time.perf_counter()
        _fill(engine, args.n, rng)
        print(f"  sqlite     filled in {time.perf_counter() - start:.1f} s")
        _measure(engine, "sqlite", args.repeat)
    finally:
        engine.dispose()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


def _postgresql(args, rng) -> None:
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    name = f"bulk_bench_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        engine = create_database_engine(make_url(args.postgres).set(database=name).render_as_string(hide_password=False))
        upgrade(engine)
        start = time.perf_counter()
        _fill(engine, args.n, rng)
        print(f"  postgresql filled in {time.perf_counter() - start:.1f} s")
        _measure(engine, "postgresql", args.repeat)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
