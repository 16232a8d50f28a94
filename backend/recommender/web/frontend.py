"""The static discovery page: ``/`` serves index.html, ``/static/<file>`` the rest of frontend/."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from flask import Blueprint, Response, send_from_directory

# The page ships inside the package, so an installed server finds it wherever it runs from.
PACKAGED_PAGE = Path(str(resources.files(__package__) / "page"))


class FrontendMissingError(RuntimeError):
    """No directory with the page's index.html was found."""


def resolve_frontend_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the page lives: FRONTEND_DIR when set (to serve a customised page), else the packaged one."""
    candidate = Path(explicit) if explicit else PACKAGED_PAGE
    if not (candidate / "index.html").is_file():
        raise FrontendMissingError(f"the web page was not found: {candidate} has no index.html (check FRONTEND_DIR)")
    return candidate.resolve()


def frontend_blueprint(directory: Path) -> Blueprint:
    bp = Blueprint("frontend", __name__)

    @bp.get("/")
    def index() -> Response:
        # The page's URL carries the query (/?q=name); the HTML itself is the same for all.
        response = send_from_directory(directory, "index.html", max_age=0)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @bp.get("/static/<path:filename>")
    def static_file(filename: str) -> Response:
        # send_from_directory refuses paths escaping the directory (404), so no traversal.
        # The type of .js is set here, not read from the host's table (which may say text/plain):
        # a browser refuses to run a module script served without a JavaScript type.
        kind = {"mimetype": "text/javascript"} if filename.endswith(".js") else {}
        response = send_from_directory(directory, filename, max_age=0, **kind)
        # Revalidate on every load (cheap 304 via ETag) so a new release is never half-cached.
        response.headers["Cache-Control"] = "no-cache"
        return response

    return bp
