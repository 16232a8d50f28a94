"""``recommender delete NAME...``: remove images from the collection."""

from __future__ import annotations

import click

from ..config import Settings
from ..service import NotFound, ServiceError
from . import main
from .db import database_options, open_service


@main.command("delete")
@click.argument("names", nargs=-1, required=True)
@database_options
def delete(settings: Settings, names: tuple[str, ...]) -> None:
    """Delete images by name: rows, detections, vectors, files and index entries."""
    missing = []
    with open_service(settings) as service:
        for name in names:
            try:
                service.admin.delete(name)
            except NotFound as exc:
                missing.append(exc.message)
                continue
            except ServiceError as exc:
                raise click.ClickException(exc.message) from None
            click.echo(f"Deleted {name}.")
    if missing:
        raise click.ClickException("; ".join(missing))
