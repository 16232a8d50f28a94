"""``recommender similar NAME``: the stored images most similar to a stored image."""

from __future__ import annotations

import json
import math

import click

from .. import shapes
from ..config import Settings
from ..index import MAX_PER_PAGE
from ..service import ServiceError, SimilarPage
from ..service.queries import MAX_PAGE
from . import main
from .db import database_options, open_service


@main.command("similar")
@click.argument("name")
@click.option("--page", type=click.IntRange(1, MAX_PAGE), default=1, show_default=True, help="Page number, from 1.")
@click.option("--per-page", type=click.IntRange(1, MAX_PER_PAGE), default=None, help="Results per page (default: PAGE_SIZE, 30).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: the body GET /get_similar/<name> answers.")
@database_options
def similar(settings: Settings, name: str, page: int, per_page: int | None, as_json: bool) -> None:
    """List the images most similar to the stored image NAME, nearest first."""
    with open_service(settings) as service:
        try:
            result = service.queries.similar(name, page=page, per_page=per_page or settings.page_size)
        except ServiceError as exc:
            raise click.ClickException(exc.message) from None
    if as_json:
        click.echo(json.dumps(shapes.similar_json(result), indent=2))
    else:
        click.echo(as_text(result))


def as_text(result: SimilarPage) -> str:
    pages = max(1, math.ceil(result.total / result.per_page))
    lines = [
        f"Similar to {result.query} ({', '.join(result.query_classes) or 'no objects detected'})",
        f"detector {result.detector}, page {result.page} of {pages}, {result.total} images ranked",
    ]
    if not result.results:
        lines.append("(no results on this page)")
    first = (result.page - 1) * result.per_page + 1
    width = max((len(r.name) for r in result.results), default=0)
    for rank, r in enumerate(result.results, start=first):
        lines.append(f"{rank:>4}. {r.name:<{width}}  {r.distance:.4f}  {r.why}")
    return "\n".join(lines)
