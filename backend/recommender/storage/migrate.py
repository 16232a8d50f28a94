"""Apply and check the Alembic migrations in the repository's ``db/`` folder."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from .database import sqlite_path

# backend/recommender/storage/migrate.py -> repository root
_REPO_ROOT = Path(__file__).resolve().parents[3]


class SchemaError(RuntimeError):
    """The database schema is missing, out of date, or newer than this code."""


def migrations_dir() -> Path:
    """The ``db/`` folder holding alembic.ini and migrations/ (repository or working directory)."""
    for candidate in (_REPO_ROOT / "db", Path.cwd() / "db"):
        if (candidate / "migrations" / "env.py").is_file():
            return candidate
    raise SchemaError(
        "the database migrations (db/migrations) were not found next to the package or in the "
        "current directory; run the command from the repository root"
    )


def alembic_config() -> Config:
    root = migrations_dir()
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
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
    with _sqlite_file_lock(engine), engine.connect() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
        conn.commit()
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
