"""The Celery application of the ingest queue, configured from the settings.

Delivery is at least once and the task is idempotent, so nothing is lost and nothing is stored
twice: a task is acknowledged only after it ran (``acks_late``), a worker holds no more tasks
than it runs (prefetch multiplier 1), and a task whose worker died goes back to the queue
(``reject_on_worker_lost`` for a pool process; for a whole worker killed with Redis as the
broker, after BROKER_VISIBILITY_TIMEOUT seconds). Running it again finds the photo's SHA-256
already stored: a duplicate, no second row.
"""

from __future__ import annotations

from celery import Celery
from kombu.utils.url import maybe_sanitize_url

from ..config import Settings, SettingsError
from ..service import Unavailable, first_line

INGEST_TASK = "recommender.ingest_photo"
# Our own queue name, so another Celery application on the same broker never takes our tasks.
QUEUE = "recommender.ingest"
# Outcomes stay this long for `ingest --queue` to read (about 250 bytes per photo in Redis).
RESULT_SECONDS = 24 * 3600


def make_app(settings: Settings) -> Celery:
    """The queue's Celery application (sending and working alike); SettingsError without BROKER_URL."""
    if not settings.broker_url:
        raise SettingsError("BROKER_URL is not set: the queue needs a broker, e.g. BROKER_URL=redis://127.0.0.1:6379/0")
    app = Celery("recommender", broker=settings.broker_url, backend=settings.resolved_result_backend, set_as_current=False)
    timeout = settings.broker_visibility_timeout
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=RESULT_SECONDS,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Redis has no acknowledgements: a delivered task is parked and handed out again when it
        # stays unacknowledged this long. Look for such tasks every tenth of that (Celery's
        # default looks every 100 s, which would dwarf a short timeout).
        broker_transport_options={
            "visibility_timeout": timeout,
            "unacked_restore_interval": max(1, timeout // 10),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        # A broker restart (seconds) must neither stop the queueing nor lose an outcome: publishing
        # retries for about a minute, and so does storing or reading an outcome.
        task_publish_retry_policy={"max_retries": 30, "interval_start": 0.5, "interval_step": 0.5, "interval_max": 2},
        result_backend_always_retry=True,
        result_backend_max_retries=30,
        result_backend_max_sleep_between_retries_ms=2000,
    )
    return app


def broker_name(settings: Settings) -> str:
    """The broker's URL without its password, for messages."""
    return maybe_sanitize_url(settings.broker_url or "")


def check_broker(app: Celery, settings: Settings) -> None:
    """Unavailable, saying which broker, when it cannot be reached (before any work starts)."""
    try:
        with app.connection_for_write() as connection:
            connection.ensure_connection(max_retries=2, interval_start=0.5, interval_step=0.5)
    except Exception as exc:  # noqa: BLE001 - each transport has its own errors; all mean "not reachable"
        raise Unavailable(f"cannot reach the broker at {broker_name(settings)}: {first_line(exc)}") from exc
