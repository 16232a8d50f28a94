"""The ingest task: one photo, keyed by its SHA-256, ingested by the service this worker process built once."""

from __future__ import annotations

import logging
import threading

from celery import Celery, Task

from .. import bootstrap
from ..config import Settings
from ..service import PhotoFailed, Recommender, Unavailable
from .app import INGEST_TASK

log = logging.getLogger(__name__)

# Transient errors (the database unreachable, every detection slot taken) are retried this many
# times, after 2, 4, 8, 16, 32 and 60 s (about two minutes); then the photo is reported failed.
MAX_RETRIES = 6
MAX_BACKOFF_SECONDS = 60

Outcome = dict[str, str | None]


class ProcessService:
    """The service of one worker process, built by ``bootstrap.build`` on first use and then shared
    by the pool's threads (the service is thread-safe; one detector in memory per process)."""

    def __init__(self, settings: Settings) -> None:
        # WORKER_CONCURRENCY detections at once: the pool has a few more threads (they decode
        # and store meanwhile), and each detection gets its share of the cores.
        self._settings = settings.with_overrides(detect_threads=settings.worker_concurrency)
        self._service: Recommender | None = None
        self._lock = threading.Lock()

    def get(self) -> Recommender:
        with self._lock:
            if self._service is None:
                self._service = bootstrap.build(self._settings)
            return self._service

    def close(self) -> None:
        with self._lock:
            if self._service is not None:
                self._service.close()
                self._service = None


def register(app: Celery, service: ProcessService) -> Task:
    """Add the ingest task, running on ``service``, to ``app``."""

    @app.task(name=INGEST_TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=MAX_RETRIES)
    def ingest_photo(task: Task, sha256: str, fmt: str, name_hint: str | None) -> Outcome:
        return run(task, service, sha256, fmt, name_hint)

    return ingest_photo


def run(task: Task, service: ProcessService, sha256: str, fmt: str, name_hint: str | None) -> Outcome:
    """Ingest the staged original; a photo that cannot be ingested is an outcome, not an error."""
    try:
        result = service.get().ingest.stored(sha256, fmt, name_hint)
    except PhotoFailed as exc:
        log.warning("%s (%s) failed: %s", name_hint, sha256[:12], exc.message)
        return outcome("failed", reason=exc.message)
    except Unavailable as exc:
        retries = task.request.retries
        if retries >= MAX_RETRIES:
            return outcome("failed", reason=f"{exc.message} (gave up after {retries} retries)")
        log.warning("%s (%s): %s; retrying", name_hint, sha256[:12], exc.message)
        raise task.retry(exc=exc, countdown=min(MAX_BACKOFF_SECONDS, 2 ** (retries + 1))) from exc
    # A duplicate here means the photo was stored after it was queued: by an earlier delivery of
    # this task (its worker died before acknowledging) or by the same photo queued twice.
    return outcome("duplicate" if result.duplicate else "ingested", name=result.image.name)


def outcome(kind: str, *, name: str | None = None, reason: str | None = None) -> Outcome:
    return {"outcome": kind, "name": name, "reason": reason}
