"""The sending side of ``recommender ingest --queue``: stage each photo, enqueue its task, follow the outcomes.

A task's id is its photo's SHA-256: the same photo queued twice is one task id, and running it
again is a duplicate, not a second row. Outcomes are read from Celery's result backend (by
default the broker's own Redis), a few hundred ids per round trip, rather than by looking for
rows in the database: a photo that failed leaves no row, and its reason has to come back from
the worker. The database is asked only while staging: a photo it already holds is a
duplicate at once and is not enqueued.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from celery import states
from celery.backends.base import BaseKeyValueStoreBackend

from ..config import Settings
from ..service import IngestEvent, IngestSummary, Recommender, Staged, Unavailable, find_image_files, first_line, reason
from .app import INGEST_TASK, QUEUE, broker_name, check_broker, make_app

POLL_SECONDS = 0.2
# Outcomes asked for per poll: those of the oldest outstanding tasks (a queue drains in order).
WINDOW = 500
# How long following the outcomes rides out an unreachable result backend (a broker restart).
RECONNECT_SECONDS = 120.0
# An outcome read is kept only this much longer (for another run following the same photo), so
# the backend holds minutes of outcomes, not RESULT_SECONDS' worth (about 450 bytes each in Redis).
READ_OUTCOME_SECONDS = 600

# Redis hands a message over with a destructive pop before the worker books it as unacknowledged:
# a broker killed in between loses that one task, and no visibility timeout brings it back. So a
# run whose queue is empty while outcomes are still missing, with nothing new for this long (at
# least twice the visibility timeout, after which a dead worker's tasks come back anyway), sends
# the missing tasks again; running one twice is a duplicate, not a second row.
def resend_after(settings: Settings) -> float:
    return max(15.0, 2.0 * settings.broker_visibility_timeout)


Progress = Callable[[IngestEvent], None]


class QueueClient:
    def __init__(self, settings: Settings, service: Recommender) -> None:
        self._settings = settings
        self._service = service
        self._app = make_app(settings)

    def ingest(self, paths: Iterable[str | os.PathLike[str]], *, progress: Progress | None = None,
               wait: bool = True) -> IngestSummary:
        """Queue the photos of ``paths``; with ``wait``, follow them until every one is done.

        Without ``wait`` the summary counts only what was settled here (duplicates, unreadable
        files); the rest is queued. Interrupting stops the queueing, not the queued tasks.
        """
        check_broker(self._app, self._settings)
        started = time.perf_counter()
        files, missing = find_image_files(paths)
        batch = _Batch(IngestSummary(total=len(files) + len(missing)), progress or (lambda _event: None))
        batch.start(missing, self._service.admin.clean_orphans())
        with self._app.producer_or_acquire() as producer:
            for path, staged in self._service.ingest.stage_files(files):
                if isinstance(staged, BaseException):
                    batch.failed(path, reason(staged))
                elif staged.existing is not None or staged.sha256 in batch.sent:
                    batch.duplicate(path, staged.existing.name if staged.existing else None)
                else:
                    self._send(producer, staged, keep_outcome=wait)
                    batch.queued(path, staged, announce=not wait)
                if wait and batch.poll_due():
                    self._poll(batch)
        while wait and batch.outstanding:
            time.sleep(POLL_SECONDS)
            self._poll(batch)
            if batch.quiet_for() > resend_after(self._settings):
                if self._queue_is_empty():
                    self._resend(batch)
                batch.resent()  # ask the broker again only after another quiet period, not every poll
        batch.summary.seconds = time.perf_counter() - started
        return batch.summary

    def _send(self, producer: object, staged: Staged, *, keep_outcome: bool, again: bool = False) -> None:
        try:
            if not again:  # an outcome left by an earlier run of this photo must not answer for this one
                self._app.AsyncResult(staged.sha256).forget()
            # Nobody reads the outcomes of --no-wait: workers log failures, and they are not kept.
            self._app.send_task(INGEST_TASK, args=(staged.sha256, staged.format, staged.name_hint),
                                task_id=staged.sha256, producer=producer, ignore_result=not keep_outcome)
        except Exception as exc:  # noqa: BLE001 - every transport raises its own connection errors
            raise Unavailable(
                f"lost the broker at {broker_name(self._settings)} while queueing ({first_line(exc)}); the photos "
                "queued so far will be ingested: run the same command again to queue the rest"
            ) from exc

    def _queue_is_empty(self) -> bool:
        try:
            with self._app.connection_for_write() as connection:
                return connection.default_channel.queue_declare(QUEUE, passive=True).message_count == 0
        except Exception as exc:  # noqa: BLE001 - transports raise their own errors
            # Redis keeps no empty list, so an empty queue does not exist: NOT_FOUND. Anything
            # else (an unreachable broker) is not "empty": following rides it out, try later.
            return "NOT_FOUND" in str(exc) or type(exc).__name__ == "NotFound"

    def _resend(self, batch: _Batch) -> None:
        try:
            with self._app.producer_or_acquire() as producer:
                for staged in list(batch.outstanding_staged()):
                    self._send(producer, staged, keep_outcome=True, again=True)
        except Unavailable:
            pass  # the broker went away again: the next quiet period tries again

    def _poll(self, batch: _Batch) -> None:
        try:
            ready = self._ready(list(itertools.islice(batch.outstanding, WINDOW)))
        except Exception as exc:  # noqa: BLE001 - the result backend's connection errors, by transport
            batch.unreachable(exc, f"cannot read outcomes from {broker_name(self._settings)}")
            return
        batch.reachable()
        for task_id, meta in ready.items():
            batch.done(task_id, meta["status"], meta["result"])

    def _ready(self, ids: list[str]) -> dict[str, dict]:
        """Outcomes (Celery's task meta) of those of ``ids`` whose task has finished."""
        backend = self._app.backend
        if isinstance(backend, BaseKeyValueStoreBackend):  # Redis and the like: one MGET
            ready = dict(backend.get_many(ids, interval=0, max_iterations=1))
            for task_id in ready:
                backend.expire(backend.get_key_for_task(task_id), READ_OUTCOME_SECONDS)
            return ready
        found = {}
        for task_id in ids[:50]:  # other backends answer one id at a time: keep a poll short
            result = self._app.AsyncResult(task_id)
            if result.ready():
                found[task_id] = {"status": result.state, "result": result.result}
        return found


class _Batch:
    """The tally of one run and the progress events it emits; tasks still outstanding, in order."""

    def __init__(self, summary: IngestSummary, notify: Progress) -> None:
        self.summary = summary
        self.notify = notify
        self.outstanding: dict[str, Path] = {}  # task id -> the file it was queued for
        self.sent: set[str] = set()
        self._staged: dict[str, Staged] = {}  # what to send again for an outstanding task
        self._last_poll = time.monotonic()
        self._last_news = time.monotonic()
        self._unreachable_since: float | None = None

    def start(self, missing: list[Path], orphans_removed: int) -> None:
        self.summary.orphans_removed = orphans_removed
        self.notify(IngestEvent("started", self.summary.total))
        for path in missing:
            self.failed(path, "no such file or folder")

    def failed(self, path: Path, why: str) -> None:
        self.summary.failed.append((str(path), why))
        self.notify(IngestEvent("failed", self.summary.total, path, message=why))

    def duplicate(self, path: Path, name: str | None) -> None:
        self.summary.duplicates += 1
        self.notify(IngestEvent("duplicate", self.summary.total, path, name))

    def queued(self, path: Path, staged: Staged, *, announce: bool) -> None:
        task_id = staged.sha256
        self.outstanding[task_id] = path
        self._staged[task_id] = staged
        self.sent.add(task_id)
        self._last_news = time.monotonic()
        if announce:
            self.notify(IngestEvent("queued", self.summary.total, path))

    def poll_due(self) -> bool:
        if time.monotonic() - self._last_poll < POLL_SECONDS:
            return False
        self._last_poll = time.monotonic()
        return True

    def quiet_for(self) -> float:
        """Seconds since a task was last queued, sent again or finished."""
        return time.monotonic() - self._last_news

    def outstanding_staged(self) -> Iterable[Staged]:
        return (self._staged[task_id] for task_id in self.outstanding)

    def resent(self) -> None:
        """Start another quiet period (after sending again, or after finding the queue busy)."""
        self._last_news = time.monotonic()

    def done(self, task_id: str, status: str, result: object) -> None:
        path = self.outstanding.pop(task_id)
        self._staged.pop(task_id, None)
        self._last_news = time.monotonic()
        if status == states.SUCCESS and isinstance(result, dict) and result.get("outcome") != "failed":
            # "duplicate" from a worker still counts as new: the photo was not stored when it was
            # queued, so this run stored it (a redelivered task finds its own earlier commit).
            self.summary.ingested += 1
            self.notify(IngestEvent("ingested", self.summary.total, path, result.get("name")))
        elif status == states.SUCCESS and isinstance(result, dict):
            self.failed(path, str(result.get("reason") or "failed"))
        else:
            self.failed(path, f"the worker stopped with an error ({status}: {first_line(result)})"
                        if isinstance(result, BaseException) else f"the task ended as {status}")

    def unreachable(self, exc: BaseException, what: str) -> None:
        now = time.monotonic()
        self._unreachable_since = self._unreachable_since or now
        if now - self._unreachable_since > RECONNECT_SECONDS:
            raise Unavailable(f"{what} for {RECONNECT_SECONDS:.0f} s ({first_line(exc)}); the queued photos "
                              "will still be ingested: run the same command again to follow them") from exc

    def reachable(self) -> None:
        self._unreachable_since = None
