"""The one place the application is assembled: settings → detector registry → storage → index → service.

The web app, every CLI command, the queue worker and the benchmarks build what they need here,
so each part is configured one way only. Tests pass ``detector_factory`` to use detectors they
made themselves.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from .config import Settings, SettingsError
from .detection import SPECS, Detector, DetectorError, DetectorSpec, create_detector, lookup, resolve
from .index import KINDS as INDEX_KINDS
from .service import Admin, Detectors, Ingest, LiveCollection, Queries, Recommender
from .service.errors import SetupError, database_errors, first_line
from .service.results import DISPLAY_THRESHOLD
from .storage import DatabaseURLError, MediaStore, Repository, SchemaError, create_database_engine, ensure_schema
from .storage.migrate import current_revision, head_revision, upgrade
from .vectors import detector_ranking

log = logging.getLogger(__name__)

DetectorFactory = Callable[[str], Detector]


def detector_spec(settings: Settings) -> DetectorSpec:
    """The registry entry DETECTOR (and DETECT_PROFILE) name; SettingsError if there is none."""
    try:
        return resolve(settings.detector, settings.detect_profile)
    except DetectorError as exc:
        raise SettingsError(str(exc)) from None


def runtime_threads(settings: Settings) -> int:
    # Concurrent detections share the cores: one runtime thread per detection each was measured
    # faster than every detection spreading over all cores (bench/ingest.py).
    return max(1, (os.cpu_count() or 1) // settings.detect_threads)


def registry_factory(settings: Settings) -> DetectorFactory:
    """Makes the detector of a registry name, configured by the settings."""
    weights, threads = settings.resolved_weights_dir, runtime_threads(settings)

    def make(name: str) -> Detector:
        return create_detector(lookup(name), weights, threads=threads)

    return make


def make_detector(settings: Settings, *, box_threshold: float | None = None) -> Detector:
    """The detector the settings name, without any database (``recommender detect``, benchmarks)."""
    return create_detector(
        detector_spec(settings), settings.resolved_weights_dir, threads=runtime_threads(settings), box_threshold=box_threshold
    )


@contextlib.contextmanager
def _database(settings: Settings, *, bounded: bool = True) -> Iterator[Engine]:
    """An engine for DATABASE_URL; its problems become a SetupError that says what to do.

    ``bounded`` puts the DB_TIMEOUT limit on every call (what the service runs on); schema
    migrations go without, as they may legitimately take long.
    """
    try:
        engine = create_database_engine(settings.resolved_database_url, timeout=settings.db_timeout if bounded else None)
    except DatabaseURLError as exc:
        raise SetupError(str(exc), public="DATABASE_URL cannot be used (the server log says why)") from None
    try:
        yield engine
    except SchemaError as exc:
        engine.dispose()
        raise SetupError(str(exc), public="the database schema is not up to date (the server log says what to run)") from None
    except DBAPIError as exc:
        engine.dispose()
        # The driver's text names the host and port: fine on the operator's console, not for clients.
        raise SetupError(f"cannot use the database: {first_line(exc.orig or exc)}",
                         public="the database is not available (the server log says why)") from None
    except BaseException:
        engine.dispose()
        raise


def open_database(settings: Settings, *, migrate: bool | None = None) -> Engine:
    """The engine, with the schema checked or applied.

    ``migrate=None`` applies migrations for SQLite (a local file the service owns) and only
    checks them for PostgreSQL, where schema changes are an explicit operator step
    (``recommender db upgrade``); a database that is behind is a SetupError naming it.
    The engine returned bounds every call by DB_TIMEOUT.
    """
    with _database(settings) as engine:
        applying = engine.dialect.name == "sqlite" if migrate is None else migrate
        if not applying:
            ensure_schema(engine, migrate=False)
            return engine
    with _database(settings, bounded=False) as unbounded:
        ensure_schema(unbounded, migrate=True)
        unbounded.dispose()
    return engine


def migrate_database(settings: Settings) -> tuple[str | None, str, str]:
    """Apply the migrations: (revision before, revision after, the database without its password)."""
    with _database(settings, bounded=False) as engine:
        before = current_revision(engine)
        after = upgrade(engine)
        engine.dispose()
        return before, after, engine.url.render_as_string(hide_password=True)


def database_revision(settings: Settings) -> tuple[str | None, str]:
    """(the database's schema revision or None, the newest this version knows)."""
    with _database(settings) as engine:
        current = current_revision(engine)
        engine.dispose()
        return current, head_revision()


def _tell_active(active: str, spec: DetectorSpec) -> None:
    """Say when the collection serves another detector than DETECTOR names: it keeps serving its
    own vectors (never mixed with another's), and a reindex switches."""
    if active == spec.name:
        return
    switch = f"`recommender reindex --detector {spec.name} --activate`"
    if active in SPECS and SPECS[active].superseded:
        log.warning("the collection's vectors come from %s, which %s supersedes (%s); it keeps serving them "
                    "until you run %s", active, spec.name, SPECS[active].description, switch)
    else:
        log.info("the collection uses detector %s (DETECTOR=%s only chooses a new collection's; switch with %s)",
                 active, spec.name, switch)


def build(settings: Settings, *, migrate: bool | None = None, detector_factory: DetectorFactory | None = None) -> Recommender:
    """The whole service for ``settings``. The index loads on first use (``collection.current()``)."""
    spec = detector_spec(settings)
    if settings.index not in INDEX_KINDS:
        raise SettingsError(f"INDEX must be one of {', '.join(INDEX_KINDS)}, got {settings.index!r}")
    engine = open_database(settings, migrate=migrate)
    repository = Repository(engine)
    try:
        with database_errors():
            active = repository.ensure_active(spec.name)
        _tell_active(active, spec)
        media = MediaStore(settings.media_dir)
        detectors = Detectors(detector_factory or registry_factory(settings), slots=settings.detect_threads)
        collection = LiveCollection(
            repository, index_kind=settings.index, snapshot_dir=settings.snapshot_dir, label_threshold=DISPLAY_THRESHOLD,
            ranking=detector_ranking,
        )
        admin = Admin(repository, media, detectors, collection)
        ingest = Ingest(repository, media, detectors, collection, max_upload_bytes=settings.max_upload_bytes,
                        clean_orphans=admin.clean_orphans)
        return Recommender(ingest, Queries(repository, media, collection), admin, detectors, collection, repository)
    except BaseException:
        repository.close()
        raise
