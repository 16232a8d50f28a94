"""``recommender ingest PATH...``: add photos from files and folders to the collection."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType

import click

from ..config import Settings
from ..service import IngestSummary, Recommender, ServiceError
from . import main
from .db import database_options, open_service
from .progress import ProgressBar


@main.command("ingest")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--strict", is_flag=True, help="Exit with status 1 if any file could not be ingested.")
@click.option(
    "--if-empty",
    is_flag=True,
    help="Do nothing when the collection already holds images (first-start seeding); without PATHS, "
    "ingest IMAGES_DIR, and only if it exists.",
)
@click.option("--queue", "queued", is_flag=True,
              help="Hand the photos to queue workers (`recommender worker`, BROKER_URL) instead of detecting here.")
@click.option("--no-wait", is_flag=True, help="With --queue: return once every photo is queued.")
@database_options
def ingest(settings: Settings, paths: tuple[Path, ...], quiet: bool, strict: bool, if_empty: bool, queued: bool,
           no_wait: bool) -> None:
    """Ingest image files and folders (searched recursively for image files).

    Exact duplicates (same SHA-256) are skipped; unreadable files are listed at the end.
    Safe to interrupt: every image is stored completely or not at all, and running the same
    command again finishes the job. With --queue, this process only stores the originals and
    enqueues one task per photo; workers on any machine sharing the database and media detect them.
    """
    if no_wait and not queued:
        raise click.UsageError("--no-wait only applies to --queue")
    if queued and not settings.broker_url:
        raise click.UsageError("--queue needs a broker: set BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    if not paths:
        if not if_empty:
            raise click.UsageError("name the files or folders to ingest (or use --if-empty to seed from IMAGES_DIR)")
        if not settings.resolved_images_dir.is_dir():
            click.echo(f"IMAGES_DIR {settings.resolved_images_dir} does not exist; nothing to ingest.")
            return
        paths = (settings.resolved_images_dir,)
    progress = ProgressBar(quiet, counts=True)
    previous = signal.signal(signal.SIGTERM, _terminate)
    service = open_service(settings)
    try:
        if if_empty and (held := service.queries.count()):
            click.echo(f"The collection already holds {held} image{'s' if held != 1 else ''}; nothing ingested.")
            return
        if queued:
            summary = _through_queue(settings, service, paths, progress, wait=not no_wait)
        else:
            summary = service.ingest.paths(paths, progress=progress)
    except KeyboardInterrupt:
        click.echo(
            "Interrupted: photos already queued will still be ingested by the workers; run the same command "
            "again to finish." if queued else
            "Interrupted: every image stored so far is complete; run the same command again to finish.", err=True
        )
        sys.exit(130)
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        progress.close()
        service.close()
    _report(summary, queued=queued and no_wait)
    if strict and summary.failed:
        sys.exit(1)


def _through_queue(settings: Settings, service: Recommender, paths: tuple[Path, ...], progress: ProgressBar,
                   wait: bool) -> IngestSummary:
    from ..tasks.client import QueueClient  # Celery is imported on this path only

    return QueueClient(settings, service).ingest(paths, progress=progress, wait=wait)


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM takes the same orderly path as Ctrl-C: finish or undo the current image, stop.
    raise KeyboardInterrupt


def _report(summary: IngestSummary, *, queued: bool = False) -> None:
    if queued:
        waiting = summary.total - summary.ingested - summary.duplicates - len(summary.failed)
        click.echo(f"Queued {waiting} photo{'s' if waiting != 1 else ''} for the workers; "
                   f"skipped {summary.duplicates} duplicate{'s' if summary.duplicates != 1 else ''}, "
                   f"{len(summary.failed)} failed.")
    else:
        _report_done(summary)
    if summary.orphans_removed:
        click.echo(f"Removed {summary.orphans_removed} orphan media file(s) left by an interrupted run.")
    if summary.failed:
        click.echo("Not ingested:", err=True)
        for path, reason in summary.failed:
            click.echo(f"  {path}: {reason}", err=True)


def _report_done(summary: IngestSummary) -> None:
    click.echo(
        f"Ingested {summary.ingested} new image{'s' if summary.ingested != 1 else ''}, "
        f"skipped {summary.duplicates} duplicate{'s' if summary.duplicates != 1 else ''}, "
        f"{len(summary.failed)} failed, in {summary.seconds:.1f} s ({summary.images_per_second:.1f} images/s)."
    )
