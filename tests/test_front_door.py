"""The README's first command, run as a new user runs it, and checked in Chromium.

``IMAGES_DIR=../shared/data/coco_dev/images make run`` minus the install: a fresh copy of the
repository's tracked files, its root as working directory, no path setting but the relative
IMAGES_DIR (so the default relative ``data/`` is used), the YOLOv5s weights where ``make weights``
puts them, the virtualenv's bin first on PATH, and ``backend/entrypoint.sh`` as the process.
Every other test passes absolute temporary paths, which is how a relative media path once served
a page of broken photos while the whole suite passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import test_browser
from conftest import REPO_ROOT, free_port, get_json, stop_process_group
from recommender.config import Settings
from test_browser import TITLE_IS, UPLOAD_INDEX, home_names, query_of, shot, wait_for_results

# The browser fixtures of test_browser.py (same Chromium, flags and JavaScript-error check).
artifacts, browser, page = test_browser.artifacts, test_browser.browser, test_browser.page

pytestmark = pytest.mark.browser

PHOTOS = 40
README_IMAGES_DIR = "../shared/data/coco_dev/images"  # as the README writes it, relative to the checkout
# Every setting the service or the entry point reads: none may leak in from the test's environment.
SETTINGS = (
    "DATA_DIR", "DATABASE_URL", "WEIGHTS_DIR", "HOST_WEIGHTS_DIR", "DETECTOR", "DETECT_PROFILE", "IMAGES_DIR",
    "FRONTEND_DIR", "HOST", "PORT", "ADMIN_TOKEN", "MAX_UPLOAD_MB", "PAGE_SIZE", "DETECT_THREADS", "WORKERS",
    "WEB_WORKERS", "INDEX", "BROKER_URL", "RESULT_BACKEND", "BROKER_VISIBILITY_TIMEOUT", "WORKER_CONCURRENCY",
    "DB_WAIT_ATTEMPTS", "DB_TIMEOUT",
)
START_TIMEOUT = 300
WEB_WORKERS = Settings.from_env({}).web_workers  # what the README's command starts


@dataclass
class FrontDoor:
    url: str
    checkout: Path
    upload_photo: Path
    startup_seconds: float
    log_lines: list[tuple[float, str]] = field(default_factory=list)


def copy_tracked_files(destination: Path) -> None:
    """What a fresh clone holds: the files git tracks (as they are in the work tree, so local
    edits are tested), without the data, virtualenv or caches of this checkout."""
    listing = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z"], capture_output=True, check=True)
    for name in listing.stdout.decode().split("\0"):
        source = REPO_ROOT / name
        if name and source.is_file():  # a tracked file deleted in the work tree is not shipped
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)  # keeps entrypoint.sh executable


def follow_output(process: subprocess.Popen, started: float, log: Path, lines: list[tuple[float, str]]) -> None:
    """Keep the server's output, each line stamped with the seconds since the launch."""
    with log.open("w") as out:
        for line in process.stdout:
            lines.append((time.monotonic() - started, line.rstrip()))
            out.write(f"{lines[-1][0]:7.1f}s  {line}")
            out.flush()


def first_line_with(lines: list[tuple[float, str]], text: str) -> tuple[float, str] | None:
    return next((entry for entry in list(lines) if text in entry[1]), None)


@pytest.fixture(scope="module")
def front_door(tmp_path_factory: pytest.TempPathFactory, weights_dir: Path, coco_dev_images: list[Path],
               artifacts: Path) -> Iterator[FrontDoor]:
    workplace = tmp_path_factory.mktemp("front-door")
    checkout = workplace / "recommender"
    copy_tracked_files(checkout)
    assert not (checkout / "data").exists(), "a fresh clone has no data folder"
    # `make weights` leaves the YOLOv5s files in data/weights/ of the checkout.
    shutil.copytree(weights_dir, checkout / "data" / "weights")
    photos_dir = workplace / "shared" / "data" / "coco_dev" / "images"
    photos_dir.mkdir(parents=True)
    photos = [p for i, p in enumerate(coco_dev_images) if i != UPLOAD_INDEX][:PHOTOS]
    for photo in photos:
        shutil.copyfile(photo, photos_dir / photo.name)
    assert (checkout / README_IMAGES_DIR).resolve() == photos_dir.resolve()

    venv_bin = Path(sys.executable).parent
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update(
        IMAGES_DIR=README_IMAGES_DIR,
        PORT=str(port),
        PATH=f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        # make run's own virtualenv holds an editable install of the checkout it was made in; the
        # shared one here points at another checkout, so the copy's code goes first on the path.
        PYTHONPATH=str(checkout / "backend"),
    )
    url = f"http://127.0.0.1:{port}"
    lines: list[tuple[float, str]] = []
    started = time.monotonic()
    process = subprocess.Popen(
        [str(checkout / "backend" / "entrypoint.sh")], cwd=checkout, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    reader = threading.Thread(target=follow_output, args=(process, started, artifacts / "front-door-server.log", lines),
                              daemon=True)
    reader.start()
    try:
        body = wait_until_healthy(process, url, lines)
        startup = time.monotonic() - started
        report_startup(startup, lines)
        assert body["images"] == PHOTOS, body
        assert first_line_with(lines, f"Serving on {url}/"), "make run should print the address to open"
        # The defaults were relative to the repository root, as the README says.
        assert (checkout / "data" / "recommender.sqlite3").is_file()
        assert len(list((checkout / "data" / "media").rglob("*.jpg"))) >= PHOTOS
        yield FrontDoor(url, checkout, coco_dev_images[UPLOAD_INDEX], startup, lines)
    finally:
        stop_process_group(process)
        reader.join(timeout=5)


def wait_until_healthy(process: subprocess.Popen, url: str, lines: list[tuple[float, str]]) -> dict:
    """Wait until every web worker answers /healthz. A worker still loading answers the page's
    requests 503 "loading"; the page asks again after Retry-After, but Chromium logs each 503 as
    a console error, which the page fixture counts as a failure."""
    deadline = time.monotonic() + START_TIMEOUT
    ready: dict[int, dict] = {}
    while True:
        output = "\n".join(line for _, line in lines)
        if process.poll() is not None:
            pytest.fail(f"backend/entrypoint.sh exited with {process.returncode}:\n{output}")
        try:
            status, body = get_json(f"{url}/healthz")
            if status == 200:
                ready[body.get("pid", 0)] = body
                if len(ready) >= WEB_WORKERS:
                    return body
                continue  # a fresh connection may reach another worker
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        if time.monotonic() > deadline:
            pytest.fail(f"not healthy {START_TIMEOUT} s after backend/entrypoint.sh started:\n{output}")
        time.sleep(0.2)


def report_startup(seconds: float, lines: list[tuple[float, str]]) -> None:
    """Print when each step of the start finished (seen with pytest -s)."""
    steps = [("database migrated", " migrated "), ("photos ingested", "Ingested "), ("server listening", "Serving on ")]
    parts = [f"{label} {entry[0]:.1f} s" for label, text in steps if (entry := first_line_with(lines, text))]
    print(f"\nfront door: backend/entrypoint.sh to /healthz ok in {seconds:.1f} s with {PHOTOS} photos "
          f"({'; '.join(parts)})")
    if ingested := first_line_with(lines, "Ingested "):
        print(f"front door: {ingested[1]}")


def broken_images(page, selector: str) -> list[str]:
    """Scroll every image matching ``selector`` into view, as a person looking at all of them
    would (thumbnails load lazily), wait until each has loaded or failed, and list the ones that
    show nothing."""
    images = page.locator(selector)
    for i in range(images.count()):
        image = images.nth(i)
        image.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete", arg=image.element_handle())
    return page.eval_on_selector_all(selector, "imgs => imgs.filter(i => !(i.naturalWidth > 0)).map(i => i.src)")


def show_query(page, name: str) -> None:
    """Wait until the page shows ``name`` as the query with a full first page of similar photos,
    every thumbnail and the photo itself loaded."""
    page.wait_for_function(TITLE_IS, arg=name)
    wait_for_results(page, 30)
    assert page.locator("#results .card").count() == 30
    assert broken_images(page, "#results .card img") == []
    assert broken_images(page, "#query-image") == []


def test_the_readme_first_command_serves_a_page_where_every_photo_shows(front_door: FrontDoor, page, browser,
                                                                        artifacts: Path) -> None:
    # The opening grid: every thumbnail shows, not just the first few.
    page.goto(front_door.url + "/")
    page.wait_for_selector("#home-grid li img")
    assert page.locator("#home-grid img").count() == 30
    assert broken_images(page, "#home-grid img") == []
    opening = home_names(page)
    shot(page, artifacts, "front-door-01-home", full_page=True)

    # A click on a photo: it becomes the query, with 30 similar photos that all show.
    tile = page.locator("#home-grid a").nth(17)
    clicked = tile.get_attribute("data-name")
    tile.click()
    page.wait_for_url(f"**/?q={clicked}")
    show_query(page, clicked)
    shot(page, artifacts, "front-door-02-clicked", full_page=True)

    # An upload through the file chooser shows results, and the address bar names the photo.
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Upload a photo").click()
    chooser.value.set_files(str(front_door.upload_photo))
    uploaded = front_door.upload_photo.name
    show_query(page, uploaded)
    assert query_of(page) == uploaded
    shot(page, artifacts, "front-door-03-uploaded", full_page=True)

    # The address is shareable: opened elsewhere, it shows the same photo.
    elsewhere = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        shared = elsewhere.new_page()
        shared.goto(page.url)
        show_query(shared, uploaded)
    finally:
        elsewhere.close()

    # Uploading the same photo again finds it in the collection and adds no second history entry.
    entries = page.evaluate("() => history.length")
    with page.expect_file_chooser() as chooser:
        page.get_by_role("button", name="Upload a photo").click()
    chooser.value.set_files(str(front_door.upload_photo))
    page.locator("#notice", has_text="already in the collection").wait_for()
    show_query(page, uploaded)
    assert query_of(page) == uploaded and page.evaluate("() => history.length") == entries

    # Back returns to the query before the upload, Forward to the upload, Back twice home.
    page.go_back()
    show_query(page, clicked)
    assert query_of(page) == clicked
    page.go_forward()
    show_query(page, uploaded)
    page.go_back()
    page.go_back()
    page.wait_for_function("() => !document.querySelector('#home-view').hidden")
    assert query_of(page) is None
    page.wait_for_selector("#home-grid li img")
    assert home_names(page) == opening  # the photos seen before, not a new draw under the pointer
    assert broken_images(page, "#home-grid img") == []
