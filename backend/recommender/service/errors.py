"""Errors of the use cases; ``message`` is written for the person who made the request."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from sqlalchemy.exc import InterfaceError, OperationalError

from ..errors import error_kind

log = logging.getLogger(__name__)


ServiceError = error_kind("ServiceError", "internal_error", 500, "A request the service cannot fulfil.")
NotFound = error_kind("NotFound", "not_found", 404, "No such image.", ServiceError)
InvalidRequest = error_kind("InvalidRequest", "bad_request", 400, "A parameter is out of range.", ServiceError)
Unavailable = error_kind("Unavailable", "unavailable", 503, "A dependency is not available now.", ServiceError)
SetupError = error_kind("SetupError", "setup", 503, "Cannot start as configured (database, schema).", Unavailable)
DetectorUnavailable = error_kind("DetectorUnavailable", "detector_unavailable", 503, "No usable weights.", Unavailable)
Busy = error_kind("Busy", "busy", 503, "Every detection slot stayed taken too long.", Unavailable)
PhotoFailed = error_kind(
    "PhotoFailed", "photo_failed", 422, "A queued photo that cannot be ingested; trying again will not help.", ServiceError
)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (driver errors span many), or its type's name."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Report a database that cannot be reached (or answer in time) as Unavailable.

    Only connectivity and timeout errors qualify: anything else is a bug or bad input, and
    reporting it as an outage would page the wrong people. The driver's text names hosts and
    ports, so it goes to the log, not to the client.
    """
    try:
        yield
    except (OperationalError, InterfaceError) as exc:
        log.warning("database unavailable: %s", first_line(exc.orig or exc))
        raise Unavailable("the database is not available right now; try again shortly") from exc
