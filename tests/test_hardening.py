"""Hostile but fair requests get the answer a user can act on (issue 12), on SQLite and PostgreSQL.

Bad input is 4xx, never an outage; huge page numbers, reused names, non-UTF-8 file names, two
files, oversized pictures and uploads that find every slot taken each get a clear answer.
Through Flask's test client with the real detector; the real server's own edges (URL length,
bodies sent before reading) are in test_http_edges.py.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

import test_api
from conftest import RECOMMENDER
from recommender.config import Settings
from recommender.detection import Detector
from recommender.web import create_app
from test_api import ADMIN_TOKEN, Api, assert_error, make_api, png_bomb, upload

# The fixtures of test_api.py: the real detector, and a gallery per database kind.
api, gallery_photos, yolo = test_api.api, test_api.gallery_photos, test_api.yolo

NAME_ROUTES = [
    ("GET", "/images/{}"),
    ("GET", "/images/{}/thumb"),
    ("GET", "/images/{}/detections"),
    ("GET", "/get_similar/{}"),
    ("DELETE", "/images/{}"),
]
BAD_NAMES = ["a%00b.jpg", "%00", "a%01b.jpg", "tab%09.jpg", "esc%1b.jpg", "del%7f.jpg", "x" * 300]


# ----------------------------------------------------------------------------- 2. bad input is not an outage


@pytest.mark.parametrize("method,route", NAME_ROUTES, ids=[f"{m} {r}" for m, r in NAME_ROUTES])
def test_control_characters_in_a_name_are_not_found_never_an_outage(api: Api, method: str, route: str) -> None:
    for bad in BAD_NAMES:
        response = api.client.open(route.format(bad), method=method, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert_error(response, 404, "not_found")


def test_control_characters_in_parameters_are_bad_requests(api: Api) -> None:
    name = api.gallery[0]
    assert_error(api.client.get(f"/get_similar/{name}?page=1%00"), 400, "bad_request")
    assert_error(api.client.get("/random?n=%00"), 400, "bad_request")
    assert api.client.get(f"/get_similar/{name}").status_code == 200


def test_an_unreachable_database_is_503_without_its_address(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    client = create_app(settings, background=False).test_client()
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["status"] == "error"
    error = assert_error(client.get("/random"), 503, "unavailable")
    for text in (health.get_json()["message"], error["message"]):
        assert "127.0.0.1" not in text and "port 1" not in text and "none" not in text, text
        assert "server log" in text


# ----------------------------------------------------------------------------- 5. huge page numbers


@pytest.mark.parametrize("page", ["9223372036854775808", "1000000001", "1" + "0" * 40])
def test_a_huge_page_number_is_a_bad_request(api: Api, page: str) -> None:
    error = assert_error(api.client.get(f"/get_similar/{api.gallery[0]}?page={page}"), 400, "bad_request")
    assert "page must be a whole number from 1 to 1000000000" in error["message"]


def test_a_huge_page_number_on_the_command_line_is_a_usage_error_not_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run([str(RECOMMENDER), "similar", "photo.jpg", "--page", "9223372036854775808",
                             "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "Invalid value for '--page'" in result.stderr and "1<=x<=1000000000" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# ----------------------------------------------------------------------------- 6. a name reused after a delete


def test_a_name_reused_after_delete_gets_a_new_url_and_the_old_one_is_no_longer_immutable(
    fresh_api: Api, coco_dev_images: list[Path]
) -> None:
    first, second = coco_dev_images[30].read_bytes(), coco_dev_images[31].read_bytes()
    old = upload(fresh_api.client, first, "holiday.jpg").get_json()
    assert old["name"] == "holiday.jpg"
    cached = fresh_api.client.get(old["url"])
    assert cached.data == first and "immutable" in cached.headers["Cache-Control"]

    deleted = fresh_api.client.delete("/images/holiday.jpg", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert deleted.status_code == 200
    new = upload(fresh_api.client, second, "holiday.jpg").get_json()
    assert new["name"] == "holiday.jpg"  # the name is free again...
    assert new["url"] != old["url"] and new["thumb_url"] != old["thumb_url"]  # ...but not its URLs

    current = fresh_api.client.get(new["url"])
    assert current.data == second and "immutable" in current.headers["Cache-Control"]
    stale = fresh_api.client.get(old["url"])
    assert "immutable" not in stale.headers["Cache-Control"] and "no-cache" in stale.headers["Cache-Control"]
    stale_thumb = fresh_api.client.get(old["thumb_url"])
    assert "immutable" not in stale_thumb.headers["Cache-Control"]


@pytest.fixture
def fresh_api(database_url: str, tmp_path: Path, yolo: Detector, coco_dev_images: list[Path]):
    built = make_api(database_url, tmp_path / "data", yolo, coco_dev_images[:2])
    yield built
    built.service.close()


# ----------------------------------------------------------------------------- 7. file names that are not UTF-8


def raw_upload(api: Api, data: bytes, filename: bytes, extra_file: bool = False):
    boundary = b"hardening-boundary"
    parts = [(b"file_to_upload", filename, data)] + ([(b"second", b"b.jpg", data)] if extra_file else [])
    body = b"".join(
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + field + b'"; filename="' + name + b'"\r\n'
        b"Content-Type: image/jpeg\r\n\r\n" + payload + b"\r\n"
        for field, name, payload in parts
    ) + b"--" + boundary + b"--\r\n"
    return api.client.post("/upload_file", data=body, content_type=f"multipart/form-data; boundary={boundary.decode()}")


@pytest.mark.parametrize("encoding,filename,expected", [
    ("latin-1", "café au lait.jpg", "caf_au_lait.jpg"),
    ("shift_jis", "写真.jpg", None),  # nothing readable is left: a name from the content hash
    ("cp1251", "фото-1.jpg", "1.jpg"),
])
def test_a_file_name_that_is_not_utf8_keeps_the_upload(fresh_api: Api, coco_dev_images: list[Path], encoding: str,
                                                        filename: str, expected: str | None) -> None:
    data = coco_dev_images[32 + len(encoding) % 5].read_bytes()
    response = raw_upload(fresh_api, data, filename.encode(encoding))
    assert response.status_code == 201, response.get_json()
    name = response.get_json()["name"]
    assert name == expected if expected else (name.startswith("image-") and name.endswith(".jpg")), name
    assert fresh_api.client.get(response.get_json()["url"]).data == data


def test_two_files_in_one_upload_are_refused(api: Api, coco_dev_images: list[Path]) -> None:
    before = api.service.queries.count()
    error = assert_error(raw_upload(api, coco_dev_images[40].read_bytes(), b"a.jpg", extra_file=True), 400, "too_many_files")
    assert "one photo per request" in error["message"]
    assert api.service.queries.count() == before


# ----------------------------------------------------------------------------- 9. limits say what they are


def test_the_413_names_the_configured_limit(api: Api) -> None:
    body = b"\xff\xd8\xff" + bytes(3 * 1024 * 1024)  # MAX_UPLOAD_MB is 1 in these tests
    error = assert_error(upload(api.client, body, "big.jpg"), 413, "payload_too_large")
    assert error["message"] == "The upload is too large. The limit is 1 MB."


@pytest.mark.parametrize("width,height", [(20_000, 10_000), (30_000, 30_000)])
def test_pictures_over_pillows_own_limit_get_the_services_message(api: Api, width: int, height: int) -> None:
    error = assert_error(upload(api.client, png_bomb(width, height), "huge.png"), 422, "image_too_large")
    assert error["message"] == (f"The image is {width}×{height} pixels ({width * height:,} pixels); "
                                "the limit is 50,000,000 pixels.")


def test_a_jpeg_over_pillows_own_limit_gets_the_services_message(api: Api, coco_dev_images: list[Path]) -> None:
    data = bytearray(coco_dev_images[0].read_bytes())
    sof = next(i for i in range(2, len(data) - 9) if data[i] == 0xFF and data[i + 1] in (0xC0, 0xC1, 0xC2))
    data[sof + 5 : sof + 9] = (15_000).to_bytes(2, "big") + (14_000).to_bytes(2, "big")  # height, width
    error = assert_error(upload(api.client, bytes(data), "huge.jpg"), 422, "image_too_large")
    assert error["message"] == "The image has 210,000,000 pixels; the limit is 50,000,000 pixels."
    assert "DOS" not in error["message"] and "bomb" not in error["message"]


# ----------------------------------------------------------------------------- 8. uploads wait for a slot


def test_an_upload_waits_for_a_free_slot_instead_of_being_refused(fresh_api: Api, coco_dev_images: list[Path]) -> None:
    gate = fresh_api.app.extensions["recommender"].uploads
    assert gate.wait == 10.0
    held = [gate.admit() for _ in range(gate.limit)]
    for slot in held:
        slot.__enter__()
    answer: list = []
    waiting = threading.Thread(target=lambda: answer.append(upload(fresh_api.client, coco_dev_images[45].read_bytes())))
    waiting.start()
    time.sleep(1.0)
    assert not answer, "every slot is taken: the upload waits"
    held[0].__exit__(None, None, None)
    waiting.join(timeout=60)
    for slot in held[1:]:
        slot.__exit__(None, None, None)
    assert answer and answer[0].status_code == 201, answer and answer[0].get_json()


def test_beyond_its_queue_an_upload_is_refused_at_once_with_retry_after(fresh_api: Api, coco_dev_images: list[Path]) -> None:
    gate = fresh_api.app.extensions["recommender"].uploads
    gate.queue = 0
    held = [gate.admit() for _ in range(gate.limit)]
    for slot in held:
        slot.__enter__()
    try:
        started = time.monotonic()
        busy = upload(fresh_api.client, coco_dev_images[46].read_bytes())
        assert time.monotonic() - started < gate.wait
        assert_error(busy, 503, "busy")
        assert busy.headers["Retry-After"] == "5"
    finally:
        for slot in held:
            slot.__exit__(None, None, None)
