"""Exact top-k latency of the index kinds and of the alternatives issue 11 asks about.

Data (bench/index_data.py): YOLOv5s vectors of coco_dev resampled to n with logit noise,
sigma 0.2 ("clustered") and 1.0 ("spread", noise x5); indexed with ranking_transform, queried
with query_transform of an indexed photo, which is excluded from its own results.

Methods, all interleaved query by query in one process, in a new random order for each query
(the first method after a query's set-up would otherwise always pay for the cold caches):
  exact        the default index: uint8 scan with a bound + exact re-scoring, its scan split
               over as many threads as default_threads() gives (2 on a 2-core machine)
  exact-1t     the same index on one thread
  exact-hD     the default index with D rotated dimensions as codes instead of HEAD_DIMS
               (--head-dims; 81: every dimension, as many bytes as the scan before rotation)
  balltree     the design's scikit-learn BallTree (kind="balltree"; skipped above 1M)
  float32      NumPy float32 matrix-vector (BLAS, one thread) + bound + exact re-scoring
  csr          SciPy CSR of the values >= 0.03 + bound on the dropped part + exact re-scoring
  faiss-flat   faiss-cpu IndexFlatL2 + widening to the error band + exact re-scoring
Every exact method's page is checked against the default index (ids and distances); the run
stops on any difference. Then: filtered queries (a rare required class, "person" required,
"person" forbidden) against unfiltered ones on the default index, and with --ten-million a
10M comparison of the exact default with kind="ivf" (faiss IVF + SQ8, approximate, exact
re-scoring of its candidates), reporting recall@30 against the exact page.

    .venv/bin/python bench/query.py --sizes 100000,1000000 [--ten-million]

BLAS and faiss run single-threaded: a web server answers requests on several threads, and a
multi-threaded product per request oversubscribes the cores. The default index's scan shares
one pool of threads between requests, so it never multiplies threads.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the BLAS thread settings, which it reads at import)

from index_data import DEFAULT_CACHE, coco_dev_vectors, make_collection  # noqa: E402
from query_methods import FaissFlat, Float32Scan, ThresholdedScan  # noqa: E402
from recommender.classes import CLASS_NAMES  # noqa: E402
from recommender.index import build_index, load_snapshot, save_snapshot, warm_up  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SIGMAS = {"clustered": 0.2, "spread": 1.0}


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - start, out


def stats_ms(samples: list[float]) -> str:
    a = np.asarray(samples) * 1e3
    return f"{statistics.median(a):7.2f} / {np.percentile(a, 95):7.2f}"


def index_bytes(index) -> float:
    arrays = [index._ids, index._points, index._labels, index._sorted_ids, index._order, *index._engine.arrays().values()]
    return sum(a.nbytes for a in arrays) / max(1, len(index))


def _threads(index) -> str:
    n = index._engine.threads
    return "1 thread" if n == 1 else f"scan split over {n} threads"


def _head_dims(index) -> int:
    return int(index._engine.blocks.shape[1])


def _on_threads(index, threads: int):
    """The same index (same arrays) with its scan on ``threads`` threads."""
    other = copy.copy(index)
    other._engine = copy.copy(index._engine)
    other._engine.threads = threads
    return other


class IndexMethod:
    def __init__(self, name, index) -> None:
        self.name, self.index = name, index

    def query(self, q, page, per_page, exclude_id, **filters):
        r = self.index.query(q, page, per_page, exclude_id=exclude_id, **filters)
        return r.ids, r.distances, r.total


def compare(methods, coll, rows, page, per_page, check=True) -> dict[str, list[float]]:
    """Seconds per query of each method; every page is checked against the first method's."""
    times: dict[str, list[float]] = {m.name: [] for m in methods}
    order = np.random.default_rng(7)
    for row in rows:
        q, exclude = coll.query_points(np.array([row]))[0], int(coll.ids[row])
        pages = {}
        for i in order.permutation(len(methods)):
            m = methods[i]
            t, pages[m.name] = timed(m.query, q, page, per_page, exclude)
            times[m.name].append(t)
        want = pages[methods[0].name]
        for m in methods[1:]:
            ids, dist, _total = pages[m.name]
            if check and not (np.array_equal(ids, want[0]) and np.array_equal(dist, want[1])):
                sys.exit(f"MISMATCH: {m.name} differs from {methods[0].name} on row {row}, page {page}")
    return times


def run(n: int, sigma_name: str, args, seeds) -> None:
    coll = make_collection(seeds, n, SIGMAS[sigma_name], args.cache)
    points = np.ascontiguousarray(coll.points)
    build_s, index = timed(build_index, coll.ids, points, coll.labels)
    methods = [IndexMethod(f"exact (default: {_head_dims(index)} dimensions as codes, {_threads(index)})", index),
               IndexMethod("exact (default), on one thread", _on_threads(index, 1))]
    builds = {methods[0].name: build_s, methods[1].name: build_s}
    sizes = {methods[0].name: index_bytes(index), methods[1].name: index_bytes(index)}
    for dims in args.head_dims:
        t, variant = timed(build_index, coll.ids, points, coll.labels, head_dims=dims)
        methods.append(IndexMethod(f"exact, {dims} dimensions as codes, {_threads(variant)}", variant))
        builds[methods[-1].name], sizes[methods[-1].name] = t, index_bytes(variant)
    makers = [("float32", Float32Scan), ("csr", ThresholdedScan), ("faiss-flat", FaissFlat)]
    if n <= 1_000_000 and not args.no_balltree:
        makers.append(("balltree", lambda ids, pts: IndexMethod("balltree", build_index(ids, pts, coll.labels, kind="balltree"))))
    for _, make in makers:
        t, m = timed(make, coll.ids, points)
        methods.append(m)
        builds[m.name] = t
        sizes[m.name] = getattr(m, "bytes_per_vector", None) or (648 + 16 + 8 + 16)
    rows = np.random.default_rng(1).integers(0, coll.raw_queries.shape[0], args.queries)
    print(f"\n### n = {n:,}, {sigma_name} (sigma {SIGMAS[sigma_name]}), {args.queries} queries, per_page {args.per_page}")
    print("| method | page 1 median / p95 ms | page 5 median / p95 ms | bytes/vector | build s |")
    print("|---|---|---|---|---|")
    compare(methods, coll, rows[:5], 1, args.per_page)  # warm-up: page faults, caches
    results = {page: compare(methods, coll, rows, page, args.per_page) for page in (1, 5)}
    for m in methods:
        print(f"| {m.name} | {stats_ms(results[1][m.name])} | {stats_ms(results[5][m.name])} | {sizes[m.name]:.0f} | {builds[m.name]:.2f} |", flush=True)
    if sigma_name == "spread":
        filtered(index, coll, rows, args)
        changes(index, coll, rows, args)
    snapshot_times(index, args)


def filtered(index, coll, rows, args) -> None:
    freq = np.array([((coll.labels[:, c // 64] >> np.uint64(c % 64)) & np.uint64(1)).mean() for c in range(1, 81)])
    rare = int(np.argmin(np.where(freq > 0, np.abs(freq - 0.005), np.inf))) + 1
    person = 1
    variants = [
        ("unfiltered", {}),
        (f"require {CLASS_NAMES[rare]} ({freq[rare - 1]:.2%} of images)", {"require": [rare]}),
        (f"require person ({freq[0]:.1%})", {"require": [person]}),
        ("forbid person", {"forbid": [person]}),
    ]
    times: dict[str, list[float]] = {name: [] for name, _ in variants}
    for row in rows:
        q, exclude = coll.query_points(np.array([row]))[0], int(coll.ids[row])
        for name, filters in variants:
            t, _ = timed(index.query, q, 1, args.per_page, exclude_id=exclude, **filters)
            times[name].append(t)
    print("\n| filtered query, page 1, default index | median / p95 ms |\n|---|---|")
    for name, _ in variants:
        print(f"| {name} | {stats_ms(times[name])} |")


def changes(index, coll, rows, args) -> None:
    """Cost of with_changes on a large index, and of querying with a delta and tombstones."""
    rng = np.random.default_rng(2)
    pending = rng.choice(len(coll), 10_000, replace=False)
    busy = index.with_changes(coll.ids[pending[:5000]], coll.points[pending[5000:]], coll.labels[pending[5000:]],
                              remove_ids=coll.ids[pending[5000:]])
    step = [timed(busy.with_changes, [10**12 + i], coll.points[i : i + 1], remove_ids=[int(coll.ids[i])])[0] for i in range(50)]
    times = {"base only": [], "5,000 upserts + 5,000 tombstones": []}
    for row in rows:
        q, exclude = coll.query_points(np.array([row]))[0], int(coll.ids[row])
        for name, ix in (("base only", index), ("5,000 upserts + 5,000 tombstones", busy)):
            times[name].append(timed(ix.query, q, 1, args.per_page, exclude_id=exclude)[0])
    compact_s, _ = timed(busy.compacted)
    print(f"\nwith_changes (1 upsert + 1 delete) on that index: median {statistics.median(step) * 1e3:.2f} ms; "
          f"compacted(): {compact_s:.2f} s")
    for name, samples in times.items():
        print(f"query page 1, {name}: {stats_ms(samples)} ms")


def snapshot_times(index, args) -> None:
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        save_s, _ = timed(save_snapshot, index, tmp, {"position": 1})
        load_s, (loaded, _) = timed(load_snapshot, tmp)
        unverified_s, _ = timed(load_snapshot, tmp, verify=False)
    print(f"\nsnapshot: save {save_s:.2f} s, load (mmap + crc32) {load_s:.3f} s, load without crc32 {unverified_s:.3f} s")


def ten_million(args, seeds) -> None:
    """Exact default vs faiss IVF at 10M (about 2.5 GB of RAM plus 3.2 GB of mapped points)."""
    n = 10_000_000
    coll = make_collection(seeds, n, SIGMAS["spread"], args.cache)
    # The points are a read-only memory map: the index uses them in place, without a copy.
    build_s, index = timed(build_index, coll.ids, coll.points, coll.labels)
    exact = IndexMethod(f"exact (default: {_head_dims(index)} dimensions as codes, {_threads(index)})", index)
    variants = []
    for dims in args.head_dims:
        variant = build_index(coll.ids, coll.points, coll.labels, head_dims=dims)
        variants.append(IndexMethod(f"exact, {dims} dimensions as codes, {_threads(variant)}", variant))
    print(f"\n### n = 10,000,000, spread; exact build {build_s:.1f} s ({args.queries} queries)")
    print("| method | page 1 median / p95 ms | recall@30 vs exact (mean, worst) | bytes/vector |\n|---|---|---|---|")
    rows = np.random.default_rng(1).integers(0, coll.raw_queries.shape[0], args.queries)
    compare([exact, *variants], coll, rows[:3], 1, args.per_page)
    times = compare([exact, *variants], coll, rows, 1, args.per_page)
    for m in (exact, *variants):
        print(f"| {m.name} | {stats_ms(times[m.name])} | 1 | {index_bytes(m.index):.0f} |")
    if not args.nprobes:
        return
    ivf_s, ivf_index = timed(build_index, coll.ids, coll.points, coll.labels, kind="ivf", nlist=args.nlist)
    ivf = IndexMethod("ivf", ivf_index)
    ix = ivf_index
    base_bytes = sum(a.nbytes for a in (ix._ids, ix._points, ix._labels, ix._sorted_ids, ix._order)) / len(ix)
    ivf_bytes = base_bytes + ix._engine.index.sa_code_size() + 8  # faiss: code + id per vector
    for nprobe in args.nprobes:
        ivf_index._engine.nprobe = nprobe
        times, hits = [], []
        for row in rows:
            q, exclude = coll.query_points(np.array([row]))[0], int(coll.ids[row])
            _, (want, _, _) = timed(exact.query, q, 1, args.per_page, exclude)
            t, (got, _, _) = timed(ivf.query, q, 1, args.per_page, exclude)
            times.append(t)
            hits.append(len(set(want.tolist()) & set(got.tolist())) / len(want))
        print(
            f"| ivf nlist={args.nlist} nprobe={nprobe} (approx., built in {ivf_s:.0f} s) | {stats_ms(times)} | "
            f"{np.mean(hits):.4f}, {min(hits):.2f} | {ivf_bytes:.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--per-page", type=int, default=30)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--weights-dir", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", REPO_ROOT / "data" / "weights")))
    parser.add_argument("--head-dims", default="16,40,81", type=lambda s: [int(x) for x in s.split(",") if x],
                        help="variants of the default index with this many rotated dimensions as codes")
    parser.add_argument("--no-balltree", action="store_true", help="skip the BallTree (its 1M build takes ~15 s)")
    parser.add_argument("--ten-million", action="store_true", help="also compare exact and faiss IVF at 10M (~6 GB RAM)")
    parser.add_argument("--only-ten-million", action="store_true")
    parser.add_argument("--nlist", type=int, default=4096)
    parser.add_argument("--nprobes", default="16,64,256", type=lambda s: [int(x) for x in s.split(",") if x])
    args = parser.parse_args()
    seeds = coco_dev_vectors(args.cache, args.weights_dir)
    warm_up()
    print(f"cpu cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f} at start; times in ms, median / p95")
    if not args.only_ten_million:
        for n in [int(s) for s in args.sizes.split(",") if s]:
            for sigma_name in SIGMAS:
                run(n, sigma_name, args, seeds)
    if args.ten_million or args.only_ten_million:
        ten_million(args, seeds)


if __name__ == "__main__":
    main()
