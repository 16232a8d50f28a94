"""How box evidence becomes a class value, and what the detection profiles cost and bring.

Part of the quality bench (``bench/ranking.py`` compares rankings on fixed vectors; this one
compares the vectors). On coco_dev (400 photos), for each aggregation of the candidates of
YOLOv5s (``recommender.detection.aggregate``: max, noisy-OR after NMS, top-2 mean, and
variants of noisy-OR) and each set of detector passes (640; 640 + its mirror image; 640 and
832, each with its mirror), it reports NDCG@30 / P@30 / mAP@30 with the service's ranking
(calibrated Ochiai through the real ``NeighborIndex``), the calibration constants (a, b) as
chosen on all of coco_dev, and a split-half check: for 50 random halvings of the queries,
(a, b) is chosen on one half for both the variant and today's ``max`` (same grid) and the
NDCG@30 gain is scored on the other half. Mean, 5th and 95th percentile of the gain are given.
A variant whose 5th percentile is not above 0 is no measured improvement.

The model's raw candidates (objectness ≥ 0.001, float16, plus each class's exact maximum) are
computed once per pass and cached in --cache (never in the repository), so every variant is
cheap to evaluate. The ms/photo of each profile come from ``bench/detect.py``-style timing in
this process: the shipped detectors, interleaved photo by photo, median and p95.

    .venv/bin/python bench/aggregation.py [--cache /tmp/recommender-bench/raw] [--only max,noisy-or]
    .venv/bin/python bench/aggregation.py --timing 100 --timing-only
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recommender.detection.aggregate import class_values
from recommender.evaluation import evaluate_rankings, load_labels, rank_gallery
from recommender.vectors import calibrated_ranking, presence_probability

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared")) / "data"
PASSES = {"640": ((640, False),), "640+flip": ((640, False), (640, True)),
          "640+832+flip": ((640, False), (640, True), (832, False), (832, True))}
OFFSETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0)
SLOPES = (0.8, 1.0, 1.15, 1.3, 1.45, 1.6, 1.8)
K = 30


# ------------------------------------------------------------------------------ raw cache


class RawPass:
    """Candidates of every photo for one (input size, mirrored) pass, read from the cache."""

    def __init__(self, path: Path) -> None:
        data = np.load(path)
        self.names = [str(n) for n in data["names"]]
        self.maxima = data["maxima"]
        self.rows = data["rows"]
        self.offsets = data["offsets"]

    def photo(self, i: int) -> np.ndarray:
        return self.rows[self.offsets[i] : self.offsets[i + 1]].astype(np.float32)


def raw_pass(images: list[Path], cache: Path, weights_dir: Path, size: int, flip: bool) -> RawPass:
    path = cache / f"yolov5s_{size}{'_flip' if flip else ''}_coco_dev.npz"
    if path.is_file():
        found = RawPass(path)
        if found.names == [p.name for p in images]:
            return found
    from recommender.detection.yolov5 import YoloV5Detector
    from recommender.images import read_image_file

    detector = YoloV5Detector(weights_dir)
    maxima, parts, started = [], [], time.perf_counter()
    for i, image in enumerate(images, 1):
        candidates = detector.candidates(read_image_file(image).rgb, size, flip=flip)
        maxima.append(class_values(candidates))
        parts.append(candidates[candidates[:, 4] >= 0.001].astype(np.float16))
        if i % 100 == 0:
            print(f"  {path.stem}: {i}/{len(images)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    cache.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    np.savez(path, names=np.array([p.name for p in images]), maxima=np.stack(maxima), rows=np.concatenate(parts),
             offsets=offsets)
    return RawPass(path)


# ----------------------------------------------------------------------------- variants

Aggregate = Callable[[np.ndarray], np.ndarray]


def _shipped(aggregation: str, **kwargs) -> Aggregate:
    return lambda candidates: class_values(candidates, aggregation=aggregation, **kwargs)


AGGREGATES: dict[str, Aggregate] = {
    "max": _shipped("max"),
    "noisy-or": _shipped("noisy-or"),
    "top2-mean": _shipped("top2-mean"),
    "noisy-or floor=0.002": _shipped("noisy-or", floor=0.002),
    "noisy-or floor=0.01": _shipped("noisy-or", floor=0.01),
    "noisy-or 3 boxes": _shipped("noisy-or", max_boxes=3),
    "noisy-or 5 boxes": _shipped("noisy-or", max_boxes=5),
    "noisy-or iou=0.3": _shipped("noisy-or", iou_threshold=0.3),
    "noisy-or iou=0.6": _shipped("noisy-or", iou_threshold=0.6),
    "noisy-or p*sqrt(o)": lambda c: class_values(_sqrt_objectness(c), aggregation="noisy-or"),
}


def _sqrt_objectness(candidates: np.ndarray) -> np.ndarray:
    """Box score p(c)·√o instead of p(c)·o: objectness counts less."""
    changed = candidates.copy()
    changed[:, 4] = np.sqrt(changed[:, 4])
    return changed


def vectors_of(passes: list[RawPass], aggregate: Aggregate, exact_max: bool, noisy_or: bool = False) -> np.ndarray:
    """Mean over the passes of each photo's class values (the exact maxima for ``max``)."""
    per_pass = []
    for raw in passes:
        if exact_max:
            per_pass.append(raw.maxima)
        else:
            values = np.stack([aggregate(raw.photo(i)) for i in range(len(raw.names))])
            # Noisy-OR is never below the maximum, which may come from a candidate under the
            # cache's objectness cut.
            per_pass.append(np.maximum(values, raw.maxima) if noisy_or else values)
    return np.mean(per_pass, axis=0).astype(np.float32)


# ------------------------------------------------------------------------------ scoring


class Scored:
    """Per-query NDCG@30 of one set of vectors under every calibration (a, b) of the grid.

    For the grid, the Ochiai similarity is ranked by brute force in numpy (same order as the
    index: highest similarity first, ties by gallery position) and NDCG comes from one
    relevance matrix (the Jaccard relevance and ideal DCG of ``evaluate_rankings``); 56
    calibrations × 50 splits stay cheap. Reported scores go through the real index
    (``rank_gallery``) and ``evaluate_rankings``.
    """

    def __init__(self, names: list[str], vectors: np.ndarray, labels: dict[str, list[str]]) -> None:
        self.names, self.vectors, self.labels = names, vectors, labels
        self.queries = [n for n in names if labels[n]]
        self.grid = [(a, b) for a in OFFSETS for b in SLOPES]
        relevance, ideal, position = _relevance(names, labels)
        rows = np.array([position[q] for q in self.queries])
        discounts = 1.0 / np.log2(np.arange(2, K + 2))
        self.per_query = {}
        for ab in self.grid:
            p = presence_probability(vectors, *ab)
            totals = p.sum(axis=1)
            similarity = (p @ p.T) / np.sqrt(np.maximum(np.outer(totals, totals), 1e-300))
            np.fill_diagonal(similarity, -np.inf)
            returned = np.argsort(-similarity[rows], axis=1, kind="stable")[:, :K]
            dcg = np.take_along_axis(relevance[rows], returned, axis=1) @ discounts
            self.per_query[ab] = np.divide(dcg, ideal[rows], out=np.zeros_like(dcg), where=ideal[rows] > 0)

    def best(self, rows: np.ndarray | None = None) -> tuple[float, float]:
        return max(self.grid, key=lambda ab: float(np.mean(self.per_query[ab][rows] if rows is not None else self.per_query[ab])))

    def scores(self, ab: tuple[float, float]):
        ranked = rank_gallery(self.names, self.vectors, self.queries, K, calibrated_ranking(*ab))
        return evaluate_rankings(ranked, self.labels, K)


def _relevance(names: list[str], labels: dict[str, list[str]]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Jaccard relevance between gallery images (the query itself 0) and each query's ideal DCG@30."""
    categories = sorted({c for n in names for c in labels[n]})
    matrix = np.array([[c in set(labels[n]) for c in categories] for n in names], dtype=np.float64)
    sizes = matrix.sum(axis=1)
    intersection = matrix @ matrix.T
    union = sizes[:, None] + sizes[None, :] - intersection
    relevance = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
    np.fill_diagonal(relevance, 0.0)
    best = -np.sort(-relevance, axis=1)[:, :K]
    ideal = best @ (1.0 / np.log2(np.arange(2, best.shape[1] + 2)))
    return relevance, ideal, {n: i for i, n in enumerate(names)}


def split_half(variant: Scored, baseline: Scored, rounds: int = 50) -> tuple[float, float, float]:
    """Gain in NDCG@30 over ``baseline`` on held-out halves, each side's (a, b) tuned on the other half."""
    rng = np.random.default_rng(0)
    n = len(variant.queries)
    gains = []
    for _ in range(rounds):
        order = rng.permutation(n)
        tune, test = order[: n // 2], order[n // 2 :]
        mine, theirs = variant.best(tune), baseline.best(tune)
        gains.append(float(variant.per_query[mine][test].mean() - baseline.per_query[theirs][test].mean()))
    return float(np.mean(gains)), float(np.percentile(gains, 5)), float(np.percentile(gains, 95))


# ------------------------------------------------------------------------------- timing


def timing(images: list[Path], weights_dir: Path, count: int) -> dict[str, tuple[float, float]]:
    """Median and p95 ms per photo of each shipped YOLOv5s entry, interleaved photo by photo."""
    from recommender.detection import SPECS, create_detector
    from recommender.images import read_image_file

    detectors = {name: create_detector(spec, weights_dir) for name, spec in SPECS.items() if spec.model == "yolov5s"}
    for detector in detectors.values():
        detector.load()
    seconds: dict[str, list[float]] = {name: [] for name in detectors}
    for i, image in enumerate(images[:count]):
        rgb = read_image_file(image).rgb
        names = list(detectors)
        for name in names[i % len(names) :] + names[: i % len(names)]:  # rotate who goes first
            started = time.perf_counter()
            detectors[name].detect(rgb)
            seconds[name].append(time.perf_counter() - started)
    return {name: (1000 * float(np.median(s)), 1000 * float(np.percentile(s, 95))) for name, s in seconds.items()}


# --------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/recommender-bench/raw"))
    parser.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "data" / "weights")
    parser.add_argument("--timing", type=int, default=0, help="also time the shipped entries on this many photos")
    parser.add_argument("--only", default="", help="comma-separated aggregations to evaluate (default: all)")
    parser.add_argument("--timing-only", action="store_true", help="only the timing (with --timing)")
    args = parser.parse_args()

    labels = load_labels(SHARED / "coco_dev" / "labels.json")
    images = sorted((SHARED / "coco_dev" / "images").glob("*.jpg"))
    if not args.timing_only:
        quality(args, images, labels)
    if args.timing:
        for name, (median, p95) in timing(images, args.weights_dir, args.timing).items():
            print(f"{name:28s} median {median:6.1f} ms/photo, p95 {p95:6.1f}")


def quality(args: argparse.Namespace, images: list[Path], labels: dict[str, list[str]]) -> None:
    raw = {key: raw_pass(images, args.cache, args.weights_dir, *key) for p in PASSES.values() for key in p}
    names = [p.name for p in images]
    chosen = [a for a in args.only.split(",") if a] or list(AGGREGATES)
    baseline = Scored(names, vectors_of([raw[(640, False)]], AGGREGATES["max"], True), labels)
    print(f"{'aggregation':22s} {'passes':14s} {'a':>5s} {'b':>5s}  NDCG / P / mAP @{K}   split-half gain vs max@640 "
          "(mean, 5th..95th pct)")
    today = baseline.scores((1.75, 1.3))
    print(f"{'max (today, as shipped)':22s} {'640':14s} {1.75:5.2f} {1.3:5.2f}  {today.ndcg:.4f} / {today.precision:.4f} / "
          f"{today.map:.4f}")
    shipped: dict[str, Scored] = {}
    for passes_name, passes in PASSES.items():
        for aggregation in chosen:
            vectors = vectors_of([raw[key] for key in passes], AGGREGATES[aggregation], aggregation == "max",
                                 aggregation.startswith("noisy-or"))
            scored = Scored(names, vectors, labels)
            if aggregation == "noisy-or":
                shipped[passes_name] = scored
            ab = scored.best()
            s = scored.scores(ab)
            mean, low, high = split_half(scored, baseline)
            print(f"{aggregation:22s} {passes_name:14s} {ab[0]:5.2f} {ab[1]:5.2f}  {s.ndcg:.4f} / {s.precision:.4f} / "
                  f"{s.map:.4f}   {mean:+.4f} ({low:+.4f} .. {high:+.4f})", flush=True)
    if len(shipped) == len(PASSES):  # does the second scale earn its passes? (same split-half check)
        mean, low, high = split_half(shipped["640+832+flip"], shipped["640+flip"])
        print(f"noisy-or, 640+832+flip against 640+flip: NDCG@{K} gain {mean:+.4f} ({low:+.4f} .. {high:+.4f})")


if __name__ == "__main__":
    main()
