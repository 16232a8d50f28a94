"""The real server's edges: what gunicorn refuses before Flask, and clients that send before reading.

One ``recommender serve`` (SQLite) for the module. Every answer, including gunicorn's own
refusals, is the API's JSON error shape; a client that sends a whole oversized body before
reading (Python's urllib does) reads the 413 instead of a broken pipe.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from conftest import RECOMMENDER, ServerProcess, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path, coco_dev_images: list[Path]):
    root = tmp_path_factory.mktemp("edges")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "DETECTOR", "IMAGES_DIR", "DATABASE_URL")},
        "DATA_DIR": str(root / "data"), "WEIGHTS_DIR": str(weights_dir), "PORT": str(free_port()),
    }
    subprocess.run([str(RECOMMENDER), "ingest", "--quiet", *map(str, coco_dev_images[:2])], env=env, check=True,
                   capture_output=True, timeout=600)
    with ServerProcess([str(RECOMMENDER), "serve", "--web-workers", "1"], env, root / "server.log") as running:
        running.wait_ready(images=2)
        yield running


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int, code: str) -> str:
    assert status == expected, body[:300]
    assert headers["content-type"] == "application/json", headers
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"} and error["code"] == code
    return error["message"]


def test_a_url_over_4_kb_gets_a_json_414(server: ServerProcess) -> None:
    path = "/get_similar/" + "a" * 5000
    status, headers, body = raw_exchange(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    message = assert_json_error(status, headers, body, 414, "uri_too_long")
    assert "limit is 4094 bytes" in message


def test_oversized_headers_and_garbage_get_json_too(server: ServerProcess) -> None:
    huge = "".join(f"X-Filler-{i}: {'v' * 100}\r\n" for i in range(200))
    status, headers, body = raw_exchange(server.port, f"GET /healthz HTTP/1.1\r\nHost: x\r\n{huge}\r\n".encode())
    assert_json_error(status, headers, body, 431, "headers_too_large")
    status, headers, body = raw_exchange(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert_json_error(status, headers, body, 400, "bad_request")
    assert json.loads(urllib.request.urlopen(f"{server.url}/healthz", timeout=10).read())["status"] == "ok"


def test_a_client_that_sends_a_30_mb_body_before_reading_gets_the_413(server: ServerProcess) -> None:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file_to_upload"; filename="big.jpg"\r\n\r\n'.encode()
            + b"\xff\xd8\xff" + os.urandom(30 * 1024 * 1024) + f"\r\n--{boundary}--\r\n".encode())
    for _ in range(3):  # it used to fail only sometimes: a broken pipe instead of the answer
        request = urllib.request.Request(f"{server.url}/upload_file", data=body, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=60)
        assert refused.value.code == 413
        assert json.loads(refused.value.read())["error"]["message"] == "The upload is too large. The limit is 20 MB."


def test_a_latin1_file_name_is_accepted_through_the_real_server(server: ServerProcess, coco_dev_images: list[Path]) -> None:
    data = coco_dev_images[5].read_bytes()
    boundary = "edge-boundary"
    body = (b"--edge-boundary\r\nContent-Disposition: form-data; name=\"file_to_upload\"; filename=\"d\xe9j\xe0 vu.jpg\"\r\n"
            b"Content-Type: image/jpeg\r\n\r\n" + data + b"\r\n--edge-boundary--\r\n")
    request = urllib.request.Request(f"{server.url}/upload_file", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=120) as response:
        assert response.status == 201
        assert json.loads(response.read())["name"] == "d_j_vu.jpg"
