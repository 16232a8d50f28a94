"""The static discovery page: ``/`` serves index.html, ``/static/<file>`` the rest of frontend/."""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Response, send_from_directory

_REPO_FRONTEND = Path(__file__).resolve().parents[3] / "frontend"


class FrontendMissingError(RuntimeError):
    """No directory with the page's index.html was found."""


def resolve_frontend_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where the page lives: an explicit path (FRONTEND_DIR), else the repository's frontend/.

    A source checkout (editable install) finds the repository's copy next to ``backend/``; an
    installed package (the container) has no such neighbour and is pointed at it by FRONTEND_DIR.
    The working directory's frontend/ is the last resort for ``recommender serve`` run from a
    checkout with a non-editable install.
    """
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    else:
        candidates += [_REPO_FRONTEND, Path.cwd() / "frontend"]
    for candidate in candidates:
        if (candidate / "index.html").is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise FrontendMissingError(
        f"the web page was not found (looked for index.html in: {tried}); set FRONTEND_DIR to the frontend/ directory"
    )


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
        response = send_from_directory(directory, filename, max_age=0)
        # Revalidate on every load (cheap 304 via ETag) so a new release is never half-cached.
        response.headers["Cache-Control"] = "no-cache"
        return response

    return bp
