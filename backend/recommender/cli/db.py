"""``recommender db``: database migrations, media and change-feed housekeeping; shared database options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .. import bootstrap
from ..config import Settings, SettingsError
from ..service import Recommender, ServiceError
from . import main


def database_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--database-url`` and ``--data-dir``, folded into the Settings passed as first argument.

    Use instead of ``click.pass_obj``: the command receives the overridden Settings.
    """

    @click.option("--database-url", default=None, help="Database to use (default: DATABASE_URL, else SQLite in the data dir).")
    @click.option(
        "--data-dir",
        default=None,
        type=click.Path(file_okay=False, path_type=Path),
        help="Folder for media, the SQLite file and weights (default: DATA_DIR or ./data).",
    )
    @functools.wraps(command)
    def wrapper(*args: Any, database_url: str | None, data_dir: Path | None, **kwargs: Any) -> Any:
        settings: Settings = click.get_current_context().find_root().obj
        try:
            settings = settings.with_overrides(database_url=database_url, data_dir=data_dir)
        except SettingsError as exc:
            raise click.UsageError(str(exc)) from None
        return command(settings, *args, **kwargs)

    return wrapper


def open_service(settings: Settings) -> Recommender:
    """The service, or a one-line error for the user (bad setting or URL, database down, not migrated)."""
    try:
        return bootstrap.build(settings)
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None


@main.group("db")
def db() -> None:
    """Database schema and media housekeeping."""


@db.command("upgrade")
@database_options
def db_upgrade(settings: Settings) -> None:
    """Apply the database migrations (creates the tables on a new database)."""
    try:
        before, after, where = bootstrap.migrate_database(settings)
    except ServiceError as exc:
        raise click.ClickException(f"migration failed: {exc.message}") from None
    if before == after:
        click.echo(f"{where} is up to date (revision {after}).")
    else:
        click.echo(f"{where} migrated from {before or 'an empty database'} to revision {after}.")


@db.command("current")
@database_options
def db_current(settings: Settings) -> None:
    """Show the database's schema revision and the newest one this version knows."""
    try:
        current, head = bootstrap.database_revision(settings)
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"current: {current or 'none (run `recommender db upgrade`)'}")
    click.echo(f"head:    {head}")


def _age_option(name: str, default: float, help: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(name, type=click.FloatRange(min=0), default=default, show_default=True, help=help)


def _removed(count: int, what: str) -> str:
    return f"Removed {count} {what}{'s' if count != 1 else ''}"


@db.command("clean-media")
@_age_option("--older-than", 600, "Only remove orphan files older than this many seconds (an ingest elsewhere may still own newer ones).")
@database_options
def db_clean_media(settings: Settings, older_than: float) -> None:
    """Remove media files that no image row owns (left behind by a killed ingest)."""
    with open_service(settings) as service:
        click.echo(_removed(service.admin.clean_orphans(older_than=older_than), "orphan file") + ".")


@db.command("prune-feed")
@_age_option("--keep-days", 7, "Keep the changes of this many last days; a server stopped for longer rebuilds its index when it starts.")
@database_options
def db_prune_feed(settings: Settings, keep_days: float) -> None:
    """Forget old rows of the change feed (it grows by one row per stored vector or deletion)."""
    with open_service(settings) as service:
        click.echo(_removed(service.admin.prune_feed(keep_days), "change") + f" older than {keep_days:g} days.")
