"""Modest load on a real server: are uploads refused as "busy"? (issue 12, defect 8)

    .venv/bin/python bench/load.py [--baseline-src DIR] [--seconds 60] [--clients 8] [--databases sqlite,postgresql]

For each database and each variant of the code (this checkout, and with ``--baseline-src`` another
checkout's ``backend/``, e.g. ``git archive <commit> | tar -x -C /tmp/before``), alternating: a fresh
collection of 100 coco_dev photos, ``recommender serve`` as a user starts it (2 web workers of 8
threads), then ``--clients`` client threads for ``--seconds``, each sending one request after
another: 10% uploads of a photo the server has not seen (coco_dev photos with a unique trailer
after the JPEG end marker, so each is new bytes), 50% similar pages, 20% thumbnails, 10%
detections, 10% random picks. Reports per variant: requests, uploads, uploads refused (503
busy), other non-2xx answers, and upload / read latency (median, p95).
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")) / "data" / "coco_dev" / "images"
DEFAULT_PG = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
RECOMMENDER = Path(sys.executable).with_name("recommender")
GALLERY = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fresh_postgres() -> tuple[str, object]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(DEFAULT_PG, isolation_level="AUTOCOMMIT")
    name = f"bench_load_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(DEFAULT_PG).set(database=name).render_as_string(hide_password=False), drop


class Client:
    def __init__(self, port: int, gallery: list[str], photos: list[bytes], rng: random.Random) -> None:
        self.port, self.gallery, self.photos, self.rng = port, gallery, photos, rng
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def send(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> int:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                response = self.conn.getresponse()
                response.read()
                return response.status
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                if attempt == 2:
                    return 0
        return 0

    def one(self) -> tuple[str, int, float]:
        roll, name = self.rng.random(), self.rng.choice(self.gallery)
        started = time.perf_counter()
        if roll < 0.10:
            kind = "upload"
            data = self.rng.choice(self.photos) + b"\0" + uuid.uuid4().bytes  # new bytes, same picture
            boundary = uuid.uuid4().hex
            body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file_to_upload"; filename="load.jpg"\r\n'
                    "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
            status = self.send("POST", "/upload_file", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
        else:
            kind = "read"
            path = (f"/get_similar/{name}?page={self.rng.randint(1, 3)}" if roll < 0.60 else f"/images/{name}/thumb"
                    if roll < 0.80 else f"/images/{name}/detections" if roll < 0.90 else "/random?n=12")
            status = self.send("GET", path)
        return kind, status, time.perf_counter() - started


def run_load(port: int, gallery: list[str], photos: list[bytes], clients: int, seconds: float) -> list[tuple[str, int, float]]:
    results: list[tuple[str, int, float]] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop(seed: int) -> None:
        client = Client(port, gallery, photos, random.Random(seed))
        mine = []
        while time.monotonic() < deadline:
            mine.append(client.one())
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def measure(src: Path, database: str, args: argparse.Namespace, photos: list[Path], uploads: list[bytes]) -> list:
    drop = None
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        url = f"sqlite:///{tmp}/load.sqlite3"
        if database == "postgresql":
            url, drop = fresh_postgres()
        env = {**os.environ, "PYTHONPATH": str(src / "backend"), "DATA_DIR": f"{tmp}/data", "DATABASE_URL": url,
               "WEIGHTS_DIR": str(args.weights_dir), "PORT": str(free_port())}
        try:
            subprocess.run([str(RECOMMENDER), "db", "upgrade"], env=env, check=True, capture_output=True)
            subprocess.run([str(RECOMMENDER), "ingest", "--quiet", *map(str, photos[:GALLERY])], env=env, check=True,
                           capture_output=True)
            with open(f"{tmp}/server.log", "w") as log:
                server = subprocess.Popen([str(RECOMMENDER), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
            try:
                port = int(env["PORT"])
                for _ in range(600):
                    try:
                        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                        probe.request("GET", "/healthz")
                        if probe.getresponse().status == 200:
                            break
                    except OSError:
                        pass
                    time.sleep(0.2)
                time.sleep(2)  # both workers ready
                return run_load(port, [p.name for p in photos[:GALLERY]], uploads, args.clients, args.seconds)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(timeout=60)
        finally:
            if drop:
                drop()


def report(label: str, results: list[tuple[str, int, float]]) -> None:
    statuses = Counter((kind, status) for kind, status, _ in results)
    uploads = [r for r in results if r[0] == "upload"]
    refused = statuses[("upload", 503)]
    other = sum(n for (kind, status), n in statuses.items() if status not in (200, 201) and (kind, status) != ("upload", 503))

    def ms(rows: list) -> str:
        values = sorted(r[2] * 1e3 for r in rows if r[1] in (200, 201))
        if not values:
            return "-"
        return f"{statistics.median(values):6.0f} / {values[min(len(values) - 1, int(0.95 * len(values)))]:6.0f} ms"

    print(f"  {label:<24} {len(results):6d} requests  {len(uploads):4d} uploads  {refused:3d} refused busy  "
          f"{other:3d} other errors   upload {ms(uploads)}   read {ms([r for r in results if r[0] == 'read'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--weights-dir", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", REPO / "data" / "weights")))
    args = parser.parse_args()
    variants = {"this": REPO} if args.baseline_src is None else {"baseline": args.baseline_src.resolve(), "this": REPO}
    photos = sorted(args.images.glob("*.jpg"))
    uploads = [p.read_bytes() for p in photos[GALLERY:]]
    print(f"{args.clients} clients for {args.seconds:.0f} s, 10% uploads; load average {os.getloadavg()[0]:.1f}")
    print("  (upload / read latency: median / p95 of the answered ones)")
    for database in args.databases.split(","):
        for name, src in variants.items():
            report(f"{database} {name}", measure(src, database, args, photos, uploads))


if __name__ == "__main__":
    main()
