"""Realistic collections for the index benchmarks: YOLOv5s vectors of coco_dev, resampled with noise.

The 400 coco_dev photos are run through the project's YOLOv5s detector once (cached in
``--cache``, never in the repository, see ``ranking.yolo_vectors``). A collection of n photos
draws n of them with replacement and adds Gaussian noise of standard deviation ``sigma`` to
every class score in logit space: sigma 0.2 gives a clustered collection (near-copies of the
400 photos), sigma 1.0 a spread one ("noise x5" in issue 11). Indexed points are
``ranking_transform`` of the raw vectors, queries ``query_transform`` of an indexed photo's
raw vector, as the service does. Labels are the classes scored at or above the display
threshold, as the page's chips.

Points are made in chunks (the float64 transform of 10M vectors would not fit next to the
rest) and cached as float32 .npy files, so a 10M run does not regenerate them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from recommender.index import labels_from_scores
from recommender.vectors import query_transform, ranking_transform

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared")) / "data"
DEFAULT_CACHE = Path("/tmp/recommender-bench")
DISPLAY_THRESHOLD = 0.25
_CHUNK = 500_000


def coco_dev_vectors(cache: Path, weights_dir: Path, aggregation: str = "max") -> np.ndarray:
    """float32[400, 81] raw YOLOv5s class-presence vectors of coco_dev (``aggregation``: see detection/aggregate.py)."""
    from ranking import yolo_vectors  # bench/ is on sys.path when a bench script runs

    images = sorted((SHARED / "coco_dev" / "images").glob("*.jpg"))
    suffix = "" if aggregation == "max" else f"_{aggregation}"
    return yolo_vectors(images, cache / f"yolov5s_coco_dev{suffix}.npz", weights_dir, aggregation=aggregation)[1]


def _noisy(seeds: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    s = np.clip(seeds.astype(np.float64), 1e-6, 1 - 1e-6)
    logit = np.log(s) - np.log1p(-s) + sigma * rng.standard_normal(s.shape)
    raw = 1.0 / (1.0 + np.exp(-logit))
    raw[:, 0] = 0.0
    return raw


class Collection:
    """ids int64[n], points float32[n, 81] (index side), labels uint64[n, 2], raw seeds for queries."""

    def __init__(self, ids, points, labels, raw_queries) -> None:
        self.ids, self.points, self.labels, self.raw_queries = ids, points, labels, raw_queries

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def query_points(self, rows: np.ndarray) -> np.ndarray:
        return query_transform(self.raw_queries[rows])


def make_collection(seeds: np.ndarray, n: int, sigma: float, cache: Path, seed: int = 0) -> Collection:
    """n noisy resamples of ``seeds``; cached under ``cache`` by (n, sigma, seed)."""
    stem = cache / f"collection_n{n}_s{sigma:g}_seed{seed}"
    files = {name: stem.with_name(f"{stem.name}_{name}.npy") for name in ("ids", "points", "labels", "raw")}
    if not all(f.is_file() for f in files.values()):
        cache.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(seed)
        ids = (rng.permutation(n).astype(np.int64) + 1) * 7  # not row numbers: ids are not dense
        points = np.lib.format.open_memmap(files["points"].with_suffix(".tmp.npy"), "w+", np.float32, (n, 81))
        labels = np.empty((n, 2), dtype=np.uint64)
        # Raw vectors are kept only for a sample of rows, the ones queries are drawn from.
        raw_keep = np.empty((min(n, 20_000), 81), dtype=np.float32)
        for start in range(0, n, _CHUNK):
            stop = min(n, start + _CHUNK)
            raw = _noisy(seeds[rng.integers(0, seeds.shape[0], stop - start)], sigma, rng)
            points[start:stop] = ranking_transform(raw)
            labels[start:stop] = labels_from_scores(raw, DISPLAY_THRESHOLD)
            if start < raw_keep.shape[0]:
                take = min(raw_keep.shape[0], stop) - start
                raw_keep[start : start + take] = raw[:take]
        points.flush()
        del points
        files["points"].with_suffix(".tmp.npy").replace(files["points"])
        np.save(files["ids"], ids)
        np.save(files["labels"], labels)
        np.save(files["raw"], raw_keep)
    return Collection(
        np.load(files["ids"]), np.load(files["points"], mmap_mode="r"), np.load(files["labels"]), np.load(files["raw"])
    )
