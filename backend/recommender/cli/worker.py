"""``recommender worker``: ingest the photos ``recommender ingest --queue`` enqueues (needs BROKER_URL)."""

from __future__ import annotations

import sys

import click

from ..config import Settings
from ..service import ServiceError
from . import main
from .db import database_options


@main.command("worker")
@click.option("--concurrency", "-c", type=click.IntRange(min=1), default=None,
              help="Photos detected at once (default: WORKER_CONCURRENCY, else one per core).")
@click.option("--loglevel", "-l", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              default="info", show_default=True)
@database_options
def worker(settings: Settings, concurrency: int | None, loglevel: str) -> None:
    """Run a queue worker: take ingest tasks from BROKER_URL, detect and store the photos.

    Start as many as you like, on any machine that reaches the broker, the database and the
    media folder. Stop with Ctrl-C or SIGTERM (running photos finish); a worker killed outright
    loses nothing: its photos go back to the queue.
    """
    if not settings.broker_url:
        raise click.UsageError("the worker needs a broker: set BROKER_URL (e.g. redis://127.0.0.1:6379/0)")
    from ..tasks.worker import run_worker  # Celery is imported on this path only

    try:
        status = run_worker(settings.with_overrides(worker_concurrency=concurrency), loglevel=loglevel)
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None
    sys.exit(status)
