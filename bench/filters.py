"""Filtered against unfiltered similarity queries, and searches by name, at 100,000 photos.

    .venv/bin/python bench/filters.py [--n 100000] [--rounds 200] [--sigma 1.0] [--http]

Builds a SQLite collection of n photos without running the detector (``synthetic.fill``: each
photo's vector a coco_dev YOLOv5s vector resampled with logit noise ``sigma``, one box per class
scoring at least 0.3), so the class masks and the class table come from the detections table
as in production. Then, through
the service (``Queries.similar`` / ``Queries.search``; with ``--http`` also through a real
``recommender serve``), each round picks a random query photo and runs every variant once,
in a shuffled order (interleaved, so load from other processes hits all variants alike).
Reports median and p95 in ms and the ratio of medians to the unfiltered query.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from recommender import bootstrap
from recommender.config import Settings
from recommender.objects import Ask
from synthetic import fill, name_of

REPO = Path(__file__).resolve().parents[1]
THRESHOLD = 0.3
VARIANTS = {
    "unfiltered": ("similar", Ask()),
    "with=dog": ("similar", Ask.of(with_="dog")),
    "with=person": ("similar", Ask.of(with_="person")),
    "without=person": ("similar", Ask.of(without="person")),
    "with=person&without=car,dog": ("similar", Ask.of(with_="person", without="car,dog")),
    "min_similarity=0.5": ("similar", Ask.of(min_similarity=0.5)),
    "with=person&min_similarity=0.5": ("similar", Ask.of(with_="person", min_similarity=0.5)),
    "add=dog&remove=person": ("similar", Ask.of(add="dog", remove="person")),
    "unfiltered, collapse=1": ("collapse", Ask()),
    "search q=dog": ("search", "dog"),
    "search q=person": ("search", "person"),
    "search q=person car -dog": ("search", "person car -dog"),
}
HTTP_PARAMS = {"unfiltered": "", "with=dog": "with=dog", "with=person": "with=person", "without=person": "without=person",
               "with=person&min_similarity=0.5": "with=person&min_similarity=0.5"}


def class_table_seconds(settings: Settings) -> float:
    from recommender.classtable import ClassTable
    from recommender.storage import Repository

    repository = Repository(bootstrap.open_database(settings))
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        ClassTable.build(*repository.shown_classes("yolov5s", THRESHOLD))
        samples.append(time.perf_counter() - start)
    repository.close()
    return statistics.median(samples)


def run(service, variant, name: str) -> float:
    kind, arg = variant
    start = time.perf_counter()
    if kind == "search":
        service.queries.search(arg, 1, 30)
    else:
        service.queries.similar(name, 1, 30, arg, kind == "collapse")
    return time.perf_counter() - start


def report(label: str, times: dict[str, list[float]]) -> None:
    base = statistics.median(times["unfiltered"])
    print(f"\n{label}\n| query | median ms | p95 ms | median / unfiltered |\n|---|---|---|---|")
    for key, samples in times.items():
        ms = sorted(1000 * t for t in samples)
        print(f"| {key} | {statistics.median(ms):.2f} | {ms[int(0.95 * (len(ms) - 1))]:.2f} | "
              f"{statistics.median(samples) / base:.2f} |")


def http_times(settings: Settings, weights: Path, names: list[str], rounds: int) -> dict[str, list[float]]:
    port = 5000 + random.randrange(1000, 9000)
    env = {**os.environ, "DATA_DIR": str(settings.data_dir), "WEIGHTS_DIR": str(weights), "PORT": str(port),
           "WEB_WORKERS": "1"}
    server = subprocess.Popen([str(Path(sys.executable).with_name("recommender")), "serve"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if json.loads(urllib.request.urlopen(f"{url}/healthz", timeout=2).read())["status"] == "ok":
                    break
            except OSError:
                pass
            time.sleep(0.5)
        times: dict[str, list[float]] = {k: [] for k in HTTP_PARAMS}
        for r in range(rounds):
            order = list(HTTP_PARAMS.items())
            random.shuffle(order)
            for key, params in order:
                start = time.perf_counter()
                urllib.request.urlopen(f"{url}/get_similar/{names[r % len(names)]}?{params}", timeout=30).read()
                times[key].append(time.perf_counter() - start)
        return times
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--http", action="store_true")
    parser.add_argument("--weights", type=Path, default=REPO / "data" / "weights")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="filters-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        print(f"filled: {fill(settings, args.n, args.sigma, args.weights)}", flush=True)
        service = bootstrap.build(settings)
        started = time.perf_counter()
        service.collection.current()
        print(f"index and class table loaded in {time.perf_counter() - started:.2f} s", flush=True)
        print(f"of which the class table (read + build), median of 3: {class_table_seconds(settings):.2f} s", flush=True)
        rng = random.Random(1)
        names = [name_of(rng.randrange(1, args.n + 1)) for _ in range(args.rounds)]
        times: dict[str, list[float]] = {k: [] for k in VARIANTS}
        for name in names[:5]:  # warm-up
            for variant in VARIANTS.values():
                run(service, variant, name)
        for name in names:
            order = list(VARIANTS.items())
            rng.shuffle(order)
            for key, variant in order:
                times[key].append(run(service, variant, name))
        counts = {c.name: c.images for c in service.queries.classes()}
        print(f"photos showing: person {counts['person']}, car {counts['car']}, dog {counts['dog']}")
        service.close()
        report(f"Through the service (Queries), {args.n} photos, page 1 of 30, {args.rounds} rounds", times)
        if args.http:
            report(f"Over HTTP (recommender serve, 1 web worker), {args.n} photos",
                   http_times(settings, args.weights, names, args.rounds))


if __name__ == "__main__":
    main()
