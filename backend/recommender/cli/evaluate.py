"""``recommender eval``: retrieval quality (NDCG@k, P@k, mAP@k) of a ranking on a labelled gallery."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
import numpy as np

from ..config import Settings
from ..detection import DetectorSpec, lookup
from ..evaluation import (
    DEFAULT_K,
    EvaluationInputError,
    RetrievalScores,
    evaluate_vectors,
    evaluate_vectors_file,
    load_labels,
)
from ..vectors import RANKINGS, Ranking, detector_ranking
from . import main
from .options import detector_option


@main.command("eval")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "--labels",
    "labels_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='Ground truth: JSON {"images": {file name: [category, ...]}} (coco_dev layout) or the bare mapping.',
)
@detector_option("Detector for an images folder, or the one that made a vectors file (its calibration ranks them)")
@click.option("--k", "k", type=click.IntRange(1, 100), default=DEFAULT_K, show_default=True, help="Cut-off of the metrics.")
@click.option(
    "--ranking",
    type=click.Choice(sorted(RANKINGS)),
    default=None,
    help="Ranking variant (default: the service's, calibrated-ochiai with the detector's calibration); "
    "euclidean-raw is the reference design's.",
)
@click.option(
    "--data-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="For a photo folder: keep the evaluation collection here, so a second run reuses its "
    "vectors (default: a throwaway folder).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar while ingesting photos.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.pass_obj
def evaluate(
    settings: Settings,
    source: Path,
    labels_path: Path,
    detector: str | None,
    k: int,
    ranking: str | None,
    data_dir: Path | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Score how well the ranking finds images sharing ground-truth categories.

    SOURCE is a vectors file (.npz with arrays `names` and `vectors`) or a folder of photos,
    which is ingested with the detector into a separate collection (never the served one).
    Only images present in both SOURCE and the labels file form the gallery; every labelled
    one is a query. The metric: Jaccard-relevance NDCG@k, P@k and mAP@k (defined in the README, Ranking).
    """
    from ..bootstrap import detector_spec

    settings = settings.with_overrides(detector=detector)
    spec = detector_spec(settings)
    try:
        labels = load_labels(labels_path)
        if source.is_dir():
            if data_dir is not None:
                spec, scores = _evaluate_images_dir(settings, data_dir, source, labels, k, ranking, quiet)
            else:
                with tempfile.TemporaryDirectory(prefix="recommender-eval-") as tmp:
                    spec, scores = _evaluate_images_dir(settings, Path(tmp), source, labels, k, ranking, quiet)
        else:
            scores = evaluate_vectors_file(source, labels, k=k, ranking=_ranking(ranking, spec))
    except EvaluationInputError as exc:
        raise click.ClickException(str(exc)) from None

    measured = {"detector": spec.name, "profile": spec.profile, "aggregation": spec.aggregation,
                "ranking": _ranking(ranking, spec).name}
    if as_json:
        click.echo(json.dumps({**scores.as_dict(), **measured, "source": str(source)}))
        return
    click.echo(f"{source}: {scores.n_queries} queries in a gallery of {scores.n_gallery}")
    click.echo(f"detector {spec.name}: profile {spec.profile}, aggregation {spec.aggregation}; ranking {measured['ranking']}")
    click.echo(f"NDCG@{k}  {scores.ndcg:.3f}")
    click.echo(f"P@{k}     {scores.precision:.3f}")
    click.echo(f"mAP@{k}   {scores.map:.3f}")


def _ranking(name: str | None, spec: DetectorSpec) -> Ranking:
    return RANKINGS[name] if name is not None else detector_ranking(spec.name)


def _evaluate_images_dir(
    settings: Settings,
    data_dir: Path,
    images_dir: Path,
    labels: dict[str, list[str]],
    k: int,
    ranking: str | None,
    quiet: bool,
) -> tuple[DetectorSpec, RetrievalScores]:
    """Ingest the labelled photos of ``images_dir`` into a collection in ``data_dir``, then score it.

    The gallery is ranked by the same index and transform the service uses; ties fall to the
    ingest order (image id), as they do in the service. Returns the detector whose vectors were
    scored: a kept collection that serves another one is measured as it is.
    """
    from tqdm import tqdm

    from ..service import IngestEvent, ServiceError, find_image_files
    from .db import open_service

    files = [path for path in find_image_files([images_dir])[0] if path.name in labels]
    if not files:
        raise EvaluationInputError(f"no photo in {images_dir} is named in the labels file")
    # The weights stay where the user keeps them; only the collection lives in data_dir.
    collection = settings.with_overrides(data_dir=data_dir, database_url="", weights_dir=settings.resolved_weights_dir)
    file_of: dict[str, str] = {}  # stored image name -> file name (the labels' key)
    bar = tqdm(total=len(files), unit="img", disable=quiet, file=sys.stderr, desc="detecting")

    def progress(event: IngestEvent) -> None:
        if event.outcome in ("ingested", "duplicate") and event.name and event.path:
            file_of.setdefault(event.name, event.path.name)
        if event.outcome != "started":
            bar.update(1)
        if event.outcome == "failed":
            bar.write(f"skipped {event.path}: {event.message}", file=sys.stderr)

    service = open_service(collection)
    try:
        service.ingest.paths(files, progress=progress)
        stored_names, raw = service.queries.stored_vectors()
        spec = lookup(service.queries.status().detector)
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        bar.close()
        service.close()
    keep = [i for i, name in enumerate(stored_names) if name in file_of]
    names = [file_of[stored_names[i]] for i in keep]
    return spec, evaluate_vectors(names, np.asarray(raw)[keep], labels, k=k, ranking=_ranking(ranking, spec))
