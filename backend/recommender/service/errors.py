"""Errors of the use cases; ``message`` is written for the person who made the request."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from sqlalchemy.exc import InterfaceError, OperationalError

log = logging.getLogger(__name__)


class ServiceError(Exception):
    code: str = "internal_error"
    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(ServiceError):
    code = "not_found"
    status = 404


class InvalidRequest(ServiceError):
    code = "bad_request"
    status = 400


class Unavailable(ServiceError):
    """A dependency (database, detector weights, detection capacity) is not available now."""

    code = "unavailable"
    status = 503


class DetectorUnavailable(Unavailable):
    code = "detector_unavailable"


class Busy(Unavailable):
    code = "busy"


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
