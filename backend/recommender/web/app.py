"""The Flask application factory: API blueprint, discovery page, JSON errors, background start-up."""

from __future__ import annotations

import ctypes
import logging
import os

from flask import Flask, Response

from .. import bootstrap
from ..config import Settings
from ..service import Recommender
from .api import WebContext
from .api import bp as api_blueprint
from .asking import bp as asking_blueprint
from .errors import register_error_handlers
from .forms import UploadRequest
from .frontend import frontend_blueprint, resolve_frontend_dir
from .health import HealthProbe
from .limits import UploadGate
from .loading import ServiceLoader

# Multipart framing (boundary, part headers, the file name) on top of the file's own bytes;
# the exact byte limit on the file itself is enforced by the images module.
MULTIPART_OVERHEAD = 64 * 1024

# The page only loads its own files; inline script or foreign content would be an injection.
_PAGE_CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def create_app(
    settings: Settings,
    service: Recommender | None = None,
    *,
    frontend_dir: str | os.PathLike[str] | None = None,
    start: bool = True,
    background: bool = True,
    follow: bool = True,
    upload_slots: int = 4,
    upload_wait: float = 10.0,
    upload_queue: int | None = None,
) -> Flask:
    """The web application for ``settings``.

    Without ``service`` the app builds one with ``bootstrap.build`` in a background thread
    (see ``loading``); until it is ready, /healthz and the API answer 503 while the page loads.
    With ``service`` (tests, embedding) the app uses it; ``background=False`` finishes loading
    before returning; ``start=False`` leaves loading to the caller
    (``app.extensions["recommender"].loader.start()``); ``follow`` keeps the index following
    the change feed. ``upload_slots`` bounds the uploads admitted at once; up to
    ``upload_queue`` more (default: as many) wait up to ``upload_wait`` seconds for a slot
    before they are answered 503 ``busy``.
    """
    app = Flask(__name__, static_folder=None)
    app.request_class = UploadRequest  # keeps forms whose file name is not UTF-8
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes + MULTIPART_OVERHEAD
    app.config["UPLOAD_LIMIT_BYTES"] = settings.max_upload_bytes  # what the 413 message names
    app.json.sort_keys = False  # keep the documented field order

    loader = ServiceLoader((lambda: bootstrap.build(settings)) if service is None else (lambda: service), follow=follow)
    health = HealthProbe(lambda: loader.get().queries.status())
    app.extensions["recommender"] = WebContext(
        settings=settings, loader=loader, uploads=UploadGate(upload_slots, wait=upload_wait, queue=upload_queue), health=health
    )

    register_error_handlers(app)
    app.register_blueprint(api_blueprint)
    app.register_blueprint(asking_blueprint)
    app.register_blueprint(frontend_blueprint(resolve_frontend_dir(frontend_dir or settings.frontend_dir)))

    @app.after_request
    def _headers(response: Response) -> Response:
        # Uploaded files are served back: never let a browser reinterpret them as HTML.
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", _PAGE_CSP)
        return response

    if start:
        loader.start(background=background)
    return app


def configure_logging() -> None:
    """Log lines of the app next to gunicorn's (both to stderr) when run as a server."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# glibc's mallopt parameter number, and the size from which allocations get pages of their own.
_M_MMAP_THRESHOLD = -3
LARGE_ALLOCATION = 4 * 1024 * 1024


def return_large_blocks_to_the_system() -> bool:
    """Make a server process give the memory of large buffers back to the system when they are freed.

    glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
    buffers of that size come from the heap and stay resident once freed: after a burst of big
    pictures a worker kept 1.5 GB it no longer used. A fixed threshold keeps every buffer of
    4 MB or more (decoded pictures, the detector's input) in pages of its own, unmapped on free.
    False where the C library is not glibc.
    """
    try:
        return ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, LARGE_ALLOCATION) == 1
    except (OSError, AttributeError):
        return False


def configure_worker() -> None:
    """What a server process sets up before it builds the app: logging and memory behaviour."""
    configure_logging()
    return_large_blocks_to_the_system()


__all__ = ["create_app", "configure_logging", "configure_worker"]
