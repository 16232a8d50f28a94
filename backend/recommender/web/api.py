"""The JSON API. Views parse the request, call the service, and shape the answer; nothing more.

Routes (see openapi.json for the full description):
``POST /upload_file``, ``GET /get_similar/<name>`` (the reference design's two routes, kept
for old clients), ``GET /random``, ``GET /images/<name>`` (+ ``/thumb``, ``/detections``),
``DELETE /images/<name>``, ``GET /healthz``, ``GET /openapi.json``.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file

from .. import shapes
from ..config import Settings
from ..service import ImageFile, Recommender, ServiceError
from .asking import ask_from_request, collapse_from_request
from .errors import ApiError
from .health import HealthProbe, Stalled
from .limits import UploadGate
from .loading import RETRY_AFTER, ServiceLoader

OPENAPI_PATH = Path(__file__).with_name("openapi.json")
UPLOAD_FIELD = "file_to_upload"
ONE_YEAR = 365 * 24 * 3600

bp = Blueprint("api", __name__)


@dataclass(frozen=True)
class WebContext:
    """What the views need besides the request; stored in ``app.extensions["recommender"]``."""

    settings: Settings
    loader: ServiceLoader
    uploads: UploadGate
    health: HealthProbe


def _context() -> WebContext:
    return current_app.extensions["recommender"]


def _service() -> Recommender:
    return _context().loader.get()


def _root() -> str:
    return request.script_root


# ----------------------------------------------------------------------------- parsing


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a whole number, got {raw!r}") from None


def _check_admin(settings: Settings) -> None:
    """Deletion needs ``Authorization: Bearer <ADMIN_TOKEN>``; without a token it is disabled."""
    token = settings.admin_token
    if not token:
        raise ApiError(403, "deletion_disabled", "Deletion is disabled: the server has no ADMIN_TOKEN configured.")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(
            401,
            "unauthorized",
            "Deleting needs the header 'Authorization: Bearer <admin token>'.",
            {"WWW-Authenticate": 'Bearer realm="recommender"'},
        )
    # compare_digest takes the same time wherever the first difference is, so the token
    # cannot be guessed byte by byte from response times.
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiError(403, "forbidden", "The admin token is wrong.")


def _no_store(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


# ----------------------------------------------------------------------------- routes


@bp.post("/upload_file")
def upload_file() -> tuple[Response, int, dict[str, str]]:
    context = _context()
    service = context.loader.get()
    upload = request.files.get(UPLOAD_FIELD)
    if upload is None:
        raise ApiError(400, "missing_file", f"Send the photo as multipart/form-data in the field '{UPLOAD_FIELD}'.")
    sent = len(list(request.files.items(multi=True)))
    if sent > 1:
        raise ApiError(400, "too_many_files", f"Send one photo per request; this request holds {sent} files.")
    data = upload.read()
    ask, collapse = ask_from_request(), collapse_from_request()  # checked before anything is stored
    with context.uploads.admit():
        result = service.ingest.upload(data, name_hint=upload.filename or None)
    similar = service.queries.similar(result.image.name, 1, context.settings.page_size, ask, collapse)
    body = shapes.upload_json(result, similar, _root())
    return jsonify(body), (200 if result.duplicate else 201), {"Location": body["url"]}


@bp.get("/get_similar/<name>")
def get_similar(name: str) -> Response:
    context = _context()
    page = _int_arg("page", 1)
    per_page = _int_arg("per_page", context.settings.page_size)
    found = context.loader.get().queries.similar(name, page, per_page, ask_from_request(), collapse_from_request())
    return _no_store(jsonify(shapes.similar_json(found, _root())))


@bp.get("/random")
def random_images() -> Response:
    wants_list = "n" in request.args
    images = _service().queries.random(_int_arg("n", 1))
    if not images:
        raise ApiError(
            404,
            "empty_collection",
            "The collection is empty: upload a photo, or run `recommender ingest DIR` to add a folder of photos.",
        )
    shaped = [shapes.image_json(image, _root()) for image in images]
    return _no_store(jsonify({"images": shaped} if wants_list else shaped[0]))


@bp.get("/images/<name>")
def original(name: str) -> Response:
    return _send(_service().queries.original(name))


@bp.get("/images/<name>/thumb")
def thumbnail(name: str) -> Response:
    return _send(_service().queries.thumbnail(name))


def _send(file: ImageFile) -> Response:
    response = send_file(file.path, mimetype=file.mime, etag=file.etag, conditional=True, download_name=file.download_name)
    if request.args.get("v") == shapes.version_of(file.sha256):
        # A versioned URL names these exact bytes for good, so caches may keep them forever.
        response.cache_control.max_age = ONE_YEAR
        response.cache_control.public = True
        response.cache_control.immutable = True
    else:
        # The bare name may serve other bytes after a delete and a new upload: revalidate (a
        # cheap 304 through the content-hash ETag).
        response.cache_control.no_cache = True
    return response


@bp.get("/images/<name>/detections")
def detections(name: str) -> Response:
    return jsonify(shapes.detections_json(_service().queries.detections(name), _root()))


@bp.delete("/images/<name>")
def delete_image(name: str) -> Response:
    context = _context()
    _check_admin(context.settings)
    image = context.loader.get().admin.delete(name)
    return jsonify({"deleted": image.name})


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    context = _context()
    loader = context.loader
    if not loader.ready:
        body: dict[str, Any] = {"status": "error" if loader.error else "loading"}
        if loader.error:
            body["message"] = loader.error
        response = _no_store(jsonify(body))
        response.headers["Retry-After"] = "3"
        return response, 503
    try:
        status = context.health.run()
    except (ServiceError, Stalled) as exc:  # the database went away (or stopped answering) after start-up
        message = exc.public if isinstance(exc, ServiceError) else str(exc)
        response = _no_store(jsonify({"status": "error", "message": message}))
        response.headers["Retry-After"] = RETRY_AFTER
        return response, 503
    body = {
        "status": "ok",
        **shapes.status_json(status),
        "pid": os.getpid(),  # which server process answered (there are WEB_WORKERS of them)
        "page_size": context.settings.page_size,
        "max_upload_bytes": context.settings.max_upload_bytes,
    }
    return _no_store(jsonify(body)), 200


@bp.get("/openapi.json")
def openapi() -> Response:
    response = send_file(OPENAPI_PATH, mimetype="application/json", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response
