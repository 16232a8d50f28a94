"""``recommender worker``: a Celery worker that runs ingest tasks, its service built once for the process."""

from __future__ import annotations

import os
import socket

from ..config import Settings
from .app import check_broker, make_app
from .ingest import ProcessService, register

# Pool threads beyond the detection slots: they read, decode and store photos while the others
# detect, so the cores never wait for a file or a commit (in-process ingest does the same).
PREPARE_THREADS = 2


def run_worker(settings: Settings, *, loglevel: str = "INFO") -> int:
    """Consume ingest tasks until stopped (SIGTERM/SIGINT: finish the running tasks); the exit status.

    The broker, the database and the detector's weights are checked before the first task is
    taken, so a worker that cannot work says why and stops instead of failing every photo.
    WORKER_CONCURRENCY threads share one service and one loaded detector: one model in memory
    per process (Mask R-CNN holds about 2 GB), and decoding and detection release the GIL.
    PREPARE_THREADS more threads take tasks too and wait for a detection slot once decoded.
    """
    app = make_app(settings)
    service = ProcessService(settings)
    register(app, service)
    check_broker(app, settings)
    try:
        service.get().ingest.load_detector()
        worker = app.Worker(
            # Unique per process, so several workers on one machine are told apart.
            hostname=f"recommender-{os.getpid()}@{socket.gethostname()}",
            pool_cls="threads",
            concurrency=settings.worker_concurrency + PREPARE_THREADS,
            loglevel=loglevel.upper(),
            # No worker-to-worker chatter at start-up or while running: tasks need none of it.
            without_gossip=True,
            without_mingle=True,
        )
        worker.start()
        return worker.exitcode or 0
    finally:
        service.close()
