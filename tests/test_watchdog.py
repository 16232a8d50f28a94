"""Every database call of a bounded engine ends: a statement that would never finish is broken off.

The PostgreSQL side (a suspended server) is tested end to end in test_frozen_database.py; here
an endless SQLite statement stands for a stuck call, through the engine the service uses.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from recommender.service.errors import Unavailable, database_errors
from recommender.storage import Repository, create_database_engine, upgrade
from recommender.storage.database import breaker_of

ENDLESS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n"


def test_an_endless_statement_is_broken_off_and_the_engine_recovers_by_itself(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bounded.sqlite3'}"
    setup = create_database_engine(url)
    upgrade(setup)
    setup.dispose()
    engine = create_database_engine(url, timeout=0.5)
    repository = Repository(engine)
    breaker = breaker_of(engine)
    assert breaker is not None and breaker.down_for is None

    with pytest.raises(OperationalError, match="interrupted"), engine.connect() as conn:
        conn.exec_driver_sql(ENDLESS).scalar()
    assert breaker.down_for is not None, "a call that ran out of time marks the database as not answering"

    # The next call finds out whether it answers again: it does, so everything goes back to normal.
    assert repository.count() == 0
    assert breaker.down_for is None
    engine.dispose()


def test_a_call_that_runs_out_of_time_is_reported_as_unavailable(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}", timeout=0.5)
    with pytest.raises(Unavailable) as caught, database_errors(), engine.connect() as conn:
        conn.exec_driver_sql(ENDLESS).scalar()
    assert caught.value.status == 503 and "try again" in caught.value.message
    engine.dispose()


def test_without_a_timeout_nothing_is_watched(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    assert breaker_of(engine) is None and not hasattr(engine, "watchdog")
    engine.dispose()
