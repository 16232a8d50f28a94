"""Options shared by the commands that run a detector outside the service."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from ..detection import CHOICES

F = TypeVar("F", bound=Callable)


def detector_option(purpose: str, default: str = "DETECTOR") -> Callable[[F], F]:
    """``--detector``: a model (completed by DETECT_PROFILE) or a full registry name."""
    return click.option("--detector", type=click.Choice(CHOICES), default=None,
                        help=f"{purpose}: a model (completed by DETECT_PROFILE) or a full name (default: {default}).")


def detector_options(command: F) -> F:
    """``--detector`` and ``--weights-dir``, both defaulting to the settings (DETECTOR, WEIGHTS_DIR)."""
    command = click.option(
        "--weights-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Where weights live (default: WEIGHTS_DIR, DATA_DIR/weights).",
    )(command)
    return detector_option("Which detector", "DETECTOR, yolov5s")(command)
