"""Start-up in the background: the page and /healthz answer while the service gets ready.

Getting ready means opening the database, loading the index (a snapshot map plus the feed
since, or every vector on a first start) and the detector's weights. Doing it in a thread lets
the server accept connections at once and say "503 loading" until then, instead of refusing
connections (which load balancers and the page cannot tell from a crash). Once ready, the
collection follows the change feed, so changes made by other processes show up here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from ..errors import UserError
from ..service import Recommender
from .errors import ApiError

log = logging.getLogger(__name__)

# Seconds a client should wait before asking again while the service is loading.
RETRY_AFTER = "3"
# Pause between attempts to start the service in the background (doubling up to the maximum).
RETRY_FIRST_DELAY = 2.0
RETRY_MAX_DELAY = 30.0
FEED_POLL_SECONDS = 0.5


class ServiceLoader:
    """Holds the service once it is ready; views ask it with ``get()``."""

    def __init__(self, factory: Callable[[], Recommender], *, follow: bool = True) -> None:
        self._factory = factory
        self._follow = follow
        self._service: Recommender | None = None
        self._error: str | None = None
        self._public_error: str | None = None
        self._ready = threading.Event()
        self._started = False
        self._lock = threading.Lock()
        self.seconds: float | None = None

    def start(self, background: bool = True) -> None:
        """Load now (``background=False``: one attempt) or in a thread that retries on failure.

        Retrying lets a server started before its database (a container racing PostgreSQL,
        a network blip) recover by itself; meanwhile /healthz reports the last error.
        """
        with self._lock:
            if self._started:
                return
            self._started = True
        if background:
            threading.Thread(target=self._load_until_ready, name="recommender-loader", daemon=True).start()
        else:
            self._load()

    def _load_until_ready(self) -> None:
        delay = RETRY_FIRST_DELAY
        while not self._load():
            time.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_DELAY)

    def _load(self) -> bool:
        started = time.perf_counter()
        try:
            service = self._factory()
            try:
                snapshot = service.collection.refresh()
                service.detectors.load(snapshot.detector)
                if self._follow:
                    service.collection.follow(FEED_POLL_SECONDS)
            except BaseException:
                service.close()
                raise
        except Exception as exc:  # reported by /healthz and every API call, never swallowed
            message = str(exc) or type(exc).__name__
            if message != self._error:  # a retry failing the same way adds nothing to the log
                log.exception("the recommender service could not start")
            self._error = message
            # Clients see what went wrong in general terms; the driver's text (hosts, ports) and
            # paths stay in the log.
            self._public_error = exc.public if isinstance(exc, UserError) else "see the server log"
            return False
        else:
            self._service = service
            self._error = self._public_error = None
            self.seconds = time.perf_counter() - started
            log.info("service ready in %.1f s: detector %s, %d images indexed",
                     self.seconds, snapshot.detector, len(snapshot.index))  # type: ignore[arg-type]
            return True
        finally:
            self._ready.set()

    @property
    def ready(self) -> bool:
        return self._service is not None

    @property
    def error(self) -> str | None:
        """Why the last start failed, in words fit for any client (None: no failure)."""
        return self._public_error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the first attempt finished (successfully or not); True when ready."""
        self._ready.wait(timeout)
        return self.ready

    def get(self) -> Recommender:
        service = self._service
        if service is not None:
            return service
        if self._public_error is not None:
            raise ApiError(503, "unavailable", f"The service could not start: {self._public_error}",
                           {"Retry-After": RETRY_AFTER})
        raise ApiError(
            503,
            "loading",
            "The server is still starting (loading the detector and the index); try again in a few seconds.",
            {"Retry-After": RETRY_AFTER},
        )

    def close(self) -> None:
        if self._service is not None:
            self._service.close()
