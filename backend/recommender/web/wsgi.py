"""WSGI entry for any WSGI server: ``gunicorn 'recommender.web.wsgi:app'``.

Settings come from the environment. Run it without ``--preload``: the service (detector and
index) must be built inside each worker process, after the fork.
"""

from __future__ import annotations

from ..config import Settings
from .app import configure_worker, create_app

configure_worker()
app = create_app(Settings.from_env())
