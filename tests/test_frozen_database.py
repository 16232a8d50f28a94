"""A database that stops answering: the server answers anyway, within its bound, and recovers alone.

The test owns a PostgreSQL cluster (initdb on a free port), runs the real server against it
(``recommender serve``, gunicorn), then suspends every process of the cluster with SIGSTOP: the
connections stay open and nothing answers, the worst kind of outage (the kernel keeps
acknowledging TCP, so no keepalive notices). Then:

* the page, its files, /openapi.json and /healthz answer within 1 s; /healthz says what is wrong;
* every API call answers 503 JSON within the bound (DB_TIMEOUT plus a margin), and once the
  server knows the database is down, at once, even when more requests come than it has threads;
* after SIGCONT everything works again, in the same server process, without a restart.

The measured times are printed (run with -s): they are the "after" column of the issue's table.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from PIL import Image

from conftest import RECOMMENDER, ServerProcess, free_port
from own_postgres import OwnPostgres

pytestmark = pytest.mark.slow

BOUND = 3.0  # DB_TIMEOUT of the server under test, seconds
MARGIN = 2.0  # request handling, scheduling on a busy machine
CLIENT_TIMEOUT = float(os.environ.get("FAULT_CLIENT_TIMEOUT", BOUND + MARGIN + 5))  # how long a client waits
PAGE_BOUND = 1.0  # the page, its files, /openapi.json and /healthz


@pytest.fixture(scope="module")
def cluster():
    try:
        pg = OwnPostgres()
    except RuntimeError as exc:
        pytest.fail(str(exc))
    pg.start()
    yield pg
    pg.remove()


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
            ) -> tuple[int | None, dict | None, float]:
    """(status or None when no answer came in CLIENT_TIMEOUT, JSON body or None, seconds)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        parsed = json.loads(data) if response.getheader("Content-Type", "").startswith("application/json") else None
        return response.status, parsed, time.monotonic() - started
    except (TimeoutError, OSError):
        return None, None, time.monotonic() - started
    finally:
        conn.close()


def multipart(data: bytes, filename: str) -> tuple[bytes, dict[str, str]]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file_to_upload"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def photo_bytes(path: Path, tag: int) -> bytes:
    """The photo re-encoded with one pixel changed: new bytes, so every upload is detected and stored."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    rgb.putpixel((0, 0), (tag % 256, 7, 7))
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=90)
    return out.getvalue()


def api_calls(names: list[str], upload: tuple[bytes, dict[str, str]]) -> list[tuple[str, str, bytes | None, dict]]:
    name = names[0]
    return [
        ("GET", f"/get_similar/{name}", None, {}),
        ("GET", f"/images/{name}/detections", None, {}),
        ("GET", f"/images/{name}", None, {}),
        ("GET", f"/images/{names[1]}/thumb", None, {}),
        ("GET", "/random?n=3", None, {}),
        ("POST", "/upload_file", upload[0], upload[1]),
    ]


def run_concurrently(port: int, calls: list[tuple[str, str, bytes | None, dict]]) -> list[tuple[str, int | None, dict | None, float]]:
    results: list = [None] * len(calls)

    def one(i: int) -> None:
        method, path, body, headers = calls[i]
        results[i] = (f"{method} {path.split('?')[0]}", *request(port, method, path, body, headers))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def page_checks(port: int) -> list[tuple[str, int | None, dict | None, float]]:
    return [(f"GET {path}", *request(port, "GET", path)) for path in ("/healthz", "/", "/static/app.js", "/openapi.json")]


def show(title: str, rows: list[tuple[str, int | None, dict | None, float]]) -> None:
    print(f"\n{title}")
    for what, status, _body, seconds in rows:
        print(f"  {what:<40} {status if status is not None else 'no answer':>9}  {seconds:6.2f} s")


def assert_unavailable(rows: list[tuple[str, int | None, dict | None, float]], bound: float, db_port: int) -> None:
    for what, status, body, seconds in rows:
        assert status == 503, f"{what}: {status} after {seconds:.1f} s"
        assert body and set(body) == {"error"} and body["error"]["code"] == "unavailable", f"{what}: {body}"
        assert str(db_port) not in body["error"]["message"], f"{what}: the database's address leaks: {body}"
        assert seconds <= bound, f"{what} took {seconds:.1f} s (bound {bound} s)"


def assert_pages_answer(rows: list[tuple[str, int | None, dict | None, float]]) -> None:
    for what, status, body, seconds in rows:
        expected = 503 if what == "GET /healthz" else 200
        assert status == expected, f"{what}: {status} after {seconds:.1f} s"
        assert seconds <= PAGE_BOUND, f"{what} took {seconds:.2f} s"
    health = rows[0][2]
    assert health["status"] == "error" and "database" in health["message"], health


def test_a_frozen_database_is_answered_within_the_bound_and_the_server_recovers_alone(
    cluster: OwnPostgres, tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    url = cluster.create_database("frozen")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "DETECTOR", "IMAGES_DIR")},
        "DATABASE_URL": url, "DATA_DIR": str(tmp_path / "data"), "WEIGHTS_DIR": str(weights_dir),
        "PORT": str(free_port()), "DB_TIMEOUT": str(BOUND),
    }
    subprocess.run([str(RECOMMENDER), "db", "upgrade"], env=env, check=True, capture_output=True, timeout=300)
    photos = coco_dev_images[:4]
    with ServerProcess([str(RECOMMENDER), "serve", "--web-workers", "1", "--threads", "8"], env,
                       tmp_path / "server.log") as server:
        server.wait_ready()
        names = []
        for i, path in enumerate(photos[:3]):
            status, body, _ = request(server.port, "POST", "/upload_file", *multipart(photo_bytes(path, i), path.name))
            assert status == 201, body
            names.append(body["name"])
        pid = request(server.port, "GET", "/healthz")[1]["pid"]
        new_upload = multipart(photo_bytes(photos[3], 99), photos[3].name)

        cluster.freeze()
        try:
            # Requests in flight when the database froze: each holds its thread up to the bound,
            # while the page and /healthz are answered by the other threads.
            wave: list = []
            stuck = threading.Thread(target=lambda: wave.extend(run_concurrently(server.port, api_calls(names, new_upload))))
            stuck.start()
            time.sleep(0.3)
            pages_during = page_checks(server.port)
            stuck.join()
            show(f"frozen, first requests (DB_TIMEOUT={BOUND} s)", wave)
            show("frozen, while those are waiting", pages_during)
            assert_unavailable(wave, BOUND + MARGIN, cluster.port)
            assert_pages_answer(pages_during)

            # Known to be down: more API requests than the server has threads are answered at
            # once, but for the one that finds out whether the database is back (it may wait the
            # bound); the page and /healthz alongside them.
            flood = run_concurrently(server.port, api_calls(names, new_upload) * 6)
            pages_after = page_checks(server.port)
            show("frozen, known down: 36 API requests at once (slowest first)", sorted(flood, key=lambda r: -r[3])[:6])
            show("frozen, known down: page and health", pages_after)
            assert_unavailable(flood, BOUND + MARGIN, cluster.port)
            assert sorted(r[3] for r in flood)[-2] <= PAGE_BOUND, "only one request at a time waits for the database"
            assert_pages_answer(pages_after)
        finally:
            cluster.thaw()

        resumed = time.monotonic()
        while True:
            status, body, _ = request(server.port, "GET", "/healthz")
            if status == 200:
                break
            assert time.monotonic() - resumed < BOUND + 15, f"not healthy again after the database resumed: {body}"
            time.sleep(0.2)
        print(f"\nhealthy again {time.monotonic() - resumed:.2f} s after SIGCONT")
        assert body["pid"] == pid, "the same server process, not a restarted one"
        again = run_concurrently(server.port, api_calls(names, new_upload))
        show("resumed", again)
        assert [r[1] for r in again] == [200, 200, 200, 200, 200, 201]
        assert request(server.port, "GET", "/healthz")[1]["images"] == 4
