"""End-to-end ingest speed with YOLOv5s: in-process (SQLite, PostgreSQL) and through the queue, against detection alone.

What it measures, all in one run on the same photos:

* ``detect-only`` (the baseline): the detector as ``create_detector`` makes it (runtime
  threads on all cores) on already-decoded pixels, one image at a time;
* ``ingest-sqlite`` / ``ingest-postgresql``: ``Ingest.paths`` of the service ``bootstrap.build`` assembles (the code
  behind ``recommender ingest``) into a fresh database and media folder each: read, decode,
  hash, duplicate check, detect, atomic file write with fsync, one transaction per image,
  index update. Each service builds its detector as ``recommender ingest`` does (with
  ``detect_workers`` concurrent detections, one runtime thread per core share).
* ``queue (N workers x C)``: ``recommender ingest --queue`` (its ``QueueClient``, in this
  process) into a fresh PostgreSQL database, with N ``recommender worker`` processes of
  concurrency C (default WORKER_CONCURRENCY's, one per core; separate processes, started once
  and kept warm) on a private redis-server (append-only, fsync every second, as docker-compose
  runs it). A round ends when the client has read every outcome.

The photos are split into rounds (default 8 of 50); every round runs every mode on the same
photos, in a rotating order, so a change of machine load during the run hits all modes alike.
Reported per mode: images/s over all photos, the median milliseconds per image (ingest: the
gap between consecutive stored images; queue: wall time per photo), CPU milliseconds per image
(in-process: all threads of this process; queue: the workers plus the client plus Redis; the
PostgreSQL server's share is in neither), and the median over rounds of the ratio to
detect-only in the same round. For the queue, the overhead per photo against in-process
PostgreSQL ingest (same rounds): wall ms and CPU ms. At the end, the queue's databases must
hold every photo exactly once, with the vectors in-process ingest stored.

    .venv/bin/python bench/ingest.py                         # coco_dev, 400 photos
    .venv/bin/python bench/ingest.py --limit 100 --detect-workers 1,2 --queue-workers ""
    .venv/bin/python bench/ingest.py --profiles legacy,balanced --queue-workers ""   # a profile against another
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
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
RECOMMENDER = Path(sys.executable).with_name("recommender")
_TICK = os.sysconf("SC_CLK_TCK")


class Mode:
    def __init__(self, name: str) -> None:
        self.name = name
        self.images = 0
        self.wall = 0.0
        self.cpu = 0.0
        self.per_image: list[float] = []
        self.round_rates: list[float] = []
        self.round_walls: list[float] = []
        self.round_cpus: list[float] = []
        self.parts: dict[str, float] = {}  # queue modes: CPU seconds of the client, the workers, Redis

    def record(self, n: int, wall: float, cpu: float, per_image: list[float], parts: dict[str, float]) -> None:
        for part, seconds in parts.items():
            self.parts[part] = self.parts.get(part, 0.0) + seconds
        self.images += n
        self.wall += wall
        self.cpu += cpu
        self.per_image.extend(per_image)
        self.round_rates.append(n / wall)
        self.round_walls.append(wall / n)
        self.round_cpus.append(cpu / n)


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


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


class Broker:
    """A private redis-server configured as docker-compose runs it (append-only, fsync every second)."""

    def __init__(self, folder: Path) -> None:
        from redis import Redis

        with socket.socket() as sock:  # a free port: never the shared 6379
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.process = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(folder), "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
            stdout=subprocess.DEVNULL, start_new_session=True)
        for _ in range(100):
            try:
                if Redis(port=self.port).ping():
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.1)
        raise SystemExit("redis-server did not start")

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()


class QueueRunner:
    """N warm ``recommender worker`` processes and this process as the ``ingest --queue`` client."""

    def __init__(self, stack: ExitStack, settings, workers: int, concurrency: int, broker: Broker, log_dir: Path) -> None:
        from recommender import bootstrap
        from recommender.tasks.client import QueueClient

        env = {**os.environ, "DATABASE_URL": settings.database_url, "DATA_DIR": str(settings.data_dir),
               "WEIGHTS_DIR": str(settings.weights_dir), "BROKER_URL": settings.broker_url}
        self.workers = []
        for i in range(workers):
            log = log_dir / f"worker-{settings.broker_url.rsplit('/', 1)[1]}-{i}.log"
            process = subprocess.Popen([str(RECOMMENDER), "worker", "--concurrency", str(concurrency)],
                                       env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
            stack.callback(lambda p=process: (p.terminate(), p.wait()))
            self.workers.append((process, log))
        self.broker = broker
        self.service = bootstrap.build(settings)
        stack.callback(self.service.close)
        self.client = QueueClient(settings, self.service)
        self._wait_ready()

    def _wait_ready(self) -> None:
        for process, log in self.workers:
            deadline = time.monotonic() + 300
            while " ready." not in log.read_text(errors="replace"):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"a worker did not start:\n{log.read_text()}")
                time.sleep(0.1)

    def cpu(self) -> dict[str, float]:
        return {"workers": sum(process_cpu(p.pid) for p, _ in self.workers), "redis": process_cpu(self.broker.process.pid)}

    def __call__(self, chunk: list[Path]) -> tuple[list[float], Callable[[], None]]:
        per_photo: list[float] = []

        def run() -> None:
            started = time.perf_counter()
            summary = self.client.ingest(chunk, wait=True)
            if summary.ingested != len(chunk):
                raise SystemExit(f"queue: {summary}")
            per_photo.append((time.perf_counter() - started) / len(chunk))

        return per_photo, run


def build_runners(args, stack: ExitStack) -> tuple[dict[str, Callable], dict[str, Callable[[], dict[str, float]]], dict]:
    """Every mode's runner; for the queue modes the CPU meter of their processes; every mode's service."""
    from recommender import bootstrap
    from recommender.config import Settings

    detector = bootstrap.make_detector(Settings(weights_dir=args.weights_dir))
    detector.load()  # includes the warm-up
    runners: dict[str, Callable] = {"detect-only": lambda chunk: run_detect_only(detector, chunk)}
    outside: dict[str, Callable[[], dict[str, float]]] = {}
    services: dict[str, object] = {}
    for workers, profile, backend in itertools.product(
        [int(w) for w in args.detect_workers.split(",")], args.profiles.split(","), ("sqlite", "postgresql")
    ):
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-ingest-")))
        if backend == "sqlite":
            url = f"sqlite:///{tmp}/bench.sqlite3"
        else:
            url, drop = fresh_postgres(args.postgres_url)
            stack.callback(drop)
        # The service's own detector set-up, exactly as `recommender ingest` gets it.
        settings = Settings(data_dir=tmp, database_url=url, weights_dir=args.weights_dir, detect_threads=workers,
                            detect_profile=profile)
        service = bootstrap.build(settings, migrate=True)
        stack.callback(service.close)
        service.ingest.load_detector()
        label = "" if args.profiles == "balanced" else f" {profile}"
        name = f"ingest-{backend}{label} (detect_workers={workers})"
        runners[name], services[name] = (lambda chunk, s=service: run_ingest(s, chunk)), service
    queue_workers = [int(w) for w in args.queue_workers.split(",") if w]
    if queue_workers and shutil.which("redis-server") is None:
        raise SystemExit("the queue modes need Debian's redis-server (apt-get install redis-server), or --queue-workers ''")
    if queue_workers:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-queue-")))
        broker = Broker(folder)
        stack.callback(broker.stop)
        for db, workers in enumerate(queue_workers, start=1):
            concurrency = args.worker_concurrency or Settings().worker_concurrency
            url, drop = fresh_postgres(args.postgres_url)
            stack.callback(drop)
            settings = Settings(data_dir=folder / f"data-{db}", database_url=url, weights_dir=args.weights_dir,
                                broker_url=broker.url(db))
            bootstrap.migrate_database(settings)
            runner = QueueRunner(stack, settings, workers, concurrency, broker, folder)
            name = f"queue ({workers} worker{'s' if workers > 1 else ''} x {concurrency})"
            runners[name], outside[name], services[name] = runner, runner.cpu, runner.service
    return runners, outside, services


def run_rounds(args, photos: list[Path], runners: dict[str, Callable],
               outside: dict[str, Callable[[], dict[str, float]]]) -> dict[str, Mode]:
    modes = {name: Mode(name) for name in runners}
    names = list(runners)
    for r, chunk in enumerate(np.array_split(np.array(photos, dtype=object), args.rounds)):
        chunk = list(chunk)
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            per_image, run = runners[name](chunk)
            meter = outside.get(name, dict)
            wall0, cpu0, out0 = time.perf_counter(), time.process_time(), meter()
            run()
            wall, parts = time.perf_counter() - wall0, {"this process": time.process_time() - cpu0}
            parts.update({part: seconds - out0[part] for part, seconds in meter().items()})
            modes[name].record(len(chunk), wall, sum(parts.values()), per_image, parts)
        print(f"round {r + 1}/{args.rounds} done (load average {os.getloadavg()[0]:.1f})", flush=True)
    return modes


def report(modes: dict[str, Mode], baseline: str | None) -> dict[str, dict]:
    base = modes["detect-only"]
    print(f"\n{'mode':<40} {'images/s':>9} {'median ms':>10} {'CPU ms/img':>11} {'vs detect-only':>15}")
    results = {}
    for name, m in modes.items():
        ratio = statistics.median(a / b for a, b in zip(m.round_rates, base.round_rates))
        results[name] = {
            "images": m.images,
            "seconds": m.wall,
            "images_per_s": m.images / m.wall,
            "median_ms_per_image": 1000 * statistics.median(m.per_image),
            "cpu_ms_per_image": 1000 * m.cpu / m.images,
            "median_round_ratio_vs_detect_only": ratio,
        }
        r = results[name]
        print(f"{name:<40} {r['images_per_s']:>9.2f} {r['median_ms_per_image']:>10.1f} "
              f"{r['cpu_ms_per_image']:>11.1f} {ratio:>14.2f}x")
    if baseline is None:
        return results
    ref = modes[baseline]
    print(f"\nqueue against {baseline}, per round (median, p95 over {len(ref.round_walls)} rounds):")
    print(f"{'mode':<40} {'throughput':>11} {'wall overhead ms/photo':>24} {'CPU overhead ms/photo':>23}")
    for name, m in modes.items():
        if not name.startswith("queue"):
            continue
        ratios = [a / b for a, b in zip(m.round_rates, ref.round_rates)]
        wall = [1000 * (a - b) for a, b in zip(m.round_walls, ref.round_walls)]
        cpu = [1000 * (a - b) for a, b in zip(m.round_cpus, ref.round_cpus)]
        results[name].update(ratio_vs_in_process=statistics.median(ratios), wall_overhead_ms=_stats(wall),
                             cpu_overhead_ms=_stats(cpu))
        print(f"{name:<40} {statistics.median(ratios):>10.2f}x {_fmt(wall):>24} {_fmt(cpu):>23}")
    print("\nCPU ms per photo, by process (PostgreSQL's server not included):")
    for name, m in modes.items():
        if m.parts:
            shares = {part: 1000 * seconds / m.images for part, seconds in m.parts.items()}
            results[name]["cpu_ms_per_image_by_process"] = shares
            print(f"{name:<40} " + ", ".join(f"{part} {ms:.1f}" for part, ms in shares.items()))
    return results


def compare_profiles(modes: dict[str, Mode], profiles: list[str]) -> None:
    """Each profile's ingest rate against the first profile's, same backend, per round."""
    for name, m in modes.items():
        for profile in profiles[1:]:
            if f" {profile} (" in name:
                ref = modes[name.replace(f" {profile} (", f" {profiles[0]} (")]
                ratios = [a / b for a, b in zip(m.round_rates, ref.round_rates)]
                print(f"{name} against {profiles[0]}: images/s ratio per round median {statistics.median(ratios):.3f}, "
                      f"overall {m.images / m.wall / (ref.images / ref.wall):.3f}; CPU ms/photo "
                      f"{1000 * m.cpu / m.images:.1f} against {1000 * ref.cpu / ref.images:.1f}")


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"median": statistics.median(ordered), "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]}


def _fmt(values: list[float]) -> str:
    s = _stats(values)
    return f"{s['median']:.1f} (p95 {s['p95']:.1f})"


def check_queue_results(services: dict[str, object], baseline: str, photos: list[Path]) -> None:
    """Every queue database holds every photo once, with the vectors in-process ingest stored."""
    reference = dict(zip(*services[baseline].queries.stored_vectors()))
    for name, service in services.items():
        if name.startswith("queue"):
            stored = dict(zip(*service.queries.stored_vectors()))
            assert sorted(stored) == sorted(p.name for p in photos), f"{name}: not every photo exactly once"
            equal = sum(np.array_equal(stored[k], v) for k, v in reference.items())
            print(f"{name}: {len(stored)} photos, each once; vectors equal to in-process ingest: {equal}/{len(reference)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of photos (default: coco_dev)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N photos")
    parser.add_argument("--rounds", type=int, default=8, help="split the photos into this many rounds")
    parser.add_argument("--weights-dir", type=Path, default=REPO / "data" / "weights")
    parser.add_argument("--postgres-url", default=DEFAULT_PG, help="server to create the fresh database on")
    parser.add_argument("--profiles", default="balanced",
                        help="comma-separated DETECT_PROFILE values to ingest with, e.g. legacy,balanced (same rounds)")
    parser.add_argument("--detect-workers", default="2", help="comma-separated detection concurrency levels to compare")
    parser.add_argument("--queue-workers", default="1,2", help="comma-separated numbers of queue workers ('' for none)")
    parser.add_argument("--worker-concurrency", type=int, default=0,
                        help="detections at once per worker (default: WORKER_CONCURRENCY's default, one per core)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    photos = sorted(args.images.glob("*.jpg"))
    if args.limit:
        photos = photos[: args.limit]
    if not photos:
        raise SystemExit(f"no .jpg photos in {args.images}")
    load_start = os.getloadavg()
    with ExitStack() as stack:
        runners, outside, services = build_runners(args, stack)
        print(f"dataset: {args.images} ({len(photos)} photos, {args.rounds} rounds); cpus={os.cpu_count()}; "
              f"load average at start {load_start[0]:.1f} / {load_start[1]:.1f} / {load_start[2]:.1f}", flush=True)
        modes = run_rounds(args, photos, runners, outside)
        baseline = next((n for n in runners if n.startswith("ingest-postgresql") and f"={os.cpu_count()}" in n),
                        next((n for n in runners if n.startswith("ingest-postgresql")), None))
        results = report(modes, baseline if outside else None)
        compare_profiles(modes, args.profiles.split(","))
        if outside and baseline:
            check_queue_results(services, baseline, photos)
    load_end = os.getloadavg()
    print(f"load average at end {load_end[0]:.1f} / {load_end[1]:.1f} / {load_end[2]:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"dataset": str(args.images), "photos": len(photos), "load_average":
                                         {"start": load_start, "end": load_end}, "results": results}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
