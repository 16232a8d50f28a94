"""``recommender serve``: the web page and the JSON API under gunicorn."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from gunicorn.app.base import BaseApplication

from .. import bootstrap
from ..config import Settings
from ..service import ServiceError
from ..web.worker import JsonErrorWorker
from . import main
from .db import database_options


class _Gunicorn(BaseApplication):
    """gunicorn driven from Python: settings from the command line, the app built per worker."""

    def __init__(self, factory: Callable[[], Any], options: dict[str, Any]) -> None:
        self._factory = factory
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Called in each worker after the fork (no preload): TensorFlow, ONNX Runtime and
        # database connections must not be shared across a fork.
        return self._factory()


@main.command("serve")
@click.option("--host", default=None, help="Address to listen on (default: HOST or 127.0.0.1).")
@click.option("--port", default=None, type=click.IntRange(0, 65535), help="Port (default: PORT or 5000).")
@click.option(
    "--web-workers",
    "--workers",
    "web_workers",
    default=None,
    type=click.IntRange(1, 32),
    help="Web server processes (default: WEB_WORKERS, 2). Each loads its own detector; the index "
    "snapshot is memory-mapped, so they share its pages. --workers is the deprecated old spelling.",
)
@click.option(
    "--threads", default=8, show_default=True, type=click.IntRange(1, 128), help="Request threads per process."
)
@click.option(
    "--frontend-dir",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder with the page's index.html (default: FRONTEND_DIR, else the repository's frontend/).",
)
@click.option("--access-log", is_flag=True, help="Log every request to stderr.")
@database_options
def serve(
    settings: Settings,
    host: str | None,
    port: int | None,
    web_workers: int | None,
    threads: int,
    frontend_dir: Path | None,
    access_log: bool,
) -> None:
    """Serve the discovery page and the API with gunicorn (WEB_WORKERS processes of threads).

    The server accepts connections at once; the detector and the index load in the
    background and /healthz answers 503 until they are ready.
    """
    from ..web.app import configure_worker, create_app
    from ..web.frontend import FrontendMissingError, resolve_frontend_dir

    if "--workers" in sys.argv[1:]:
        click.echo("serve --workers is deprecated: use --web-workers (DETECT_THREADS sets detections at once)", err=True)
    settings = settings.with_overrides(host=host, port=port, frontend_dir=frontend_dir, web_workers=web_workers)
    try:
        page_dir = resolve_frontend_dir(settings.frontend_dir)
    except FrontendMissingError as exc:
        raise click.ClickException(str(exc)) from None
    _check_database(settings)

    # Half the threads may hold uploads and a quarter more may wait for them; the rest stay free
    # for pages, thumbnails and searches.
    upload_slots, upload_queue = max(1, threads // 2), max(1, threads // 4)

    def factory() -> Any:
        configure_worker()
        return create_app(settings, frontend_dir=page_dir, upload_slots=upload_slots, upload_queue=upload_queue)

    _Gunicorn(factory, _gunicorn_options(settings, threads, access_log)).run()
    sys.exit(0)


def _gunicorn_options(settings: Settings, threads: int, access_log: bool) -> dict[str, Any]:
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    if ":" in shown_host:
        shown_host = f"[{shown_host}]"

    def when_ready(server: Any) -> None:
        bound = server.LISTENERS[0].sock.getsockname()[1] if server.LISTENERS else settings.port
        click.echo(f"Serving on http://{shown_host}:{bound}/  (Ctrl-C to stop)", err=True)
        click.echo("The detector and the index are loading; /healthz says 'ok' when ready.", err=True)

    bind_host = f"[{settings.host}]" if ":" in settings.host else settings.host
    return {
        "bind": f"{bind_host}:{settings.port}",
        "workers": settings.web_workers,
        # gthread, with gunicorn's own refusals (URL over 4 KB, bad headers) answered in JSON.
        "worker_class": JsonErrorWorker,
        "threads": threads,
        # gthread workers heartbeat from their main loop, so a long detection does not count;
        # this only catches a worker that is truly stuck.
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
        "preload_app": False,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "recommender",
        "when_ready": when_ready,
        # gunicorn's runtime control socket lives at one fixed path per user: two servers on
        # one machine (tests, a benchmark) would fight over it, and nothing here uses it.
        "control_socket_disable": True,
    }


def _check_database(settings: Settings) -> None:
    """Fail now, with the fix in the message, rather than serve 503s for a database that cannot work.

    SQLite is created and migrated by the service itself; PostgreSQL must be migrated by the
    operator (``recommender db upgrade``), so its schema is checked here.
    """
    try:
        bootstrap.open_database(settings).dispose()
    except ServiceError as exc:
        raise click.ClickException(exc.message) from None
