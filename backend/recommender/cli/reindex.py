"""``recommender reindex``: compute missing vectors for a detector, optionally switch to it."""

from __future__ import annotations

import sys

import click

from ..config import Settings
from ..detection import DetectorError, resolve
from ..service import ServiceError
from . import main
from .db import database_options, open_service
from .options import detector_option
from .progress import ProgressBar


@main.command("reindex")
@detector_option("Detector to compute vectors for", "the one the index serves now")
@click.option("--activate", is_flag=True, help="Afterwards, serve this detector's vectors (every running server follows).")
@click.option("--hashes", is_flag=True,
              help="Instead: compute the perceptual hash (near-duplicate folding) of images stored without one.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@database_options
def reindex(settings: Settings, detector: str | None, activate: bool, hashes: bool, quiet: bool) -> None:
    """Detect objects in every stored image that has no vector for DETECTOR yet.

    Resumable: each image is saved as soon as it is done; run it again after an interruption.
    """
    if hashes:
        _hashes(settings, quiet)
        return
    if detector is not None:
        try:
            detector = resolve(detector, settings.detect_profile).name
        except DetectorError as exc:
            raise click.ClickException(str(exc)) from None
    def work(service, progress):
        result = service.admin.reindex(detector, activate=activate, progress=progress)
        return result, service.queries.status() if result.activated else None

    result, status = _run(settings, quiet, work, "vectors")
    click.echo(
        f"Computed {result.computed} of {result.missing} missing vector(s) for {result.detector}; "
        f"{len(result.failed)} failed."
    )
    for name, reason in result.failed:
        click.echo(f"  {name}: {reason}", err=True)
    if status is not None:
        click.echo(f"The collection now uses {status.detector} ({status.indexed} image{'s' if status.indexed != 1 else ''} indexed).")


def _run(settings: Settings, quiet: bool, work, what: str):
    """``work(service, progress)`` with a progress bar; Ctrl-C keeps what is done."""
    progress = ProgressBar(quiet)
    with open_service(settings) as service:
        try:
            return work(service, progress)
        except ServiceError as exc:
            raise click.ClickException(exc.message) from None
        except KeyboardInterrupt:
            click.echo(f"Interrupted: {what} computed so far are saved; run the same command again.", err=True)
            sys.exit(130)
        finally:
            progress.close()


def _hashes(settings: Settings, quiet: bool) -> None:
    computed, failed = _run(settings, quiet, lambda service, progress: service.admin.backfill_hashes(progress=progress),
                            "hashes")
    click.echo(f"Computed {computed} perceptual hash(es); {len(failed)} failed.")
    for name, reason in failed:
        click.echo(f"  {name}: {reason}", err=True)
