"""Query latency of NeighborIndex (BallTree) against a NumPy brute-force baseline.

Dataset: rows of the reference Mask R-CNN vectors (maskrcnn_reference_vectors.npz, 5000
real COCO images) resampled with replacement to n vectors, indexed with a ranking's index
transform; resampling keeps the exact duplicates a real collection has (optional --jitter
breaks them). Every query is an indexed image, mapped with the ranking's query transform as
the service does and excluded from its own results, so page 1 of 30 asks the index for 31
neighbours. ``--rankings`` compares the service's ranking (calibrated-ochiai, whose query
and index points differ) with the previous one (sqrt-cosine) in the same run. Both methods return identical pages (checked on every query): the
baseline ranks all n by a matrix-vector product, cuts with argpartition, and resolves the
boundary ties with the same exact re-scoring the index uses.

    .venv/bin/python bench/query.py --sizes 10000,100000,1000000

BLAS runs single-threaded unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS are set: a web server
answers requests on several threads at once, and a multi-threaded matrix-vector product per
request then oversubscribes the cores (measured 20x slower on a busy 2-core machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the BLAS thread settings, which it reads at import)
import scipy.sparse  # noqa: E402

from recommender.index import DISTANCE_GRID, NeighborIndex, distance_keys  # noqa: E402
from recommender.vectors import RANKINGS, Ranking  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VECTORS = (
    Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared")) / "data" / "maskrcnn_reference_vectors.npz"
)


class BruteForce:
    """Exact paged k-NN by scanning all vectors; the same ordering contract as NeighborIndex.

    ``sparse=False``: dense matrix-vector product. ``sparse=True``: the same product on a CSC
    copy, touching only the ~3 non-zero classes per image instead of all 81 columns.
    """

    def __init__(self, ids: np.ndarray, vectors: np.ndarray, sparse: bool = False) -> None:
        self.ids = ids
        self.vectors = vectors
        self.matrix = scipy.sparse.csc_matrix(vectors) if sparse else vectors
        self.sq_norms = np.einsum("ij,ij->i", vectors, vectors)
        self.row_of = {int(i): r for r, i in enumerate(ids.tolist())}

    def query(self, q: np.ndarray, page: int, per_page: int, exclude_id: int | None):
        d2 = self.sq_norms - 2.0 * (self.matrix @ q) + q @ q
        excluded = self.row_of.get(exclude_id, -1) if exclude_id is not None else -1
        if excluded >= 0:
            d2[excluded] = np.inf
        total = len(self.ids) - int(excluded >= 0)
        start = (page - 1) * per_page
        if start >= total:
            return np.empty(0, np.int64), np.empty(0), total
        k = min(page * per_page, total)
        kth = np.partition(d2, k - 1)[k - 1]
        # |x|^2 - 2x.q + |q|^2 loses absolute precision near 0; the margin covers it and the grid.
        rows = np.flatnonzero(d2 <= kth + 1e-9 + 2 * DISTANCE_GRID)
        keys = distance_keys(self.vectors[rows], q)
        order = np.lexsort((self.ids[rows], keys))[start:k]
        return self.ids[rows][order], np.sqrt(keys[order] * 2.0**-32), total


def load_dataset(
    path: Path, n: int, jitter: float, rng: np.random.Generator, ranking: Ranking
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, indexed points, query points) of n resampled reference vectors."""
    if not path.is_file():
        sys.exit(f"reference vectors not found at {path}; pass --vectors or set SHARED_DIR")
    raw = np.load(path)["vectors"].astype(np.float64)
    sample = raw[rng.integers(0, raw.shape[0], n)]
    if jitter > 0:
        # Perturb only detected classes, so absent classes stay absent as in real vectors.
        present = sample > 0
        sample[present] *= 1.0 + jitter * rng.standard_normal(int(present.sum()))
        np.clip(sample, 0.0, 1.0, out=sample)
    ids = rng.permutation(n).astype(np.int64) + 1
    return ids, ranking.index_transform(sample), ranking.query_transform(sample)


def timed(fn, *args, **kw):
    start = time.perf_counter()
    out = fn(*args, **kw)
    return time.perf_counter() - start, out


def percentile_ms(samples: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1e3, p))


def run_size(n: int, args: argparse.Namespace, ranking: Ranking) -> dict[str, float]:
    rng = np.random.default_rng(args.seed)
    ids, vectors, queries = load_dataset(args.vectors, n, args.jitter, rng, ranking)
    distinct = len(np.unique(vectors, axis=0)) if n <= 200_000 else float("nan")

    build_s, index = timed(NeighborIndex.build, ids, vectors)
    baselines = {"brute": BruteForce(ids, vectors), "sparse": BruteForce(ids, vectors, sparse=True)}

    query_rows = rng.integers(0, n, args.queries)
    row = {"n": n, "distinct": distinct, "build_tree_s": build_s}
    for label, page in (("p1", 1), ("deep", args.deep_page)):
        times: dict[str, list[float]] = {"tree": [], "brute": [], "sparse": []}
        for qi in query_rows:
            q, exclude = queries[qi], int(ids[qi])
            t_tree, res = timed(index.query, q, page=page, per_page=args.per_page, exclude_id=exclude)
            times["tree"].append(t_tree)
            for name, baseline in baselines.items():
                t, (b_ids, b_dist, b_total) = timed(baseline.query, q, page, args.per_page, exclude)
                same = np.array_equal(res.ids, b_ids) and np.array_equal(res.distances, b_dist)
                if not (same and res.total == b_total):
                    sys.exit(f"MISMATCH n={n} page={page} query row {qi}: index and {name} disagree")
                times[name].append(t)
        for name, samples in times.items():
            row[f"{label}_{name}_med"] = statistics.median(samples) * 1e3
            row[f"{label}_{name}_p95"] = percentile_ms(samples, 95)
    del index, baselines
    return row


def cell(row: dict[str, float], key: str) -> str:
    return f"{row[key + '_med']:>7.2f} / {row[key + '_p95']:>6.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated collection sizes")
    parser.add_argument("--queries", type=int, default=200, help="random queries per size and page")
    parser.add_argument("--per-page", type=int, default=30)
    parser.add_argument("--deep-page", type=int, default=10)
    parser.add_argument("--jitter", type=float, default=0.0, help="relative noise on detected scores (0 = off)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vectors", type=Path, default=DEFAULT_VECTORS)
    parser.add_argument(
        "--rankings", default="calibrated-ochiai,sqrt-cosine", help=f"comma-separated, from {', '.join(RANKINGS)}"
    )
    args = parser.parse_args()
    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    rankings = [RANKINGS[name] for name in args.rankings.split(",") if name]

    print(
        f"dataset: {args.vectors.name} resampled, jitter={args.jitter}, "
        f"{args.queries} queries/size, per_page={args.per_page} (+1 excluded query image), seed={args.seed}, "
        f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}"
    )
    print(
        "query latency in ms, median / p95. tree = NeighborIndex (BallTree); brute = NumPy dense "
        "matrix-vector + argpartition; sparse = SciPy CSC matrix-vector + argpartition.\n"
        "x = median ratio tree / baseline (>1: BallTree slower). All three return identical pages."
    )
    for n in sizes:
        for ranking in rankings:
            r = run_size(n, args, ranking)
            print(
                f"\nn = {r['n']:,}  ranking = {ranking.name}  distinct vectors = {r['distinct']}  "
                f"NeighborIndex.build = {r['build_tree_s']:.2f} s"
            )
            print(f"  {'page':>6} {'tree':>16} {'brute':>16} {'sparse':>16} {'x brute':>8} {'x sparse':>8}")
            for label, page in (("p1", 1), ("deep", args.deep_page)):
                print(
                    f"  {page:>6} {cell(r, label + '_tree')} {cell(r, label + '_brute')} {cell(r, label + '_sparse')} "
                    f"{r[label + '_tree_med'] / r[label + '_brute_med']:>8.2f} "
                    f"{r[label + '_tree_med'] / r[label + '_sparse_med']:>8.2f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
