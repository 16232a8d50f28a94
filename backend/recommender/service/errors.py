"""Errors of the use cases; ``message`` is written for the person who made the request."""

from __future__ import annotations

import contextlib
import errno
import logging
from collections.abc import Iterator

from sqlalchemy.exc import InterfaceError, OperationalError

from ..errors import error_kind
from ..storage.watchdog import DatabaseDown

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
StorageFull = error_kind("StorageFull", "storage_full", 507, "The disk (media or database) is full.", ServiceError)

# SQLite's "database or disk is full"; PostgreSQL's disk_full (SQLSTATE 53100).
_SQLITE_FULL = 13
_POSTGRES_DISK_FULL = "53100"
_STORAGE_FULL_MESSAGE = "The server's storage is full, so nothing was saved; try again later."


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text (driver errors span many), or its type's name."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_disk_full(exc: BaseException) -> bool:
    """Whether an OSError or a database driver's error says the disk is full."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    return getattr(exc, "sqlite_errorcode", None) == _SQLITE_FULL or getattr(exc, "sqlstate", None) == _POSTGRES_DISK_FULL


@contextlib.contextmanager
def database_errors() -> Iterator[None]:
    """Report a database that cannot be reached (or answer in time) as Unavailable, a full disk as StorageFull.

    Only connectivity and timeout errors are outages: anything else is a bug or bad input, and
    reporting it as an outage would page the wrong people. The driver's text names hosts and
    ports, so it goes to the log, not to the client. A full disk, whether the media store's
    (OSError ENOSPC) or the database's, is its own answer (507): retrying soon will not help.
    """
    try:
        yield
    except DatabaseDown as exc:  # known to be down: failed at once, nothing to log again
        raise Unavailable(f"{exc}; try again shortly") from exc
    except (OperationalError, InterfaceError) as exc:
        if is_disk_full(exc.orig or exc):
            log.error("the database's disk is full: %s", first_line(exc.orig or exc))
            raise StorageFull(_STORAGE_FULL_MESSAGE) from exc
        log.warning("database unavailable: %s", first_line(exc.orig or exc))
        raise Unavailable("the database is not available right now; try again shortly") from exc
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        log.error("the media store's disk is full: %s", exc)
        raise StorageFull(_STORAGE_FULL_MESSAGE) from exc
