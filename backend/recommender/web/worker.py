"""gunicorn's worker, with its own error answers in the API's JSON shape instead of HTML.

Some requests never reach Flask: gunicorn refuses a request line over 4 KB (414), oversized or
malformed headers (431, 400), before the app sees them, and answers with a small HTML page.
Clients of a JSON API should not have to parse HTML for those. The worker lets gunicorn decide
and log as usual, captures the page it writes, and sends the same status as
``{"error": {"code", "message"}}``.

Run it with ``recommender serve`` (the default) or ``gunicorn -k recommender.web.worker.JsonErrorWorker``.
"""

from __future__ import annotations

import json
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

_ANSWERS: dict[int, tuple[str, str]] = {
    400: ("bad_request", "The request is not valid HTTP."),
    403: ("forbidden", "The request was refused."),
    414: ("uri_too_long", "The URL is too long; the limit is {limit} bytes for the request line."),
    417: ("expectation_failed", "The Expect header of the request cannot be met."),
    431: ("headers_too_large", "The request's headers are too large."),
    500: ("internal_error", "Something went wrong on the server; the error was logged."),
    501: ("not_implemented", "The request uses a transfer coding the server does not support."),
}


class _Page:
    """Stands in for the client's socket while gunicorn writes its HTML error page."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.written = b""

    def gettimeout(self) -> float:
        return 0.0  # "non-blocking already": gunicorn then just calls sendall

    def sendall(self, data: bytes) -> None:
        self.written += data

    def __getattr__(self, name: str) -> Any:  # anything else (addresses for the access log)
        return getattr(self._client, name)


def json_error(status: int, reason: str, limit: int) -> bytes:
    code, message = _ANSWERS.get(status, (f"http_{status}", reason or "The request was refused."))
    body = json.dumps({"error": {"code": code, "message": message.format(limit=limit)}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"X-Content-Type-Options: nosniff\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class JsonErrorWorker(ThreadWorker):
    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        page = _Page(client)
        super().handle_error(req, page, addr, exc)  # decides the status, logs, writes HTML to ``page``
        status_line = page.written.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        if len(status_line) < 2 or not status_line[1].isdigit():
            return
        reason = status_line[2] if len(status_line) > 2 else ""
        try:
            util.write_nonblock(client, json_error(int(status_line[1]), reason, self.cfg.limit_request_line))
        except Exception:  # noqa: BLE001 - the client is gone; gunicorn ignores this too
            self.log.debug("Failed to send error message.")
