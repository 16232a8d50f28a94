"""Where the time of one similar-photos request goes, in process, per backend and size.

    .venv/bin/python bench/request_path.py [--n 100000 1000000] [--backend sqlite postgresql]
                                           [--queries 300]

Uses the collections of ``bench/scale.py`` (built there, reused here from ``--cache``) and the
service as the composition root builds it (``bootstrap.build``), without HTTP. For random
photos it times, interleaved over every (backend, n) in a shuffled order each round:

* ``similar``: the whole use case the view calls (``queries.similar``, page 1);
* ``checkout``: taking a connection for the request's reads and giving it back;
* ``by name``: the asked photo's row, vector and shown classes;
* ``index``: the index query for page 1;
* ``refs``: the page's names and hashes (30 ids).

Medians and p95 in ms; the load average is printed (the machine is shared). The stages run on their own, so they need not add up to ``similar``.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path

from http_latency import _loadavg, summary
from recommender import bootstrap
from recommender.service import DISPLAY_THRESHOLD
from scale import prepare
from synthetic import name_of

REPO = Path(__file__).resolve().parents[1]
STAGES = ("similar", "checkout", "by name", "index", "refs")


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def stages(service, n: int, rng: random.Random) -> dict[str, float]:
    """Seconds of each stage for one random photo of an n-photo collection."""
    name = name_of(rng.randrange(n))
    repository, queries = service._repository, service.queries  # noqa: SLF001 (a bench looks inside)
    snapshot = service.collection.current()
    out = {"similar": _timed(lambda: queries.similar(name, 1, 30))}

    def checkout() -> None:
        with repository.page_reader():
            pass

    out["checkout"] = _timed(checkout)
    with repository.page_reader() as reader:
        found = {}
        out["by name"] = _timed(lambda: found.update(row=reader.image_by_name(name, snapshot.detector, DISPLAY_THRESHOLD)))
        record, vector, _classes = found["row"]
        u = snapshot.ranking.query_transform(vector)
        result = {}
        out["index"] = _timed(lambda: result.update(r=snapshot.index.query(u, page=1, per_page=30, exclude_id=record.id)))
        ids = result["r"].ids.tolist()
        out["refs"] = _timed(lambda: reader.refs_by_id(ids))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--backend", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--sigma", type=float, default=1.0)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", REPO / "data" / "weights")))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/scale-bench"))
    args = parser.parse_args()
    rng = random.Random(0)
    services = {}
    for backend in args.backend:
        for n in args.n:
            built = prepare(backend, n, args.sigma, args.weights, args.cache)
            service = bootstrap.build(built.settings)
            service.collection.current()  # load (or map) the index before timing
            services[(backend, n)] = service
    times = {key: {stage: [] for stage in STAGES} for key in services}
    keys = list(services)
    for _ in range(20):  # warm-up: caches, prepared statements
        for key in keys:
            stages(services[key], key[1], rng)
    for _ in range(args.queries):
        rng.shuffle(keys)
        for key in keys:
            for stage, ms in stages(services[key], key[1], rng).items():
                times[key][stage].append(ms)
    print(f"load average {_loadavg()}; {args.queries} requests each, page 1, 30 per page; median / p95 ms")
    print(f"{'backend':<11} {'n':>9} " + " ".join(f"{s:>15}" for s in STAGES))
    for (backend, n), measured in sorted(times.items()):
        cells = []
        for stage in STAGES:
            s = summary(measured[stage])
            cells.append(f"{s['median_ms']:7.2f} / {s['p95_ms']:5.2f}")
        print(f"{backend:<11} {n:>9} " + " ".join(f"{c:>15}" for c in cells))
    for service in services.values():
        service.close()


if __name__ == "__main__":
    main()
