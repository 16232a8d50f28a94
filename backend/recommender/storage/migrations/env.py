"""Alembic environment: runs the migrations on one connection, inside one transaction.

``recommender db upgrade`` (recommender.storage.migrate) hands over an open connection in
``config.attributes["connection"]``; the plain ``alembic`` command falls back to the
service's own settings (DATABASE_URL / DATA_DIR).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, text

from recommender.storage.schema import metadata

# Any constant works; it only has to be the same for every process migrating this database.
_PG_MIGRATION_LOCK = 727_004_811


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables when needed.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two servers starting at once must not both create the tables.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) migrations are not supported; run `recommender db upgrade`")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from logging.config import fileConfig

    from recommender.config import Settings
    from recommender.storage.database import create_database_engine

    if context.config.config_file_name:  # the alembic command: show what it runs
        fileConfig(context.config.config_file_name, disable_existing_loggers=False)

    url = context.config.get_main_option("sqlalchemy.url") or Settings.from_env().resolved_database_url
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


main()
