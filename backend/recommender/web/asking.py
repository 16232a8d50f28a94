"""Asking by objects over HTTP: the constraint parameters of similarity queries, ``/search``, ``/classes``.

``ask_from_request`` reads ``with``, ``without``, ``min_similarity``, ``add``, ``remove`` and
``collapse`` from the query string (and, for an upload, the form fields too); class names
are comma-separated or repeated. Unknown classes and contradictions are 422, a value that is
not a number or a yes/no is 400.
"""

from __future__ import annotations

import math

from flask import Blueprint, Response, current_app, jsonify, request

from .. import shapes
from ..objects import Ask
from .errors import ApiError

bp = Blueprint("asking", __name__)

_YES = {"1", "true", "yes", "on"}
_NO = {"0", "false", "no", "off", ""}


def _values(name: str) -> list[str]:
    return request.values.getlist(name)


def collapse_from_request(default: bool = False) -> bool:
    raw = request.values.get("collapse")
    if raw is None:
        return default
    if raw.lower() in _YES:
        return True
    if raw.lower() in _NO:
        return False
    raise ApiError(400, "bad_request", f"collapse must be 1 or 0, got {raw!r}")


def ask_from_request() -> Ask:
    raw = request.values.get("min_similarity")
    min_similarity = None
    if raw not in (None, ""):
        try:
            min_similarity = float(raw)
        except ValueError:
            raise ApiError(400, "bad_request", f"min_similarity must be a number from 0 to 1, got {raw!r}") from None
        if math.isnan(min_similarity):
            min_similarity = -1.0  # reported as out of range
    return Ask.of(with_=_values("with"), without=_values("without"), min_similarity=min_similarity,
                  add=_values("add"), remove=_values("remove"))


def _page_args() -> tuple[int, int]:
    from .api import _int_arg  # one parser for page numbers across the API

    return _int_arg("page", 1), _int_arg("per_page", current_app.extensions["recommender"].settings.page_size)


@bp.get("/search")
def search() -> Response:
    text = request.args.get("q", "")
    page, per_page = _page_args()
    service = current_app.extensions["recommender"].loader.get()
    found = service.queries.search(text, page, per_page, collapse_from_request())
    response = jsonify(shapes.search_json(found, request.script_root))
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/classes")
def classes() -> Response:
    service = current_app.extensions["recommender"].loader.get()
    response = jsonify(shapes.classes_json(service.queries.classes()))
    response.headers["Cache-Control"] = "no-store"
    return response
