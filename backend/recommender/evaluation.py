"""Retrieval quality of a ranking, measured against ground-truth category sets.

The metric is the project's design metric (the README's *Ranking* section), so numbers from
here compare with the baselines published for this task:

* the gallery is a labelled image set; every image with at least one label is a query and
  its results are the *other* gallery images, best first;
* rel(q, r) is the Jaccard index of the two category sets;
* NDCG@k divides the DCG of the returned list by the DCG of the k best gallery images for q
  (the query itself excluded: it can never be returned);
* P@k is the share of the returned top k sharing at least one category with q;
* AP@k averages P@i over the hit positions i <= k (0 when there is no hit).

Images without labels stay in the gallery (they can be returned, as misses) but are not
queries. Everything is averaged over queries.

Reproducing the reference design's published row (Mask R-CNN vectors, Euclidean on raw scores, gallery =
the 400 coco_dev images, 0.676 / 0.870 / 0.941) needs nothing more than this: those 400
vectors are pairwise distinct, so no tie reaches the cut and the tie-break order (here the
gallery order, which the index breaks ties by) does not change the number.

This module is pure numpy; ranking a gallery goes through the service's real index.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .vectors import DEFAULT_RANKING, RANKINGS, Ranking

DEFAULT_K = 30


@dataclass(frozen=True)
class RetrievalScores:
    """Mean retrieval quality over the queries of one gallery."""

    ndcg: float
    precision: float
    map: float
    n_queries: int
    k: int
    n_gallery: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))


def dcg_at_k(relevances: Sequence[float] | np.ndarray, k: int) -> float:
    """Σ_{i=1..k} rel_i / log2(i + 1) over the first k relevances."""
    rel = np.asarray(relevances, dtype=np.float64)[:k]
    return float(rel @ _discounts(k)[: rel.shape[0]])


def ndcg_at_k(ranked: Sequence[float] | np.ndarray, candidates: Sequence[float] | np.ndarray, k: int) -> float:
    """DCG of ``ranked`` (relevances in returned order) over the DCG of the best possible list.

    ``candidates`` holds the relevance of every image that *could* have been returned (the
    gallery minus the query). A query with no relevant candidate scores 0: no ranking can
    help it, and counting it as 1 would reward nothing.
    """
    ideal = dcg_at_k(np.sort(np.asarray(candidates, dtype=np.float64))[::-1], k)
    return dcg_at_k(ranked, k) / ideal if ideal > 0 else 0.0


def precision_at_k(hits: Sequence[bool] | np.ndarray, k: int) -> float:
    """Share of the returned top k that are hits (a shorter list is judged on what it returned)."""
    top = np.asarray(hits, dtype=bool)[:k]
    return float(top.mean()) if top.size else 0.0


def average_precision_at_k(hits: Sequence[bool] | np.ndarray, k: int) -> float:
    """Mean of P@i over the hit positions i <= k; 0 when the top k holds no hit."""
    top = np.asarray(hits, dtype=bool)[:k]
    n_hits = int(top.sum())
    if n_hits == 0:
        return 0.0
    precision_at_i = np.cumsum(top) / np.arange(1, top.size + 1)
    return float(precision_at_i[top].sum() / n_hits)


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]],
    labels: Mapping[str, Collection[str]],
    k: int = DEFAULT_K,
    queries: Collection[str] | None = None,
) -> RetrievalScores:
    """Mean NDCG@k, P@k and mAP@k of ``rankings`` over the queries of the gallery ``labels``.

    ``labels`` maps *every* gallery image to its category set (empty for unlabelled images);
    ``rankings`` maps every query (gallery image with a label) to its results, best first.
    ``queries`` restricts the mean to a subset of the queries (e.g. one half of a split).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    names = list(labels)
    position = {name: i for i, name in enumerate(names)}
    categories = sorted({c for cats in labels.values() for c in cats})
    column = {c: j for j, c in enumerate(categories)}
    # Category sets as a 0/1 matrix: intersections with every gallery image are one product.
    matrix = np.zeros((len(names), len(categories)), dtype=np.float64)
    for name, cats in labels.items():
        matrix[position[name], [column[c] for c in set(cats)]] = 1.0
    sizes = matrix.sum(axis=1)

    subset = None if queries is None else set(queries)
    scored = [name for name in names if sizes[position[name]] > 0 and (subset is None or name in subset)]
    missing = [q for q in scored if q not in rankings]
    if missing:
        raise ValueError(f"no ranking for {len(missing)} queries, e.g. {missing[0]!r}")
    if not scored:
        raise ValueError("the gallery has no labelled image, so there is nothing to evaluate")

    ndcg, precision, average_precision = [], [], []
    for query in scored:
        q = position[query]
        try:
            returned = np.fromiter((position[name] for name in rankings[query]), dtype=np.intp)
        except KeyError as exc:
            raise ValueError(f"ranking of {query!r} returns {exc.args[0]!r}, which is not in the gallery") from None
        if np.any(returned == q):
            raise ValueError(f"ranking of {query!r} returns the query itself")
        intersection = matrix @ matrix[q]
        union = sizes + sizes[q] - intersection
        relevance = np.divide(intersection, union, out=np.zeros_like(intersection), where=union > 0)
        others = np.delete(relevance, q)
        returned = returned[:k]
        hits = intersection[returned] > 0
        ndcg.append(ndcg_at_k(relevance[returned], others, k))
        precision.append(precision_at_k(hits, k))
        average_precision.append(average_precision_at_k(hits, k))

    return RetrievalScores(
        ndcg=float(np.mean(ndcg)),
        precision=float(np.mean(precision)),
        map=float(np.mean(average_precision)),
        n_queries=len(scored),
        k=k,
        n_gallery=len(names),
    )


def rank_gallery(
    names: Sequence[str],
    vectors: np.ndarray,
    queries: Collection[str] | None = None,
    k: int = DEFAULT_K,
    ranking: Ranking | None = None,
) -> dict[str, list[str]]:
    """Top-k results of each query among the other gallery images, from the real index.

    ``vectors`` are the stored raw vectors in ``names`` order. The index is filled with
    ``ranking.index_transform`` and asked with ``ranking.query_transform``, as the service
    does (default: the service's ranking). Index ids are the gallery positions, so ties break
    by gallery order, as the service breaks them by image id.
    """
    from .index import NeighborIndex

    ranking = ranking or RANKINGS[DEFAULT_RANKING]
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[0] != len(names):
        raise ValueError(f"expected one vector per name ({len(names)}), got an array of shape {vectors.shape}")
    points = ranking.index_transform(vectors)
    lookups = ranking.query_transform(vectors)
    ids = np.arange(len(names), dtype=np.int64)
    index = NeighborIndex.build(ids, points, dim=points.shape[1])
    wanted = set(names) if queries is None else set(queries)
    rankings: dict[str, list[str]] = {}
    for i, name in enumerate(names):
        if name in wanted:
            result = index.query(lookups[i], page=1, per_page=k, exclude_id=int(ids[i]))
            rankings[name] = [names[int(j)] for j in result.ids]
    return rankings


def evaluate_vectors(
    names: Sequence[str],
    vectors: np.ndarray,
    labels: Mapping[str, Collection[str]],
    k: int = DEFAULT_K,
    ranking: Ranking | None = None,
) -> RetrievalScores:
    """Evaluate stored vectors on the gallery = the images that have both a vector and a label entry."""
    if len(set(names)) != len(names):
        raise ValueError("the vectors name some image more than once")
    keep = [i for i, name in enumerate(names) if name in labels]
    if not keep:
        raise ValueError("none of the vectors' image names appear in the labels file")
    gallery = [names[i] for i in keep]
    gallery_labels = {name: labels[name] for name in gallery}
    queries = [name for name in gallery if gallery_labels[name]]
    rankings = rank_gallery(gallery, np.asarray(vectors)[keep], queries=queries, k=k, ranking=ranking)
    return evaluate_rankings(rankings, gallery_labels, k=k)


class EvaluationInputError(ValueError):
    """A labels or vectors file cannot be used; the message says what is wrong with it."""


def load_labels(path: Path) -> dict[str, list[str]]:
    """Ground truth as ``{file name: [category, ...]}``.

    Accepts the coco_dev / COCO val2017 layout (``{"images": {name: [...]}, ...}``) or the
    bare mapping. Unknown category names are kept: they still count in Jaccard and hits.
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EvaluationInputError(f"cannot read labels file {path}: {exc}") from None
    images = data.get("images", data) if isinstance(data, dict) else None
    if not isinstance(images, dict) or not all(
        isinstance(cats, list) and all(isinstance(c, str) for c in cats) for cats in images.values()
    ):
        raise EvaluationInputError(
            f"labels file {path} must map image file names to lists of category names "
            '(either at the top level or under "images")'
        )
    return {str(name): list(cats) for name, cats in images.items()}


def load_vectors(path: Path) -> tuple[list[str], np.ndarray]:
    """``names`` and ``vectors`` (N×81 raw class-presence scores) from an .npz file."""
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            if "names" not in data.files or "vectors" not in data.files:
                raise EvaluationInputError(
                    f"vectors file {path} must hold arrays 'names' and 'vectors', it has {sorted(data.files)}"
                )
            names = [str(n) for n in data["names"]]
            vectors = np.asarray(data["vectors"], dtype=np.float32)
    except EvaluationInputError:
        raise
    except (OSError, ValueError) as exc:
        raise EvaluationInputError(f"cannot read vectors file {path}: {exc}") from None
    if vectors.ndim != 2 or vectors.shape[0] != len(names):
        raise EvaluationInputError(
            f"vectors file {path}: 'vectors' must be one row per name ({len(names)}), got shape {vectors.shape}"
        )
    return names, vectors


def evaluate_vectors_file(
    vectors_path: Path,
    labels: Mapping[str, Collection[str]],
    k: int = DEFAULT_K,
    ranking: Ranking | None = None,
) -> RetrievalScores:
    """Evaluate a stored-vectors file on the images it shares with ``labels``."""
    names, vectors = load_vectors(vectors_path)
    try:
        return evaluate_vectors(names, vectors, labels, k=k, ranking=ranking)
    except ValueError as exc:
        raise EvaluationInputError(f"{vectors_path}: {exc}") from None
