"""Engine creation with pooling and connection settings suited to each backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

# Long enough to ride out a concurrent writer (the CLI ingesting while the server runs).
SQLITE_BUSY_TIMEOUT_MS = 30_000


class DatabaseURLError(ValueError):
    """DATABASE_URL cannot be used."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for other backends and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_database_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``: SQLite in WAL mode with foreign keys on, or pooled PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(f"DATABASE_URL is not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            parsed,
            # Pooled connections move between the web server's threads.
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        event.listen(engine, "connect", _configure_sqlite)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # The installed driver is psycopg 3; plain "postgresql://" would look for psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
        # A server restart must not turn into errors on the next request.
        kwargs.setdefault("pool_pre_ping", True)
        return create_engine(parsed, **kwargs)
    raise DatabaseURLError(f"unsupported database {backend!r} in DATABASE_URL: use sqlite:/// or postgresql://")


def _configure_sqlite(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers (queries, the start-up index load) proceed while one writer commits.
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL never corrupts and keeps every commit across a process kill;
        # only a power loss may drop the newest commits (their media files become orphans).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()
