"""The JSON API through Flask's test client, on SQLite and on a real PostgreSQL database.

Every test runs the real YOLOv5s detector on real COCO photos; nothing is mocked.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from conftest import _create_postgres_database
from recommender import bootstrap
from recommender.classes import CLASS_NAMES
from recommender.config import Settings
from recommender.detection import Detector, DetectorError, create_detector, resolve
from recommender.detection.fetch import fetch_yolov5
from recommender.service import Recommender
from recommender.web import create_app
from recommender.web.frontend import PACKAGED_PAGE

DEFAULT = resolve("yolov5s").name  # the entry DETECTOR=yolov5s names by default

ADMIN_TOKEN = "s3cret-admin-token"
MAX_UPLOAD_MB = 1
GALLERY_SIZE = 5


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def yolo(weights_dir: Path) -> Detector:
    """The real YOLOv5s detector, loaded once for the session."""
    try:
        fetch_yolov5(weights_dir)
        detector = create_detector(resolve("yolov5s"), weights_dir)
        detector.load()
    except DetectorError as exc:
        pytest.fail(f"the YOLOv5s weights are needed in {weights_dir}: {exc}")
    return detector


@dataclass
class Api:
    app: Flask
    client: FlaskClient
    service: Recommender
    settings: Settings
    gallery: list[str]  # names of the ingested photos, in ingest order

    def media_files(self) -> set[Path]:
        root = self.settings.media_dir
        return {p for p in root.rglob("*") if p.is_file() and p.parent.name != "locks"} if root.exists() else set()

    def url(self, name: str) -> str:
        """The versioned URL of a stored photo, as the API hands it out."""
        return self.client.get(f"/images/{name}/detections").get_json()["url"]


def make_api(
    database_url: str, data_dir: Path, detector: Detector, photos: list[Path], **overrides: object
) -> Api:
    settings = Settings(
        data_dir=data_dir, database_url=database_url, max_upload_mb=MAX_UPLOAD_MB, admin_token=ADMIN_TOKEN
    ).with_overrides(**overrides)
    service = bootstrap.build(settings, migrate=True, detector_factory=lambda _name: detector)
    summary = service.ingest.paths(photos)
    assert summary.ingested == len(photos), summary.failed
    app = create_app(settings, service, background=False)
    return Api(app, app.test_client(), service, settings, [p.name for p in photos])


@pytest.fixture(scope="session")
def gallery_photos(coco_dev_images: list[Path]) -> list[Path]:
    return coco_dev_images[:GALLERY_SIZE]


@pytest.fixture(scope="session")
def new_photo(coco_dev_images: list[Path]) -> Path:
    """A photo that is not in the gallery."""
    return coco_dev_images[GALLERY_SIZE + 3]


@pytest.fixture
def fresh_api(database_url: str, tmp_path: Path, yolo: Detector, gallery_photos: list[Path]):
    """A fresh collection of the gallery photos, for tests that change it."""
    built = make_api(database_url, tmp_path / "data", yolo, gallery_photos)
    yield built
    built.service.close()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, yolo: Detector,
               gallery_photos: list[Path]):
    """One collection per database kind for the tests that leave it as they found it.

    Ingesting runs the detector, so building it once per module instead of once per test
    keeps this file fast; the databases are made like conftest's ``database_url`` ones.
    """
    data_dir = tmp_path_factory.mktemp(f"shared-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{data_dir / 'test.sqlite3'}"
    else:
        url, drop = _create_postgres_database()
        request.addfinalizer(drop)
    built = make_api(url, data_dir / "data", yolo, gallery_photos)
    yield built
    built.service.close()


def upload(client: FlaskClient, data: bytes, filename: str = "photo.jpg"):
    return client.post(
        "/upload_file", data={"file_to_upload": (io.BytesIO(data), filename)}, content_type="multipart/form-data"
    )


def assert_error(response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"] and "Traceback" not in response.get_data(as_text=True)
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid little PNG whose header claims 900 megapixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 8)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


# ----------------------------------------------------------------------------- upload


def test_upload_stores_the_photo_and_answers_detections_and_similar_photos(fresh_api: Api, new_photo: Path) -> None:
    api = fresh_api
    data = new_photo.read_bytes()
    # While every upload slot is taken, another upload is turned away (the page says "busy").
    gate = api.app.extensions["recommender"].uploads
    with contextlib.ExitStack() as stack:
        for _ in range(gate.limit):
            stack.enter_context(gate.admit())
        gate.wait = 0.2  # it waits for a slot this long (10 s by default), then says busy
        busy = upload(api.client, data, new_photo.name)
        assert_error(busy, 503, "busy")
        assert busy.headers["Retry-After"]
        assert api.client.get(f"/get_similar/{api.gallery[0]}").status_code == 200  # searches still work

    response = upload(api.client, data, new_photo.name)

    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["name"] == new_photo.name and body["duplicate"] is False
    assert response.headers["Location"] == body["url"] and body["url"].startswith(f"/images/{new_photo.name}?v=")
    assert body["detector"] == DEFAULT
    with Image.open(new_photo) as image:
        assert (body["width"], body["height"]) == image.size
    assert body["detections"], "a COCO photo should have detected objects"
    for det in body["detections"]:
        assert det["class"] in CLASS_NAMES[1:] and 0 < det["score"] <= 1
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 < x2 <= body["width"] + 1 and 0 <= y1 < y2 <= body["height"] + 1

    similar = body["similar"]
    assert similar["query"] == new_photo.name and similar["page"] == 1 and similar["per_page"] == 30
    assert similar["total"] == GALLERY_SIZE
    assert {r["name"] for r in similar["results"]} == set(api.gallery)
    query_classes = set(similar["query_classes"])
    assert query_classes <= {d["class"] for d in body["detections"]}
    distances = [r["distance"] for r in similar["results"]]
    assert distances == sorted(distances)
    for result in similar["results"]:
        assert set(result["shared_classes"]) <= query_classes
        assert set(result["shared_classes"]) <= set(result["classes"])
        assert result["url"].startswith(f"/images/{result['name']}?v=")
        assert result["thumb_url"].startswith(f"/images/{result['name']}/thumb?v=")
        assert result["why"]
        shares = [c["share"] for c in result["contributions"]]
        assert shares == sorted(shares, reverse=True) and all(0 < v <= 1 for v in shares)
        assert sum(shares) <= 1.0001

    # The photo is now part of the collection: its original comes back byte for byte.
    original = api.client.get(body["url"])
    assert original.status_code == 200 and original.data == data
    assert api.service.queries.count() == GALLERY_SIZE + 1
    assert api.client.get("/healthz").get_json()["images"] == GALLERY_SIZE + 1


def test_uploading_the_same_bytes_again_returns_the_existing_image(api: Api) -> None:
    existing = api.gallery[0]
    data = api.service.queries.original(existing).path.read_bytes()
    files_before = api.media_files()

    response = upload(api.client, data, "another-name.jpg")

    assert response.status_code == 200
    body = response.get_json()
    assert body["name"] == existing and body["duplicate"] is True
    assert body["detections"] and body["similar"]["query"] == existing
    assert existing not in {r["name"] for r in body["similar"]["results"]}
    assert api.service.queries.count() == GALLERY_SIZE
    assert api.media_files() == files_before


def test_rejected_uploads_answer_json_errors_and_leave_nothing_behind(api: Api, new_photo: Path) -> None:
    good = new_photo.read_bytes()
    limit = MAX_UPLOAD_MB * 1024 * 1024
    cases = [
        ("a text file", b"hello, this is not a photo\n" * 20, "notes.jpg", 415, "unsupported_media_type"),
        ("an empty file", b"", "empty.jpg", 415, "unsupported_media_type"),
        ("a truncated JPEG", good[: len(good) // 3], "cut.jpg", 422, "undecodable_image"),
        ("a decompression bomb", png_bomb(), "bomb.png", 422, "image_too_large"),
        ("a file just over the limit", good + b"\0" * (limit - len(good) + 1), "big.jpg", 413, "payload_too_large"),
        ("a body far over the limit", b"\xff\xd8\xff" + b"\0" * (3 * limit), "huge.jpg", 413, "payload_too_large"),
    ]
    files_before = api.media_files()
    for what, data, filename, status, code in cases:
        response = upload(api.client, data, filename)
        assert response.status_code == status, f"{what}: {response.get_data(as_text=True)}"
        assert_error(response, status, code)
    missing_field = api.client.post("/upload_file", data={"other": "x"}, content_type="multipart/form-data")
    assert_error(missing_field, 400, "missing_file")

    assert api.service.queries.count() == GALLERY_SIZE
    assert api.media_files() == files_before


# ----------------------------------------------------------------------------- similar


def test_get_similar_pages_through_the_whole_collection(api: Api) -> None:
    query = api.gallery[0]
    first = api.client.get(f"/get_similar/{query}?page=1&per_page=2")
    assert first.status_code == 200
    body = first.get_json()
    assert body["query"] == query and body["detector"] == DEFAULT
    assert (body["page"], body["per_page"], body["total"]) == (1, 2, GALLERY_SIZE - 1)

    pages = [body] + [api.client.get(f"/get_similar/{query}?page={p}&per_page=2").get_json() for p in (2, 3)]
    names = [r["name"] for page in pages for r in page["results"]]
    assert len(names) == GALLERY_SIZE - 1 == len(set(names)) and query not in names
    distances = [r["distance"] for page in pages for r in page["results"]]
    assert distances == sorted(distances)
    assert pages[2]["results"] == [] and pages[2]["total"] == GALLERY_SIZE - 1  # past the end

    default = api.client.get(f"/get_similar/{query}").get_json()
    assert default["page"] == 1 and default["per_page"] == 30
    assert [r["name"] for r in default["results"]] == names


@pytest.mark.parametrize("query", ["page=0", "page=abc", "page=-1", "per_page=0", "per_page=101", "per_page=2.5"])
def test_get_similar_rejects_bad_paging(api: Api, query: str) -> None:
    assert_error(api.client.get(f"/get_similar/{api.gallery[0]}?{query}"), 400, "bad_request")


def test_unknown_names_answer_404(api: Api) -> None:
    for method, url in [
        ("GET", "/get_similar/nope.jpg"),
        ("GET", "/images/nope.jpg"),
        ("GET", "/images/nope.jpg/thumb"),
        ("GET", "/images/nope.jpg/detections"),
    ]:
        assert_error(api.client.open(url, method=method), 404, "not_found")
    deleting = api.client.delete("/images/nope.jpg", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert_error(deleting, 404, "not_found")


# ----------------------------------------------------------------------------- random


def test_random_picks_images_of_the_collection(api: Api) -> None:
    one = api.client.get("/random")
    assert one.status_code == 200 and one.headers["Cache-Control"] == "no-store"
    body = one.get_json()
    assert body["name"] in api.gallery and body["url"].startswith(f"/images/{body['name']}?v=")

    grid = api.client.get("/random?n=3").get_json()["images"]
    assert len(grid) == 3 and len({g["name"] for g in grid}) == 3 and {g["name"] for g in grid} <= set(api.gallery)
    everything = api.client.get("/random?n=100").get_json()["images"]
    assert sorted(g["name"] for g in everything) == sorted(api.gallery)

    for bad in ("0", "101", "many"):
        assert_error(api.client.get(f"/random?n={bad}"), 400, "bad_request")


def test_random_on_an_empty_collection_says_how_to_fill_it(database_url: str, tmp_path: Path, yolo: Detector) -> None:
    empty = make_api(database_url, tmp_path / "data", yolo, [])
    try:
        error = assert_error(empty.client.get("/random"), 404, "empty_collection")
        assert "upload" in error["message"] and "recommender ingest" in error["message"]
        assert_error(empty.client.get("/random?n=30"), 404, "empty_collection")
    finally:
        empty.service.close()


# ----------------------------------------------------------------------------- files


def test_original_is_served_with_its_type_and_cached_for_good_only_under_its_versioned_url(
    api: Api, gallery_photos: list[Path]
) -> None:
    photo = gallery_photos[1]
    data = photo.read_bytes()
    etag = hashlib.sha256(data).hexdigest()
    url = api.url(photo.name)
    assert url == f"/images/{photo.name}?v={etag[:16]}"
    response = api.client.get(url)
    assert response.status_code == 200 and response.data == data
    assert response.mimetype == "image/jpeg"
    assert response.headers["ETag"].strip('"') == etag
    cache = response.headers["Cache-Control"]
    assert "immutable" in cache and "max-age=31536000" in cache
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # The bare name, or a stale version, may serve other bytes one day: revalidate every time.
    for other in (f"/images/{photo.name}", f"/images/{photo.name}?v=0123456789abcdef"):
        bare = api.client.get(other)
        assert bare.data == data and "immutable" not in bare.headers["Cache-Control"]
        assert "no-cache" in bare.headers["Cache-Control"]

    again = api.client.get(url, headers={"If-None-Match": f'"{etag}"'})
    assert again.status_code == 304 and again.data == b""


def test_thumbnail_is_a_small_jpeg_of_the_photo(api: Api, gallery_photos: list[Path]) -> None:
    photo = gallery_photos[2]
    response = api.client.get(f"/images/{photo.name}/thumb")
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    assert len(response.data) < photo.stat().st_size
    with Image.open(io.BytesIO(response.data)) as thumb, Image.open(photo) as original:
        assert thumb.format == "JPEG" and max(thumb.size) == 320
        assert abs(thumb.size[0] / thumb.size[1] - original.size[0] / original.size[1]) < 0.02
    etag = response.headers["ETag"]
    assert api.client.get(f"/images/{photo.name}/thumb", headers={"If-None-Match": etag}).status_code == 304


def test_detections_give_boxes_inside_the_photo(api: Api, coco_dev_labels: dict[str, list[str]]) -> None:
    name = api.gallery[0]
    body = api.client.get(f"/images/{name}/detections").get_json()
    assert body["name"] == name and body["detector"] == DEFAULT
    scores = [d["score"] for d in body["detections"]]
    assert scores and scores == sorted(scores, reverse=True)
    for det in body["detections"]:
        x1, y1, x2, y2 = det["box"]
        assert 0 <= x1 < x2 <= body["width"] + 1 and 0 <= y1 < y2 <= body["height"] + 1
        assert CLASS_NAMES[det["class_id"]] == det["class"]
    # The most confident object is one of the photo's ground-truth categories.
    assert body["detections"][0]["class"] in coco_dev_labels[name]


# ----------------------------------------------------------------------------- delete


def test_delete_needs_the_admin_token(fresh_api: Api) -> None:
    api = fresh_api
    victim = api.gallery[3]
    path = api.service.queries.original(victim).path

    assert_error(api.client.delete(f"/images/{victim}"), 401, "unauthorized")
    assert_error(api.client.delete(f"/images/{victim}", headers={"Authorization": "Basic abc"}), 401)
    assert_error(api.client.delete(f"/images/{victim}", headers={"Authorization": "Bearer wrong"}), 403, "forbidden")
    assert api.client.get(f"/images/{victim}").status_code == 200

    response = api.client.delete(f"/images/{victim}", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200 and response.get_json() == {"deleted": victim}
    assert_error(api.client.get(f"/images/{victim}"), 404)
    assert not path.exists()
    others = api.client.get(f"/get_similar/{api.gallery[0]}").get_json()
    assert victim not in {r["name"] for r in others["results"]} and others["total"] == GALLERY_SIZE - 2


def test_delete_is_disabled_without_a_configured_token(database_url: str, tmp_path: Path, yolo: Detector,
                                                       gallery_photos: list[Path]) -> None:
    api = make_api(database_url, tmp_path / "data", yolo, gallery_photos[:1], admin_token="")
    try:
        error = assert_error(
            api.client.delete(f"/images/{api.gallery[0]}", headers={"Authorization": "Bearer anything"}),
            403,
            "deletion_disabled",
        )
        assert "ADMIN_TOKEN" in error["message"]
        assert api.service.queries.count() == 1
    finally:
        api.service.close()


# ----------------------------------------------------------------------------- health, errors, page


def test_healthz_is_503_until_the_service_is_loaded(database_url: str, tmp_path: Path, yolo: Detector,
                                                    gallery_photos: list[Path]) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    service = bootstrap.build(settings, migrate=True, detector_factory=lambda _name: yolo)
    service.ingest.paths(gallery_photos[:2])
    app = create_app(settings, service, start=False)
    client = app.test_client()
    try:
        loading = client.get("/healthz")
        assert loading.status_code == 503 and loading.get_json() == {"status": "loading"}
        assert loading.headers["Retry-After"]
        error = assert_error(client.get(f"/get_similar/{gallery_photos[0].name}"), 503, "loading")
        assert "starting" in error["message"]
        assert client.get("/").status_code == 200  # the page is up and can say "loading"

        app.extensions["recommender"].loader.start(background=False)
        ready = client.get("/healthz")
        assert ready.status_code == 200
        body = ready.get_json()
        assert body["status"] == "ok" and body["detector"] == DEFAULT and body["images"] == 2
    finally:
        service.close()


def test_a_service_that_cannot_start_is_reported_not_hidden(tmp_path: Path) -> None:
    # Nothing listens on port 1: the database is unreachable.
    settings = Settings(data_dir=tmp_path, database_url="postgresql+psycopg://postgres@127.0.0.1:1/none")
    app = create_app(settings, background=False)
    client = app.test_client()
    health = client.get("/healthz")
    assert health.status_code == 503 and health.get_json()["status"] == "error"
    assert health.get_json()["message"]
    error = assert_error(client.get("/random"), 503, "unavailable")
    assert "could not start" in error["message"]


def test_a_server_started_before_its_database_recovers_by_itself(tmp_path: Path, weights_dir: Path) -> None:
    # A plain file sits where the SQLite database's folder must go: the database cannot open.
    later = tmp_path / "appears-later"
    later.write_text("in the way")
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{later / 'db.sqlite3'}",
                        weights_dir=weights_dir)
    app = create_app(settings)  # loads in the background and retries
    client = app.test_client()
    loader = app.extensions["recommender"].loader
    loader.wait(timeout=120)
    failing = client.get("/healthz")
    assert failing.status_code == 503 and failing.get_json()["status"] == "error"

    later.unlink()
    deadline = time.monotonic() + 120
    while not loader.ready and time.monotonic() < deadline:
        time.sleep(0.2)
    healthy = client.get("/healthz")
    assert healthy.status_code == 200, healthy.get_json()
    assert healthy.get_json()["images"] == 0
    loader.close()


def test_unknown_urls_and_methods_answer_json(api: Api) -> None:
    assert_error(api.client.get("/no/such/page"), 404, "not_found")
    wrong_method = api.client.put("/upload_file")
    assert_error(wrong_method, 405, "method_not_allowed")
    assert "POST" in wrong_method.headers["Allow"]
    assert_error(api.client.get("/upload_file"), 405)
    assert_error(api.client.post(f"/images/{api.gallery[0]}"), 405)


def test_a_bug_in_a_view_answers_a_json_500_without_a_trace(tmp_path: Path, yolo: Detector) -> None:
    settings = Settings(data_dir=tmp_path)
    app = create_app(settings, start=False)

    @app.get("/boom")
    def boom() -> str:
        raise RuntimeError("secret internal detail")

    response = app.test_client().get("/boom")
    error = assert_error(response, 500, "internal_error")
    assert "secret internal detail" not in response.get_data(as_text=True) and "RuntimeError" not in error["message"]


def test_the_page_and_its_files_are_served(api: Api) -> None:
    page = api.client.get("/?q=whatever.jpg")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/static/app.js" in html and "/static/style.css" in html
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    # The page's script is a set of ES modules; a browser runs a module only when served as JavaScript.
    modules = sorted(path.name for path in PACKAGED_PAGE.glob("*.js"))
    assert "app.js" in modules and len(modules) > 1
    for asset, mimetype in [(name, "text/javascript") for name in modules] + [("style.css", "text/css")]:
        response = api.client.get(f"/static/{asset}")
        assert response.status_code == 200 and response.mimetype == mimetype
    assert_error(api.client.get("/static/../backend/recommender/config.py"), 404)
    assert_error(api.client.get("/static/missing.js"), 404)
    spec = api.client.get("/openapi.json")
    assert spec.status_code == 200 and spec.get_json()["openapi"].startswith("3.")
