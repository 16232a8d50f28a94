"""A time limit on every use of a database connection, enforced from outside the stuck thread.

A database that stops answering (a suspended server, a half-dead network path) leaves the
calling thread blocked in the driver with nothing to wake it: the server cannot run its own
``statement_timeout``, and the kernel keeps acknowledging TCP, so keepalives see nothing wrong.
The watchdog therefore keeps a deadline per connection in use and, when one passes, breaks the
connection from its own thread: PostgreSQL's socket is shut down (the driver then raises an
OperationalError at once), SQLite's running statement is interrupted. The engine invalidates
such a connection, so it never goes back to the pool.

The deadline starts when a connection is checked out of the pool and restarts with every
statement, so one call may take up to ``limit`` seconds per round trip and no longer.

Once a call has run out of time, the ``Breaker`` lets one call at a time find out whether the
database answers again and fails the others at once: while the database is down, requests get
their 503 in microseconds instead of each holding a server thread for the whole limit (which
would leave none for the page or /healthz).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)


class Watchdog:
    """Breaks the database connections that stay busy past their deadline."""

    def __init__(self, limit: float, interrupt: Callable[[Any], None], on_break: Callable[[], None] | None = None) -> None:
        if limit <= 0:
            raise ValueError(f"the time limit must be positive, got {limit}")
        self.limit = limit
        self._interrupt = interrupt
        self._on_break = on_break or (lambda: None)
        self._lock = threading.Condition()
        self._deadlines: dict[int, tuple[float, Any]] = {}  # id(connection) -> (deadline, connection)
        self._interrupted: set[int] = set()
        self._wake_at: float | None = None  # when the thread looks next; None: nothing to watch
        self._thread: threading.Thread | None = None
        self._pid = 0

    def watch(self, connection: Any) -> None:
        """(Re)start the clock of ``connection``: it must be done within ``limit`` seconds."""
        deadline = time.monotonic() + self.limit
        with self._lock:
            self._interrupted.discard(id(connection))
            self._deadlines[id(connection)] = (deadline, connection)
            self._ensure_thread()
            # Every deadline is "now + limit", so only an idle thread needs waking: a busy one
            # wakes at the earliest deadline and finds the later ones then.
            if self._wake_at is None:
                self._lock.notify()

    def release(self, connection: Any) -> None:
        """The connection is idle again (back in the pool) or about to be closed."""
        with self._lock:
            self._deadlines.pop(id(connection), None)

    def forget(self, connection: Any) -> None:
        with self._lock:
            self._deadlines.pop(id(connection), None)
            self._interrupted.discard(id(connection))

    def interrupted(self, connection: Any) -> bool:
        """Whether the watchdog broke this connection (its last call ran out of time)."""
        with self._lock:
            return id(connection) in self._interrupted

    def _ensure_thread(self) -> None:
        # A forked child (a gunicorn worker) inherits the object but not the thread.
        if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="db-watchdog", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                for key, (deadline, connection) in list(self._deadlines.items()):
                    if deadline <= now:
                        del self._deadlines[key]
                        self._interrupted.add(key)
                        # Under the lock: a connection cannot be released (and closed, and its
                        # socket number reused) while it is being broken.
                        self._break(connection)
                self._wake_at = min((d for d, _ in self._deadlines.values()), default=None)
                self._lock.wait(None if self._wake_at is None else max(0.0, self._wake_at - now))

    def _break(self, connection: Any) -> None:
        log.warning("a database call took longer than %.1f s: breaking its connection", self.limit)
        self._on_break()
        try:
            self._interrupt(connection)
        except Exception:  # noqa: BLE001 - a connection that is already gone needs nothing more
            log.debug("could not interrupt a database connection", exc_info=True)


class DatabaseDown(Exception):
    """The database did not answer in time lately, and another call is finding out whether it does now."""


class Breaker:
    """After a timeout, one call at a time tries the database; the others fail at once."""

    def __init__(self) -> None:
        self._down_since: float | None = None
        self._probe = threading.Lock()

    @property
    def down_for(self) -> float | None:
        """Seconds since the database stopped answering, None while it answers."""
        since = self._down_since
        return None if since is None else time.monotonic() - since

    def trip(self) -> None:
        if self._down_since is None:
            self._down_since = time.monotonic()

    @contextlib.contextmanager
    def admit(self, failures: tuple[type[BaseException], ...]) -> Iterator[None]:
        """Run a database call; ``failures`` are the errors that mean "still no answer"."""
        if self._down_since is None:
            yield
            return
        if not self._probe.acquire(blocking=False):
            raise DatabaseDown(f"the database has not answered for {self.down_for or 0:.0f} s")
        try:
            yield
        except failures:
            raise
        except BaseException:
            self._down_since = None  # it answered, if only with an error of another kind
            raise
        else:
            if self._down_since is not None:
                log.info("the database answers again")
            self._down_since = None
        finally:
            self._probe.release()


def shut_down_socket(connection: Any) -> None:
    """Interrupt a psycopg connection: shut its socket down, so the blocked read fails at once.

    Only the shutdown reaches the peer; the file descriptor stays the driver's to close.
    """
    if getattr(connection, "closed", True):
        return
    duplicate = socket.socket(fileno=os.dup(connection.fileno()))
    try:
        with contextlib.suppress(OSError):
            duplicate.shutdown(socket.SHUT_RDWR)
    finally:
        duplicate.close()


def interrupt_sqlite(connection: Any) -> None:
    connection.interrupt()
