"""The JSON API. Views parse the request, call the service, and shape the answer; nothing more.

Routes (see openapi.json for the full description):
``POST /upload_file``, ``GET /get_similar/<name>`` (the reference design's two routes, kept
for old clients), ``GET /random``, ``GET /images/<name>`` (+ ``/thumb``, ``/detections``),
``DELETE /images/<name>``, ``GET /healthz``, ``GET /openapi.json``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_file, url_for

from ..config import Settings
from ..service import DetectedObject, RecommenderService, ServiceError, SimilarPage
from ..storage import ImageRecord
from .errors import ApiError
from .limits import UploadGate
from .loading import ServiceLoader

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


def _context() -> WebContext:
    return current_app.extensions["recommender"]


def _service() -> RecommenderService:
    return _context().loader.get()


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


# ----------------------------------------------------------------------------- shaping


def _urls(name: str) -> dict[str, str]:
    return {"url": url_for("api.original", name=name), "thumb_url": url_for("api.thumbnail", name=name)}


def _image_json(record: ImageRecord) -> dict[str, Any]:
    return {"name": record.name, **_urls(record.name)}


def _detection_json(found: DetectedObject) -> dict[str, Any]:
    return {
        "class": found.class_name,
        "class_id": found.class_id,
        "score": round(found.score, 4),
        "box": [round(v, 1) for v in found.box],
    }


def _similar_json(page: SimilarPage) -> dict[str, Any]:
    return {
        "query": page.query,
        "query_classes": page.query_classes,
        "detector": page.detector,
        "page": page.page,
        "per_page": page.per_page,
        "total": page.total,
        "results": [
            {
                "name": r.name,
                **_urls(r.name),
                "distance": round(r.distance, 6),
                "shared_classes": r.shared_classes,
                "classes": r.classes,
                "why": r.why,
                "contributions": [{"class": c.class_name, "share": round(c.share, 4)} for c in r.contributions],
            }
            for r in page.results
        ],
    }


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
        raise ApiError(
            400, "missing_file", f"Send the photo as multipart/form-data in the field '{UPLOAD_FIELD}'."
        )
    data = upload.read()
    with context.uploads.admit():
        result = service.ingest(data, name_hint=upload.filename or None)
    name = result.image.name
    similar = service.similar_to_image(name, 1, context.settings.page_size)
    body = {
        "name": name,
        **_urls(name),
        "duplicate": result.duplicate,
        "width": result.image.width,
        "height": result.image.height,
        "detector": result.detector,
        "detections": [_detection_json(d) for d in result.detections],
        "similar": _similar_json(similar),
    }
    return jsonify(body), (200 if result.duplicate else 201), {"Location": url_for("api.original", name=name)}


@bp.get("/get_similar/<name>")
def get_similar(name: str) -> Response:
    context = _context()
    page = _int_arg("page", 1)
    per_page = _int_arg("per_page", context.settings.page_size)
    return _no_store(jsonify(_similar_json(context.loader.get().similar_to_image(name, page, per_page))))


@bp.get("/random")
def random_images() -> Response:
    wants_list = "n" in request.args
    records = _service().random(_int_arg("n", 1))
    if not records:
        raise ApiError(
            404,
            "empty_collection",
            "The collection is empty: upload a photo, or run `recommender ingest DIR` to add a folder of photos.",
        )
    body = {"images": [_image_json(r) for r in records]} if wants_list else _image_json(records[0])
    return _no_store(jsonify(body))


@bp.get("/images/<name>")
def original(name: str) -> Response:
    service = _service()
    record = service.get_image(name)
    path, mime = service.original_path(name)
    return _immutable_file(path, mime, record.sha256, record.name)


@bp.get("/images/<name>/thumb")
def thumbnail(name: str) -> Response:
    service = _service()
    record = service.get_image(name)
    path = service.thumbnail_path(name)
    stem = record.name.rsplit(".", 1)[0]
    return _immutable_file(path, "image/jpeg", f"{record.sha256}-thumb", f"{stem}-thumb.jpg")


def _immutable_file(path: Path, mime: str, etag: str, download_name: str) -> Response:
    # A name always serves the same bytes while it exists, so clients may cache it for good;
    # the ETag (derived from the content's SHA-256) lets them revalidate cheaply if they do ask.
    response = send_file(path, mimetype=mime, etag=etag, conditional=True, max_age=ONE_YEAR, download_name=download_name)
    response.cache_control.public = True
    response.cache_control.immutable = True
    return response


@bp.get("/images/<name>/detections")
def detections(name: str) -> Response:
    service = _service()
    record = service.get_image(name)
    found = service.detections(name)
    return jsonify(
        {
            "name": record.name,
            "detector": service.active_detector,
            "width": record.width,
            "height": record.height,
            "detections": [_detection_json(d) for d in found],
        }
    )


@bp.delete("/images/<name>")
def delete_image(name: str) -> Response:
    context = _context()
    _check_admin(context.settings)
    record = context.loader.get().delete(name)
    return jsonify({"deleted": record.name})


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
    service = loader.get()
    try:
        images = service.count()
    except ServiceError as exc:  # the database went away after start-up
        return _no_store(jsonify({"status": "error", "message": exc.message})), 503
    return _no_store(
        jsonify(
            {
                "status": "ok",
                "detector": service.active_detector,
                "images": images,
                "indexed": service.index_size,
                "page_size": context.settings.page_size,
                "max_upload_bytes": context.settings.max_upload_bytes,
            }
        )
    ), 200


@bp.get("/openapi.json")
def openapi() -> Response:
    response = send_file(OPENAPI_PATH, mimetype="application/json", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    return response
