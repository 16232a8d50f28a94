"""Retrieval quality of every ranking variant tried, on coco_dev and on held-out sets.

The metric is DESIGN.md's (Jaccard-relevance NDCG@30, P@30, mAP@30, mean over queries), every
gallery is ranked by the real ``NeighborIndex`` (``recommender.evaluation.evaluate_vectors``),
and every row is measured in the same run as the reference design's ranking (euclidean-raw),
so the last column is a like-for-like difference.

Datasets
  dev/yolo     coco_dev (400 photos) through the project's YOLOv5s detector (default detector);
               vectors are computed once and cached in --cache (never in the repository).
  dev/mrcnn    coco_dev, reference Mask R-CNN vectors (maskrcnn_reference_vectors.npz).
  held/mrcnn   held-out: the other 4600 COCO val2017 images of the reference vectors, labels
               from coco_val2017_labels.json. No coco_dev image or label is involved.
  held/yolo    held-out photos (holdout_sources.json) through YOLOv5s, only with --holdout-dir
               pointing at a folder holding them (they cannot be downloaded offline).
  dev/yolo@N   coco_dev through YOLOv5s with input size N, only with --sizes N,...
  dev/yolo+flip  coco_dev through YOLOv5s with horizontal-flip test-time augmentation (mean of
               the vectors of the photo and its mirror image), only with --flip: measures
               what the detector change would bring (it doubles detection time).

How the detector's box evidence becomes the class value (max, noisy-OR, top-2 mean) and what
the detection profiles bring is measured by ``bench/aggregation.py``; ``--aggregation`` here
ranks vectors of another aggregation (default: max, the vectors of the table in the README).

Then a split-half check of the calibration constants: for 50 random halvings of the coco_dev
queries, (a, b) is chosen on a grid by NDCG@30 on one half and scored on the other half,
against sqrt-cosine on the same half.

Fixed statistics some variants use (class frequencies, co-occurrences) come from the labels of
val2017 minus coco_dev, never from coco_dev's labels.

    .venv/bin/python bench/ranking.py [--cache /tmp/recommender-bench] [--holdout-dir DIR] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recommender.classes import CLASS_NAMES, NUM_CLASSES
from recommender.detection.aggregate import AGGREGATIONS
from recommender.evaluation import (
    RetrievalScores,
    evaluate_rankings,
    evaluate_vectors,
    load_labels,
    load_vectors,
    rank_gallery,
)
from recommender.vectors import (
    RANKINGS,
    Ranking,
    ochiai_index_points,
    ochiai_query_points,
    power_cosine,
    presence_probability,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared")) / "data"

Transform = Callable[[np.ndarray], np.ndarray]


# ------------------------------------------------------------------------------ data sets


def yolo_vectors(
    image_paths: list[Path], cache: Path, weights_dir: Path, flip: bool = False, input_size: int | None = None,
    aggregation: str = "max",
) -> tuple[list[str], np.ndarray]:
    """Raw class-presence vectors of the photos from the real YOLOv5s detector, cached.

    ``flip``: the mean of the vectors of each photo and of its mirror image.
    ``input_size``: longest side of the detector's input (default: the detector's default).
    The median time of a detector call is printed when the vectors are computed.
    """
    names = [p.name for p in image_paths]
    if cache.is_file():
        cached_names, vectors = load_vectors(cache)
        if cached_names == names:
            return names, vectors
    from recommender.detection.yolov5 import DEFAULT_INPUT_SIZE, YoloV5Detector
    from recommender.images import read_image_file
    from recommender.vectors import class_presence

    detector = YoloV5Detector(weights_dir, input_size=input_size or DEFAULT_INPUT_SIZE, aggregation=aggregation)
    rows, seconds = [], []
    started = time.perf_counter()
    for i, path in enumerate(image_paths, 1):
        rgb = read_image_file(path).rgb
        call = time.perf_counter()
        vector = class_presence(detector.detect(rgb))
        seconds.append(time.perf_counter() - call)
        if flip:
            vector = (vector + class_presence(detector.detect(np.ascontiguousarray(rgb[:, ::-1])))) / 2
        rows.append(vector)
        if i % 50 == 0 or i == len(image_paths):
            print(f"  detected {i}/{len(image_paths)} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    # The first call includes loading the model.
    print(
        f"  {cache.stem}: median {1000 * float(np.median(seconds[1:] or seconds)):.1f} ms per detector call",
        file=sys.stderr,
    )
    vectors = np.stack(rows).astype(np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, names=np.array(names), vectors=vectors)
    return names, vectors


def datasets(args: argparse.Namespace) -> dict[str, tuple[list[str], np.ndarray, dict[str, list[str]]]]:
    dev_labels = load_labels(SHARED / "coco_dev" / "labels.json")
    val_labels = load_labels(SHARED / "coco_val2017_labels.json")
    ref_names, ref_vectors = load_vectors(SHARED / "maskrcnn_reference_vectors.npz")
    dev_images = sorted((SHARED / "coco_dev" / "images").glob("*.jpg"))

    found: dict[str, tuple[list[str], np.ndarray, dict[str, list[str]]]] = {}
    tag = "" if args.aggregation == "max" else f"_{args.aggregation}"
    names, vectors = yolo_vectors(dev_images, args.cache / f"yolov5s{tag}_coco_dev.npz", args.weights_dir,
                                  aggregation=args.aggregation)
    found["dev/yolo"] = (names, vectors, dev_labels)
    if args.flip:
        names, vectors = yolo_vectors(dev_images, args.cache / "yolov5s_flip_coco_dev.npz", args.weights_dir, flip=True)
        found["dev/yolo+flip"] = (names, vectors, dev_labels)
    for size in args.sizes:
        names, vectors = yolo_vectors(
            dev_images, args.cache / f"yolov5s_{size}_coco_dev.npz", args.weights_dir, input_size=size
        )
        found[f"dev/yolo@{size}"] = (names, vectors, dev_labels)
    in_dev = np.array([n in dev_labels for n in ref_names])
    found["dev/mrcnn"] = ([n for n, d in zip(ref_names, in_dev) if d], ref_vectors[in_dev], dev_labels)
    held = {n: c for n, c in val_labels.items() if n not in dev_labels}
    found["held/mrcnn"] = ([n for n, d in zip(ref_names, in_dev) if not d], ref_vectors[~in_dev], held)
    if args.holdout_dir:
        sources = json.loads((SHARED / "holdout_sources.json").read_text())["images"]
        photos = [args.holdout_dir / n for n in sorted(sources) if (args.holdout_dir / n).is_file()]
        if photos:
            names, vectors = yolo_vectors(photos, args.cache / "yolov5s_holdout.npz", args.weights_dir)
            found["held/yolo"] = (names, vectors, {n: val_labels[n] for n in names})
        else:
            print(f"no held-out photo found in {args.holdout_dir}", file=sys.stderr)
    return found


# ------------------------------------------------------------------------------- variants


def class_frequencies(labels: dict[str, list[str]]) -> np.ndarray:
    """Share of images showing each class (Laplace-smoothed); index 0 (BG) is 0."""
    counts = np.zeros(NUM_CLASSES)
    for cats in labels.values():
        for c in set(cats):
            counts[CLASS_NAMES.index(c)] += 1
    freq = (counts + 1) / (len(labels) + 2)
    freq[0] = 0
    return freq


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _symmetric(name: str, description: str, transform: Transform) -> Ranking:
    return Ranking(name, description, transform, transform)


def calibrated_ochiai(offset: float, slope: float) -> Ranking:
    return Ranking(
        f"cal-ochiai a={offset:g} b={slope:g}",
        "calibrated Ochiai with other calibration constants",
        lambda v: ochiai_index_points(presence_probability(v, offset, slope)),
        lambda v: ochiai_query_points(presence_probability(v, offset, slope)),
    )


def variants(train_labels: dict[str, list[str]]) -> list[Ranking]:
    """Every ranking tried, the reference design's first and the service default last."""
    freq = class_frequencies(train_labels)
    idf = np.log(1 / np.where(freq > 0, freq, 1))
    found = [
        RANKINGS["euclidean-raw"],
        _symmetric("binary-cosine", "cosine on score > 0.5 as 0/1", lambda v: _unit((np.asarray(v) > 0.5) * 1.0)),
    ]
    for p in (0.25, 0.5, 0.75, 1.0, 2.0):
        found.append(_symmetric(f"pow{p:g}-cosine", f"cosine on scores^{p:g}", lambda v, p=p: power_cosine(v, p)))
    for a in (0.5, 1.0):
        found.append(
            _symmetric(
                f"sqrt-idf{a:g}-cosine",
                f"cosine on sqrt(score) x idf^{a:g} (val2017 minus coco_dev frequencies)",
                lambda v, a=a: _unit(np.sqrt(np.clip(v, 0, None)) * idf**a),
            )
        )
    found.append(
        _symmetric(
            "sqrt-centred-cosine",
            "cosine on sqrt(score) minus 1/4 of the gallery mean",
            lambda v: _unit(np.sqrt(np.clip(v, 0, None)) - 0.25 * np.sqrt(np.clip(v, 0, None)).mean(axis=0)),
        )
    )
    found.append(
        _symmetric(
            "sqrt-floor0.01-cosine",
            "cosine on sqrt(max(score - 0.01, 0)): drop the noise floor of the max over candidates",
            lambda v: power_cosine(np.clip(np.asarray(v, dtype=np.float64) - 0.01, 0, None), 0.5),
        )
    )
    found.append(_symmetric("calibrated-cosine", "cosine on calibrated probabilities", lambda v: _unit(presence_probability(v))))
    found.append(
        Ranking(
            "pow0.75-ochiai",
            "Ochiai on scores^0.75 without calibration",
            lambda v: ochiai_index_points(np.clip(v, 0, 1) ** 0.75),
            lambda v: ochiai_query_points(np.clip(v, 0, 1) ** 0.75),
        )
    )
    found.append(
        _symmetric(
            "cal-ochiai-symmetric",
            "the indexed embedding used on both sides (shows why the query side differs)",
            lambda v: ochiai_index_points(presence_probability(v)),
        )
    )
    for offset, slope in ((1.25, 1.3), (2.25, 1.3), (1.75, 1.0), (1.75, 1.6)):
        found.append(calibrated_ochiai(offset, slope))
    for name, ranking in RANKINGS.items():
        if name != "euclidean-raw":
            found.append(ranking)
    return found


def split_half_check(
    names: list[str], vectors: np.ndarray, labels: dict[str, list[str]], k: int, rounds: int = 50
) -> tuple[float, float, float]:
    """Mean, 5th and 95th percentile of the NDCG gain over sqrt-cosine on held-out halves."""
    grid = [calibrated_ochiai(a, b) for a in (1.0, 1.75, 2.5) for b in (1.0, 1.3, 1.6)]
    queries = [n for n in names if labels[n]]
    rankings = {r.name: rank_gallery(names, vectors, queries, k, r) for r in grid}
    baseline = rank_gallery(names, vectors, queries, k, RANKINGS["sqrt-cosine"])
    rng = np.random.default_rng(0)
    gains = []
    for _ in range(rounds):
        order = rng.permutation(len(queries))
        tune = [queries[i] for i in order[: len(order) // 2]]
        test = [queries[i] for i in order[len(order) // 2 :]]
        best = max(grid, key=lambda r: evaluate_rankings(rankings[r.name], labels, k, queries=tune).ndcg)
        gains.append(
            evaluate_rankings(rankings[best.name], labels, k, queries=test).ndcg
            - evaluate_rankings(baseline, labels, k, queries=test).ndcg
        )
    return float(np.mean(gains)), float(np.percentile(gains, 5)), float(np.percentile(gains, 95))


# ------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/recommender-bench"), help="where detector vectors are cached")
    parser.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "data" / "weights")
    parser.add_argument("--holdout-dir", type=Path, default=None, help="folder with the held-out COCO photos")
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--flip", action="store_true", help="also measure flip test-time augmentation (detects twice)")
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(v) for v in text.split(",") if v],
        default=[],
        help="also measure YOLOv5s at these input sizes, e.g. 512,576 (comma-separated)",
    )
    parser.add_argument("--aggregation", default="max", choices=AGGREGATIONS, help="class value of dev/yolo")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table (for the README)")
    args = parser.parse_args()

    data = datasets(args)
    val_labels = load_labels(SHARED / "coco_val2017_labels.json")
    dev_labels = load_labels(SHARED / "coco_dev" / "labels.json")
    train = {n: c for n, c in val_labels.items() if n not in dev_labels}
    table: dict[str, dict[str, RetrievalScores]] = {}
    started = time.perf_counter()
    for ranking in variants(train):
        table[ranking.name] = {
            set_name: evaluate_vectors(names, vectors, labels, k=args.k, ranking=ranking)
            for set_name, (names, vectors, labels) in data.items()
        }
        print(f"  {ranking.name} ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

    sets = list(data)
    baseline = table["euclidean-raw"]
    k = args.k
    if args.markdown:
        header = "| ranking | " + " | ".join(f"{s} NDCG / P / mAP @{k}" for s in sets) + " | ΔNDCG vs euclidean-raw |"
        print(header)
        print("|" + "---|" * (len(sets) + 2))
    else:
        print(f"{'ranking':24s}" + "".join(f"{s + ' NDCG/P/mAP@' + str(k):>28s}" for s in sets) + "   ΔNDCG vs euclidean-raw")
    for name, row in table.items():
        cells = [f"{row[s].ndcg:.3f} / {row[s].precision:.3f} / {row[s].map:.3f}" for s in sets]
        delta = " ".join(f"{row[s].ndcg - baseline[s].ndcg:+.3f}" for s in sets)
        if args.markdown:
            print(f"| {name} | " + " | ".join(cells) + f" | {delta} |")
        else:
            print(f"{name:24s}" + "".join(f"{c:>28s}" for c in cells) + f"   {delta}")
    print("\nsets: " + ", ".join(f"{s} = {len(d[0])} images" for s, d in data.items()))
    names, vectors, labels = data["dev/yolo"]
    mean, low, high = split_half_check(names, vectors, labels, args.k)
    print(
        f"split-half check on dev/yolo (calibration chosen on half the queries, scored on the other): "
        f"NDCG@{args.k} gain over sqrt-cosine {mean:+.4f} (5th-95th percentile {low:+.4f} .. {high:+.4f})"
    )
    if "held/yolo" not in data:
        print("held/yolo: the held-out photos (holdout_sources.json) are not available offline; pass --holdout-dir")


if __name__ == "__main__":
    main()
