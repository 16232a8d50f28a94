"""Errors a person can act on: each kind has a stable code, an HTTP status and a message for people.

Kinds are declared one per line with ``error_kind``: a table of (name, code, status, meaning),
so the codes the API documents stand in one column. The web layer answers any ``UserError``
with its status and ``{"error": {"code", "message"}}``; the CLI prints the message.

``message`` is for the person at the console (it may name the database host, a path);
``public`` is what a remote client is shown, and defaults to ``message``.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str, *, public: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.public = message if public is None else public


def error_kind(name: str, code: str, status: int, meaning: str, base: type[UserError] = UserError) -> type[UserError]:
    """A subclass of ``base`` with this code and status, declared in the calling module."""
    module = sys._getframe(1).f_globals.get("__name__", __name__)  # for reprs and tracebacks
    return type(name, (base,), {"code": code, "status": status, "__doc__": meaning, "__module__": module})
