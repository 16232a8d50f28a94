"""End-to-end ingest speed with YOLOv5s on SQLite and PostgreSQL, against detection alone.

What it measures, all in one run on the same photos with one loaded detector:

* ``detect-only`` (the baseline): the detector as ``create_detector`` makes it (runtime
  threads on all cores) on already-decoded pixels, one image at a time;
* ``ingest-sqlite`` / ``ingest-postgresql``: ``Ingest.paths`` of the service ``bootstrap.build`` assembles (the code
  behind ``recommender ingest``) into a fresh database and media folder each: read, decode,
  hash, duplicate check, detect, atomic file write with fsync, one transaction per image,
  index update. Each service builds its detector as ``recommender ingest`` does (with
  ``detect_workers`` concurrent detections, one runtime thread per core share).

The photos are split into rounds (default 8 of 50); every round runs every mode on the same
photos, in a rotating order, so a change of machine load during the run hits all modes alike.
Reported per mode: images/s over all photos, the median milliseconds per image (ingest: the
gap between consecutive stored images), CPU milliseconds per image (all threads of this
process; insensitive to other processes), and the median over rounds of the ratio to
detect-only in the same round (above 1.0: the pipeline hides decoding and storage behind
detection; below: storage costs throughput).

    .venv/bin/python bench/ingest.py                         # coco_dev, 400 photos
    .venv/bin/python bench/ingest.py --limit 100 --detect-workers 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")) / "data" / "coco_dev" / "images"
DEFAULT_PG = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


class Mode:
    def __init__(self, name: str) -> None:
        self.name = name
        self.images = 0
        self.wall = 0.0
        self.cpu = 0.0
        self.per_image: list[float] = []
        self.round_rates: list[float] = []

    def record(self, n: int, wall: float, cpu: float, per_image: list[float]) -> None:
        self.images += n
        self.wall += wall
        self.cpu += cpu
        self.per_image.extend(per_image)
        self.round_rates.append(n / wall)


def run_detect_only(detector, chunk: list[Path]) -> tuple[list[float], Callable[[], None]]:
    from recommender.images import read_image_file

    pixels = [read_image_file(p).rgb for p in chunk]
    times: list[float] = []

    def run() -> None:
        for rgb in pixels:
            t = time.perf_counter()
            detector.detect(rgb)
            times.append(time.perf_counter() - t)

    return times, run


def run_ingest(service, chunk: list[Path]) -> tuple[list[float], Callable[[], None]]:
    gaps: list[float] = []

    def run() -> None:
        last = time.perf_counter()

        def progress(event) -> None:
            nonlocal last
            if event.outcome == "started":
                last = time.perf_counter()
                return
            if event.outcome != "ingested":
                raise SystemExit(f"{event.path}: {event.outcome} {event.message or ''}")
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

        service.ingest.paths(chunk, progress=progress, clean_orphans=False)

    return gaps, run


def fresh_postgres(admin_url: str) -> tuple[str, Callable[[], None]]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"bench_ingest_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(admin_url).set(database=name).render_as_string(hide_password=False), drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos (default: coco_dev)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos")
    parser.add_argument("--rounds", type=int, default=8, help="split the photos into this many rounds")
    parser.add_argument("--weights-dir", type=Path, default=REPO / "data" / "weights")
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="server to create the fresh database on")
    parser.add_argument("--detect-workers", default="2", help="comma-separated detection concurrency levels to compare")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from recommender import bootstrap
    from recommender.config import Settings

    photos = sorted(args.images.glob("*.jpg"))
    if args.limit:
        photos = photos[: args.limit]
    if not photos:
        raise SystemExit(f"no .jpg photos in {args.images}")
    detector = bootstrap.make_detector(Settings(weights_dir=args.weights_dir))
    detector.load()  # includes the warm-up
    print(
        f"dataset: {args.images} ({len(photos)} photos, {args.rounds} rounds); detector yolov5s "
        f"runtime={detector.runtime} threads={detector.threads}; cpus={os.cpu_count()}; "
        f"load average at start {os.getloadavg()[0]:.1f}",
        flush=True,
    )

    with ExitStack() as stack:
        runners: dict[str, Callable] = {"detect-only": lambda chunk: run_detect_only(detector, chunk)}
        for workers in [int(w) for w in args.detect_workers.split(",")]:
            for backend in ("sqlite", "postgresql"):
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
                if backend == "sqlite":
                    url = f"sqlite:///{tmp}/bench.sqlite3"
                else:
                    url, drop = fresh_postgres(args.postgres_url)
                    stack.callback(drop)
                # The service's own detector set-up, exactly as `recommender ingest` gets it.
                settings = Settings(data_dir=tmp, database_url=url, weights_dir=args.weights_dir, detect_threads=workers)
                service = bootstrap.build(settings, migrate=True)
                stack.callback(service.close)
                service.detectors.load(service.queries.status().detector)  # load and warm up
                runners[f"ingest-{backend} (detect_workers={workers})"] = (
                    lambda chunk, service=service: run_ingest(service, chunk)
                )
        modes = {name: Mode(name) for name in runners}
        names = list(runners)
        for r, chunk in enumerate(np.array_split(np.array(photos, dtype=object), args.rounds)):
            chunk = list(chunk)
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                per_image, run = runners[name](chunk)
                wall0, cpu0 = time.perf_counter(), time.process_time()
                run()
                modes[name].record(len(chunk), time.perf_counter() - wall0, time.process_time() - cpu0, per_image)
            print(f"round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)

    base = modes["detect-only"]
    print(f"\n{'mode':<40} {'images/s':>9} {'median ms':>10} {'CPU ms/img':>11} {'vs detect-only':>15}")
    report = {}
    for name, m in modes.items():
        ratio = statistics.median(a / b for a, b in zip(m.round_rates, base.round_rates))
        report[name] = {
            "images": m.images,
            "seconds": m.wall,
            "images_per_s": m.images / m.wall,
            "median_ms_per_image": 1000 * statistics.median(m.per_image),
            "cpu_ms_per_image": 1000 * m.cpu / m.images,
            "median_round_ratio_vs_detect_only": ratio,
        }
        r = report[name]
        print(
            f"{name:<40} {r['images_per_s']:>9.2f} {r['median_ms_per_image']:>10.1f} "
            f"{r['cpu_ms_per_image']:>11.1f} {ratio:>14.2f}x"
        )
    if args.json:
        args.json.write_text(json.dumps({"dataset": str(args.images), "photos": len(photos), "results": report}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
