"""``recommender similar NAME`` and ``recommender search WORDS``: photos like a stored photo, or by object names."""

from __future__ import annotations

import json
import math

import click

from .. import shapes
from ..config import Settings
from ..errors import UserError
from ..index import MAX_PER_PAGE
from ..objects import Ask
from ..service import SearchPage, SimilarPage
from ..service.queries import MAX_PAGE
from . import main
from .db import database_options, open_service

_CLASSES = "Class names, comma-separated or repeated (plurals and case forgiven)."


def _paging(command):
    command = click.option("--collapse/--no-collapse", default=False, show_default=True,
                           help="Fold near-identical photos of a page into the best-ranked one.")(command)
    command = click.option("--json", "as_json", is_flag=True, help="Print JSON: the body the HTTP API answers.")(command)
    command = click.option("--per-page", type=click.IntRange(1, MAX_PER_PAGE), default=None,
                           help="Results per page (default: PAGE_SIZE, 30).")(command)
    return click.option("--page", type=click.IntRange(1, MAX_PAGE), default=1, show_default=True,
                        help="Page number, from 1.")(command)


@main.command("similar")
@click.argument("name")
@click.option("--with", "with_", multiple=True, help=f"Results must show every one of these classes. {_CLASSES}")
@click.option("--without", multiple=True, help=f"Results must show none of these classes. {_CLASSES}")
@click.option("--min-similarity", type=float, default=None, help="Leave out results less similar than this (0 to 1).")
@click.option("--add", multiple=True, help="Search as if the photo also showed these classes.")
@click.option("--remove", multiple=True, help="Search as if the photo did not show these classes.")
@_paging
@database_options
def similar(settings: Settings, name: str, with_: tuple[str, ...], without: tuple[str, ...],
            min_similarity: float | None, add: tuple[str, ...], remove: tuple[str, ...], page: int,
            per_page: int | None, as_json: bool, collapse: bool) -> None:
    """List the images most similar to the stored image NAME, nearest first."""
    with open_service(settings) as service:
        try:
            ask = Ask.of(with_=with_, without=without, min_similarity=min_similarity, add=add, remove=remove)
            result = service.queries.similar(name, page, per_page or settings.page_size, ask, collapse)
        except UserError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(json.dumps(shapes.similar_json(result), indent=2) if as_json else as_text(result))


@main.command("search")
@click.argument("words", nargs=-1, required=True)
@_paging
@database_options
def search(settings: Settings, words: tuple[str, ...], page: int, per_page: int | None, as_json: bool,
           collapse: bool) -> None:
    """Photos that show the classes WORDS name, most confident first; -NAME excludes a class.

    Example: recommender search dog frisbee -- -person
    """
    with open_service(settings) as service:
        try:
            result = service.queries.search(" ".join(words), page, per_page or settings.page_size, collapse)
        except UserError as exc:
            raise click.ClickException(exc.message) from None
    click.echo(json.dumps(shapes.search_json(result), indent=2) if as_json else search_text(result))


def _folded(result) -> str:
    return f"  (+{len(result.near_duplicates)} near-identical)" if result.near_duplicates else ""


def as_text(result: SimilarPage) -> str:
    pages = max(1, math.ceil(result.total / result.per_page))
    asked = "; ".join(f"{k} {', '.join(v)}" for k, v in result.ask.names().items() if v)
    lines = [
        f"Similar to {result.query} ({', '.join(result.query_classes) or 'no objects detected'})"
        + (f" [{asked}]" if asked else ""),
        f"detector {result.detector}, page {result.page} of {pages}, {result.total} images ranked",
    ]
    if not result.results:
        lines.append("(no results on this page)")
    first = (result.page - 1) * result.per_page + 1
    width = max((len(r.name) for r in result.results), default=0)
    for rank, r in enumerate(result.results, start=first):
        lines.append(f"{rank:>4}. {r.name:<{width}}  {r.similarity:.3f}  {r.why}{_folded(r)}")
    return "\n".join(lines)


def search_text(result: SearchPage) -> str:
    pages = max(1, math.ceil(result.total / result.per_page))
    wanted = ", ".join(result.with_classes) or "anything"
    without = f" without {', '.join(result.without_classes)}" if result.without_classes else ""
    lines = [f"Photos with {wanted}{without}: page {result.page} of {pages}, {result.total} matches"]
    width = max((len(r.name) for r in result.results), default=0)
    for rank, r in enumerate(result.results, start=(result.page - 1) * result.per_page + 1):
        lines.append(f"{rank:>4}. {r.name:<{width}}  {r.confidence:.3f}  {', '.join(r.classes)}{_folded(r)}")
    return "\n".join(lines)
