"""Engine creation with pooling and connection settings suited to each backend.

With a ``timeout`` every use of a connection is bounded (see ``watchdog``): opening one, the
check that a pooled one still works, each statement, each commit or rollback. Errors of a
connection that ran out of time are reported as disconnects, so the pool drops it; the
service answers them as "unavailable" and recovers as soon as the database answers again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from .watchdog import Breaker, Watchdog, interrupt_sqlite, shut_down_socket

# The default time limit of one database round trip, in seconds (DB_TIMEOUT).
DEFAULT_TIMEOUT = 5.0
# SQLite's wait for another process's write lock when no time limit is set (migrations, tools).
SQLITE_BUSY_TIMEOUT_S = 30.0


class DatabaseURLError(ValueError):
    """DATABASE_URL cannot be used."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, None for other backends and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_database_engine(url: str, *, timeout: float | None = None, **kwargs: Any) -> Engine:
    """An engine for ``url``: SQLite in WAL mode with foreign keys on, or pooled PostgreSQL.

    ``timeout`` (seconds) bounds every round trip to the database; None leaves them unbounded
    (schema migrations, which may legitimately run long).
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseURLError(f"DATABASE_URL is not a database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        busy = SQLITE_BUSY_TIMEOUT_S if timeout is None else timeout
        if timeout is not None:
            kwargs.setdefault("pool_timeout", timeout)
        engine = create_engine(
            parsed,
            # Pooled connections move between the web server's threads.
            connect_args={"check_same_thread": False, "timeout": busy},
            **kwargs,
        )
        event.listen(engine, "connect", lambda conn, _record: _configure_sqlite(conn, busy))
        if timeout is not None:
            # Past the busy timeout, so a locked database reports "locked", not "interrupted".
            _bound(engine, timeout + 1.0, interrupt_sqlite, ping=False)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            # The installed driver is psycopg 3; plain "postgresql://" would look for psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs.setdefault("pool_size", 5)
        kwargs.setdefault("max_overflow", 10)
        if timeout is None:
            # A server restart must not turn into errors on the next request.
            kwargs.setdefault("pool_pre_ping", True)
            return create_engine(parsed, **kwargs)
        kwargs.setdefault("pool_timeout", timeout)
        kwargs["connect_args"] = {**_postgres_limits(timeout, parsed.query), **kwargs.get("connect_args", {})}
        engine = create_engine(parsed, **kwargs)
        _bound(engine, timeout, shut_down_socket, ping=True)
        return engine
    raise DatabaseURLError(f"unsupported database {backend!r} in DATABASE_URL: use sqlite:/// or postgresql://")


def _postgres_limits(timeout: float, query: Any) -> dict[str, Any]:
    """libpq settings that bound what the server and the network can bound themselves."""
    ms = int(timeout * 1000)
    limits: dict[str, Any] = {
        "connect_timeout": max(2, math.ceil(timeout)),  # libpq's minimum is 2 s
        # A peer that vanished (not merely slow) is noticed on idle pooled connections too.
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": 2 * ms,
        # A statement the server itself finds slow (locks, a huge scan) is cancelled there.
        "options": f"-c statement_timeout={ms}",
    }
    if "options" in query:  # the URL's own options come first; ours are added
        limits["options"] = f"{query['options']} {limits['options']}"
    return {k: v for k, v in limits.items() if k == "options" or k not in query}


def breaker_of(engine: Engine) -> Breaker | None:
    """The breaker of an engine made with a timeout (None without one)."""
    return getattr(engine, "breaker", None)


def _bound(engine: Engine, limit: float, interrupt: Any, *, ping: bool) -> None:
    """Put every connection of ``engine`` under a watchdog while it is checked out."""
    breaker = Breaker()
    watchdog = Watchdog(limit, interrupt, on_break=breaker.trip)
    engine.breaker = breaker  # type: ignore[attr-defined]
    engine.watchdog = watchdog  # type: ignore[attr-defined]  # for tests and diagnostics
    dbapi_error = engine.dialect.loaded_dbapi.Error

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        watchdog.watch(dbapi_connection)
        if not ping:
            return
        try:
            # Outside a transaction, so the ping leaves none open: a read can then run in
            # autocommit (no BEGIN and ROLLBACK round trips, see Repository._reading).
            dbapi_connection.autocommit = True
            try:
                with dbapi_connection.cursor() as cursor:
                    cursor.execute("SELECT 1")  # as pool_pre_ping does, but under the watchdog
            finally:
                dbapi_connection.autocommit = False
        except dbapi_error:
            if watchdog.interrupted(dbapi_connection):
                raise  # no answer in time: a new connection would wait just the same
            raise DisconnectionError("the pooled connection was closed by the server") from None

    def _restart(conn: Any, *_args: Any) -> None:
        # Each statement, commit and rollback gets the whole limit of its own.
        if not conn.invalidated:
            watchdog.watch(conn.connection.dbapi_connection)

    for name in ("before_cursor_execute", "commit", "rollback"):
        event.listen(engine, name, _restart)

    @event.listens_for(engine, "handle_error")
    def _timed_out(context: Any) -> None:
        conn = context.connection
        if conn is not None and not conn.invalidated and watchdog.interrupted(conn.connection.dbapi_connection):
            context.is_disconnect = True  # never back into the pool
        elif type(context.original_exception).__name__ == "ConnectionTimeout":
            breaker.trip()  # psycopg's connect_timeout: the server accepts but does not answer

    @event.listens_for(engine, "reset")
    def _reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        watchdog.watch(dbapi_connection)  # the rollback before it goes back to the pool

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection is not None:
            watchdog.release(dbapi_connection)

    @event.listens_for(engine, "close")
    def _close(dbapi_connection: Any, _record: Any) -> None:
        watchdog.forget(dbapi_connection)

    @event.listens_for(engine, "invalidate")
    def _invalidate(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
        watchdog.forget(dbapi_connection)


def _configure_sqlite(dbapi_connection: Any, busy_timeout: float) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # WAL lets readers (queries, the start-up index load) proceed while one writer commits.
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL never corrupts and keeps every commit across a process kill;
        # only a power loss may drop the newest commits (their media files become orphans).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
    finally:
        cursor.close()
