"""Every error leaves the app as JSON ``{"error": {"code", "message"}}``, never as HTML or a trace.

Image errors (``recommender.images``) and service errors carry ``.status`` and ``.code``; their
``str()`` is written for users, so it is passed through. Anything else is a bug: it is logged
with its trace on the server and answered with a generic 500.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

log = logging.getLogger(__name__)

RETRY_AFTER = "5"  # seconds, for 503 answers
# A refused body is read (and dropped) up to this multiple of the limit, for this long at most.
DRAIN_FACTOR = 4
DRAIN_SECONDS = 10.0

# Codes for the HTTP errors Flask and Werkzeug raise themselves (routing, body size, methods).
_HTTP_CODES: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error a view raises on purpose: its message is shown to the user as is."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def _status_of(exc: BaseException) -> int | None:
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status <= 599 else None


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, str(exc), exc.headers)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(exc: RequestEntityTooLarge) -> Response:
        # The limit people set and read about is the photo's (MAX_UPLOAD_MB); the body may
        # exceed it by the multipart framing, which is nobody's business.
        limit = current_app.config.get("UPLOAD_LIMIT_BYTES") or current_app.config.get("MAX_CONTENT_LENGTH")
        detail = f" The limit is {_megabytes(limit)}." if limit else ""
        drain_request_body(DRAIN_FACTOR * (current_app.config.get("MAX_CONTENT_LENGTH") or 0))
        return error_response(413, "payload_too_large", f"The upload is too large.{detail}")

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = _HTTP_CODES.get(status, f"http_{status}")
        message = exc.description or exc.name
        headers: dict[str, Any] = {}
        if status == 405:
            # Keep the Allow header Werkzeug computed: clients use it to discover methods.
            allow = exc.get_response().headers.get("Allow")
            if allow:
                headers["Allow"] = allow
            message = "This method is not allowed on this URL."
        elif status == 404:
            message = "There is nothing at this URL."
        return error_response(status, code, message, headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        status = _status_of(exc)
        code = getattr(exc, "code", None)
        if status is not None and isinstance(code, str):
            # ImageError, service errors and other domain errors that know their HTTP status;
            # ``public`` leaves out what only the operator should see (database hosts, paths).
            return error_response(status, code, getattr(exc, "public", None) or str(exc), _retry_headers(status))
        log.exception("unhandled error while serving a request")
        return error_response(500, "internal_error", "Something went wrong on the server; the error was logged.")


def _retry_headers(status: int) -> dict[str, str]:
    # A busy or unavailable service is worth asking again shortly; clients and the page honour it.
    return {"Retry-After": RETRY_AFTER} if status == 503 else {}


def drain_request_body(max_bytes: int, max_seconds: float = DRAIN_SECONDS) -> None:
    """Read and discard what is left of the request body, up to a bound.

    A client that sends its whole body before reading the answer (Python's urllib, curl
    without Expect) would otherwise see the connection closed under it (a broken pipe) instead
    of the 413. Beyond ``max_bytes`` or ``max_seconds`` the connection is simply closed.
    """
    declared = request.content_length
    if declared is not None and declared > max_bytes:
        return
    stream = request.environ.get("wsgi.input")
    if stream is None:
        return
    deadline, left = time.monotonic() + max_seconds, max_bytes
    try:
        while left > 0 and time.monotonic() < deadline:
            chunk = stream.read(min(left, 64 * 1024))
            if not chunk:
                return
            left -= len(chunk)
    except OSError:  # the client gave up: nothing to save
        return


def _megabytes(limit: int) -> str:
    mb = limit / (1024 * 1024)
    return f"{mb:g} MB" if mb >= 1 else f"{limit} bytes"
