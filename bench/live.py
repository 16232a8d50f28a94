"""How soon a running server shows a change another process committed (the change feed's delay).

    .venv/bin/python bench/live.py [--changes 40] [--web-workers 2] [--postgres]

Starts ``recommender serve --web-workers N`` on a fresh collection of 60 coco_dev photos, then,
from this process (another process, as the CLI would be), alternately ingests a new photo and
deletes it again, ``--changes`` times. After each commit it polls ``/healthz`` on fresh
connections (so every worker process gets asked) until every worker reports a feed position at
or past the change, and records that delay per worker. The baseline, measured in the same run,
is the same poll against a change that is already applied (the cost of asking).

Reports median and p95 of the delay until the FIRST worker and until ALL workers show the change.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")) / "data" / "coco_dev" / "images"
DEFAULT_PG = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as response:
        return json.loads(response.read())


def stats(values: list[float]) -> str:
    ms = sorted(v * 1e3 for v in values)
    p95 = ms[min(len(ms) - 1, max(0, round(0.95 * len(ms)) - 1))]
    return f"median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ms)})"


def wait_applied(url: str, position: int, workers: int, timeout: float = 30.0) -> tuple[float, float]:
    """Seconds until the first worker, and until every worker, reports ``position``."""
    started = time.perf_counter()
    first: float | None = None
    caught_up: set[int] = set()
    while len(caught_up) < workers:
        body = _health(url)
        if body["feed_position"] >= position:
            caught_up.add(body["pid"])
            first = first if first is not None else time.perf_counter() - started
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"not applied by every worker within {timeout} s")
        time.sleep(0.005)
    assert first is not None
    return first, time.perf_counter() - started


def fresh_postgres() -> tuple[str, callable]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(DEFAULT_PG, isolation_level="AUTOCOMMIT")
    name = f"bench_live_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    return make_url(DEFAULT_PG).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=40)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--postgres", action="store_true", help="use a fresh PostgreSQL database instead of SQLite")
    parser.add_argument("--weights-dir", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", REPO / "data" / "weights")))
    args = parser.parse_args()

    from recommender import bootstrap
    from recommender.config import Settings

    photos = sorted(DEFAULT_IMAGES.glob("*.jpg"))
    gallery, extra = photos[:60], photos[60:60 + args.changes]
    drop = None
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        url_db = f"sqlite:///{tmp}/live.sqlite3"
        if args.postgres:
            url_db, drop = fresh_postgres()
        settings = Settings(data_dir=Path(tmp) / "data", database_url=url_db, weights_dir=args.weights_dir)
        writer = bootstrap.build(settings, migrate=True)
        writer.ingest.paths(gallery)
        port = _free_port()
        env = {**os.environ, "DATA_DIR": str(settings.data_dir), "DATABASE_URL": url_db,
               "WEIGHTS_DIR": str(args.weights_dir), "PORT": str(port)}
        recommender = Path(sys.executable).with_name("recommender")
        log = open(Path(tmp) / "server.log", "w")
        server = subprocess.Popen([str(recommender), "serve", "--web-workers", str(args.web_workers)], env=env,
                                  stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            while True:
                try:
                    if _health(url).get("status") == "ok":
                        break
                except OSError:
                    pass
                time.sleep(0.2)
            first_seen, all_seen, baseline = [], [], []
            for i, path in enumerate(extra):
                # Baseline: the same polling loop for a change every worker has already applied.
                position = writer.collection.current().position
                baseline.append(wait_applied(url, position, args.web_workers)[1])
                if i % 2 == 0:
                    name = writer.ingest.file(path).image.name
                else:
                    writer.admin.delete(name)
                position = writer.collection.refresh().position
                first, every = wait_applied(url, position, args.web_workers)
                first_seen.append(first)
                all_seen.append(every)
        finally:
            server.terminate()
            server.wait(timeout=30)
            writer.close()
            if drop:
                drop()
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(f"{backend}, {args.web_workers} web workers, {len(all_seen)} changes (ingest/delete alternating), "
          f"feed polled every 0.5 s")
    print(f"  first worker shows the change   {stats(first_seen)}")
    print(f"  every worker shows the change   {stats(all_seen)}")
    print(f"  baseline (already applied)      {stats(baseline)}")


if __name__ == "__main__":
    main()
