"""``recommender detect IMAGE...``: the objects a detector finds in image files."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from .. import bootstrap
from ..classes import class_name
from ..config import Settings
from ..detection import Detections, DetectorError
from ..images import WORKING_SIDE, ImageError, read_image_file
from . import main
from .options import detector_options


@dataclass(frozen=True)
class _Result:
    path: Path
    width: int
    height: int
    format: str
    decode_ms: float
    detect_ms: float
    detections: Detections
    threshold: float | None

    def kept(self) -> np.ndarray:
        if self.threshold is None:
            return np.arange(len(self.detections))
        return np.flatnonzero(self.detections.scores >= self.threshold)

    def classes(self) -> list[dict[str, Any]]:
        """Each class found, with its best score and number of boxes, best first."""
        best: dict[int, list[float]] = {}
        for i in self.kept():
            best.setdefault(int(self.detections.class_ids[i]), []).append(float(self.detections.scores[i]))
        rows = [
            {"class_id": cid, "name": class_name(cid), "score": round(max(s), 4), "count": len(s)}
            for cid, s in best.items()
        ]
        return sorted(rows, key=lambda row: (-row["score"], row["class_id"]))

    def as_dict(self) -> dict[str, Any]:
        det = self.detections
        return {
            "file": str(self.path),
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "decode_ms": round(self.decode_ms, 2),
            "detect_ms": round(self.detect_ms, 2),
            "classes": self.classes(),
            "objects": [
                {
                    "class_id": int(det.class_ids[i]),
                    "name": class_name(int(det.class_ids[i])),
                    "score": round(float(det.scores[i]), 4),
                    "box": [round(float(v), 1) for v in det.boxes[i]],
                }
                for i in self.kept()
            ],
        }

    def as_text(self, detector: str) -> str:
        lines = [
            f"{self.path}  {self.width}x{self.height}  {detector}  "
            f"decode {self.decode_ms:.0f} ms, detect {self.detect_ms:.0f} ms"
        ]
        classes = self.classes()
        lines += [
            f"  {row['name']:<16} {row['score']:.2f}" + (f"  ({row['count']} boxes)" if row["count"] > 1 else "")
            for row in classes
        ] or ["  (no objects found)"]
        return "\n".join(lines)


def _file_error(path: Path, exc: Exception) -> tuple[str, str]:
    """(code, one-line message) for a file that could not be decoded."""
    if isinstance(exc, ImageError):
        return exc.code, str(exc)
    if isinstance(exc, FileNotFoundError):
        return "not_found", "no such file"
    if isinstance(exc, IsADirectoryError):
        return "not_a_file", "is a directory"
    if isinstance(exc, PermissionError):
        return "unreadable", "permission denied"
    return "unreadable", getattr(exc, "strerror", None) or str(exc)


@main.command("detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@detector_options
@click.option(
    "--threshold",
    type=click.FloatRange(0, 1, min_open=True),
    default=None,
    help="Only report objects scoring at least this (default: the detector's own threshold).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document instead of text.")
@click.pass_context
def detect(
    ctx: click.Context,
    images: tuple[Path, ...],
    detector: str | None,
    weights_dir: Path | None,
    threshold: float | None,
    as_json: bool,
) -> None:
    """Detect objects in IMAGE files; bad files are reported and skipped (exit status 1)."""
    settings: Settings = ctx.obj.with_overrides(detector=detector, weights_dir=weights_dir)
    model = bootstrap.make_detector(settings, box_threshold=threshold)
    started = time.perf_counter()
    try:
        model.load()
    except DetectorError as exc:
        raise click.ClickException(str(exc)) from None
    load_seconds = time.perf_counter() - started
    label = model.name + (f" ({model.runtime})" if getattr(model, "runtime", None) else "")
    if not as_json:
        click.echo(f"{label} loaded in {load_seconds:.2f} s")

    results: list[_Result] = []
    errors: list[dict[str, str]] = []
    for path in images:
        try:
            t0 = time.perf_counter()
            # Reduced as the service reduces it, so both report the same detections.
            image = read_image_file(path, max_side=WORKING_SIDE)
            t1 = time.perf_counter()
            found = model.detect(image.rgb).scaled(*image.scale)
            t2 = time.perf_counter()
        except (ImageError, OSError) as exc:
            code, message = _file_error(path, exc)
            message = " ".join(message.split())  # one line, whatever the underlying error says
            click.echo(f"error: {path}: {message}", err=True)
            errors.append({"file": str(path), "code": code, "message": message})
            continue
        result = _Result(path, image.width, image.height, image.format, (t1 - t0) * 1e3, (t2 - t1) * 1e3, found, threshold)
        results.append(result)
        if not as_json:
            click.echo(result.as_text(label))

    if as_json:
        document = {
            "detector": model.name,
            "runtime": getattr(model, "runtime", None),
            "threshold": threshold if threshold is not None else getattr(model, "score_threshold", None),
            "load_seconds": round(load_seconds, 3),
            "images": [r.as_dict() for r in results],
            "errors": errors,
        }
        click.echo(json.dumps(document, indent=2))
    if errors:
        ctx.exit(1)
