"""How long requests hang when PostgreSQL freezes, and how soon the server recovers (issue 12, defect 1).

    .venv/bin/python bench/frozen_db.py [--baseline-src DIR] [--client-timeout 40] [--db-timeout 3]

The scenario of tests/test_frozen_database.py, measured instead of asserted, for this checkout
and (with ``--baseline-src``) another checkout's ``backend/``: a PostgreSQL cluster of its own
on a free port, ``recommender serve --web-workers 1 --threads 8``, three photos uploaded; then
every process of the cluster is suspended (SIGSTOP) and the script times, with a client that
gives up after ``--client-timeout`` seconds: six API calls at once together with the page, its
files, /openapi.json and /healthz; then 36 API calls at once (more than the server's threads)
and the page again. After SIGCONT: seconds until /healthz is 200 again. Needs PostgreSQL's
initdb/pg_ctl (Debian's postgresql package) and root or a user that can run them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the test's own helpers: one scenario, measured two ways


def scenario(src: Path, args: argparse.Namespace, photos: list[Path]) -> None:
    import test_frozen_database as t
    from conftest import RECOMMENDER, ServerProcess, free_port
    from own_postgres import OwnPostgres

    pg = OwnPostgres()
    pg.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-frozen-"))
    try:
        env = {**os.environ, "PYTHONPATH": str(src / "backend"), "DATABASE_URL": pg.create_database("frozen"),
               "DATA_DIR": str(tmp / "data"), "WEIGHTS_DIR": str(args.weights_dir), "PORT": str(free_port()),
               "DB_TIMEOUT": str(args.db_timeout)}
        subprocess.run([str(RECOMMENDER), "db", "upgrade"], env=env, check=True, capture_output=True)
        with ServerProcess([str(RECOMMENDER), "serve", "--web-workers", "1", "--threads", "8"], env,
                           tmp / "server.log") as server:
            server.wait_ready()
            names = [t.request(server.port, "POST", "/upload_file", *t.multipart(t.photo_bytes(p, i), p.name))[1]["name"]
                     for i, p in enumerate(photos[:3])]
            new = t.multipart(t.photo_bytes(photos[3], 99), photos[3].name)
            pg.freeze()
            try:
                wave: list = []
                stuck = threading.Thread(target=lambda: wave.extend(t.run_concurrently(server.port, t.api_calls(names, new))))
                stuck.start()
                time.sleep(0.3)
                pages = t.page_checks(server.port)
                stuck.join()
                t.show(f"{src.name}: frozen, 6 API calls at once", wave)
                t.show(f"{src.name}: frozen, meanwhile", pages)
                flood = t.run_concurrently(server.port, t.api_calls(names, new) * 6)
                answered = sum(r[1] is not None for r in flood)
                t.show(f"{src.name}: frozen, 36 API calls at once (slowest 3; {answered} of 36 answered)",
                       sorted(flood, key=lambda r: -r[3])[:3])
                t.show(f"{src.name}: frozen, the page and health after that", t.page_checks(server.port))
            finally:
                pg.thaw()
            started = time.monotonic()
            while t.request(server.port, "GET", "/healthz")[0] != 200 and time.monotonic() - started < 120:
                time.sleep(0.2)
            print(f"{src.name}: healthy again {time.monotonic() - started:.1f} s after SIGCONT, same process")
    finally:
        pg.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--client-timeout", type=float, default=40.0)
    parser.add_argument("--db-timeout", type=float, default=3.0, help="DB_TIMEOUT of the server (ignored by older code)")
    parser.add_argument("--weights-dir", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", REPO / "data" / "weights")))
    args = parser.parse_args()
    os.environ["FAULT_CLIENT_TIMEOUT"] = str(args.client_timeout)  # read by the test module at import
    shared = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
    photos = sorted((shared / "data" / "coco_dev" / "images").glob("*.jpg"))[:4]
    for src in ([args.baseline_src.resolve()] if args.baseline_src else []) + [REPO]:
        scenario(src, args, photos)


if __name__ == "__main__":
    main()
