"""Apply and check the Alembic migrations shipped inside this package (``storage/migrations``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from .database import sqlite_path

# A package resource, so an installed package finds its migrations wherever it runs from.
SCRIPT_LOCATION = "recommender.storage:migrations"


class SchemaError(RuntimeError):
    """The database schema is missing, out of date, or newer than this code."""


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "db/migrations has no revisions"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database without the schema."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Migrate the database to ``revision``; safe when several processes do it at once."""
    config = alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    with _sqlite_file_lock(engine), engine.connect() as conn:
        if sqlite:
            # Rebuilding a table (batch mode) drops the old one, and with foreign keys on, that
            # drop would cascade into every detection and vector. The pragma only takes effect
            # outside a transaction, so it comes before the migration's own.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            conn.commit()
        finally:
            if sqlite:
                conn.rollback()
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    current = current_revision(engine)
    return current or ""


def check_schema(engine: Engine) -> None:
    """Raise SchemaError with the command to run unless the database is at the head revision."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    where = engine.url.render_as_string(hide_password=True)
    if current is None:
        raise SchemaError(f"the database {where} has no tables yet: run `recommender db upgrade` first")
    known = {rev.revision for rev in ScriptDirectory.from_config(alembic_config()).walk_revisions()}
    if current not in known:
        raise SchemaError(
            f"the database {where} is at revision {current}, which this version does not know "
            "(it was migrated by a newer version): upgrade the application"
        )
    raise SchemaError(f"the database {where} is at revision {current}, not {head}: run `recommender db upgrade`")


def ensure_schema(engine: Engine, *, migrate: bool) -> None:
    """Upgrade when ``migrate`` is true, otherwise only check (and explain what to run)."""
    if migrate:
        upgrade(engine)
    check_schema(engine)


@contextlib.contextmanager
def _sqlite_file_lock(engine: Engine) -> Iterator[None]:
    """Serialise migrations of one SQLite file across processes (PostgreSQL uses an advisory lock)."""
    path = sqlite_path(engine.url.render_as_string(hide_password=False))
    if path is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not on POSIX: concurrent first starts are the operator's problem
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".migrate-lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
