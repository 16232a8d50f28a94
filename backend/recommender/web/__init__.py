"""The web layer: Flask app factory, JSON API, the static discovery page."""

from .app import create_app

__all__ = ["create_app"]
