"""get_data.sh as a user runs it: offline, against a local server that honours (or ignores) HTTP
Range, with damaged and interrupted downloads. The server serves files generated in the test."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
GET_DATA = REPO_ROOT / "get_data.sh"
WEIGHTS_PATH = "/releases/mask_rcnn_coco.h5"
ZIP_PATH = "/zips/val2017.zip"


# ----------------------------------------------------------------------------- a tiny Range server


@dataclass
class Served:
    """What the test server holds and what it saw."""

    files: dict[str, bytes] = field(default_factory=dict)
    ranges: bool = True  # False: behave like a server that ignores Range and always sends 200
    cut_after: dict[str, int] = field(default_factory=dict)  # path -> drop the connection after N bytes, once
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_requests(self) -> list[tuple[str, str | None]]:
        with self.lock:
            seen, self.requests = self.requests, []
        return seen


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(first, last) for a single 'bytes=' range; None when unsatisfiable."""
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 and size > 0 else None
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start < size and start <= end else None


def make_handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            range_header = self.headers.get("Range")
            with served.lock:
                served.requests.append((self.path, range_header))
                cut = served.cut_after.pop(self.path, None)
            body = served.files.get(self.path)
            if body is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status, first, last = 200, 0, len(body) - 1
            if range_header and served.ranges:
                span = parse_range(range_header, len(body))
                if span is None:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, (first, last) = 206, span
            chunk = body[first : last + 1]
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(chunk)))
            if served.ranges:
                self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {first}-{last}/{len(body)}")
            self.end_headers()
            if cut is not None:  # an interrupted transfer: part of the body, then a dead connection
                self.wfile.write(chunk[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(chunk)

    return Handler


@pytest.fixture
def server() -> Iterator[tuple[Served, str]]:
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(served))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


# ----------------------------------------------------------------------------- generated payloads


@pytest.fixture(scope="module")
def weights_bytes() -> bytes:
    return np.random.default_rng(7).integers(0, 256, 3 * 1024 * 1024, dtype=np.uint8).tobytes()


@pytest.fixture(scope="module")
def photos() -> dict[str, bytes]:
    """Six small JPEGs under COCO-style names, deliberately listed out of order."""
    rng = np.random.default_rng(3)
    out: dict[str, bytes] = {}
    for number in (872, 139, 632, 285, 724, 776):
        pixels = rng.integers(0, 256, (40 + number % 17, 60, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        out[f"{number:012d}.jpg"] = buf.getvalue()
    return out


def build_zip(photos: dict[str, bytes]) -> bytes:
    """An archive laid out like val2017.zip (a val2017/ folder of JPEGs), plus members to ignore."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(zipfile.ZipInfo("val2017/"), b"")
        for i, (name, data) in enumerate(photos.items()):
            method = zipfile.ZIP_STORED if i % 2 else zipfile.ZIP_DEFLATED  # both kinds occur in the wild
            archive.writestr(f"val2017/{name}", data, compress_type=method)
        archive.writestr("val2017/../../escape.jpg", b"must never be written outside IMAGES_DIR")
        archive.writestr("LICENSE.txt", b"not a photo")
    return buf.getvalue()


@pytest.fixture(scope="module")
def zip_bytes(photos: dict[str, bytes]) -> bytes:
    return build_zip(photos)


def corrupt_member(archive_bytes: bytes, name: str) -> bytes:
    """The archive with one byte of one member's stored data flipped (its CRC no longer matches)."""
    info = zipfile.ZipFile(io.BytesIO(archive_bytes)).getinfo(f"val2017/{name}")
    header = archive_bytes[info.header_offset : info.header_offset + 30]
    name_len, extra_len = int.from_bytes(header[26:28], "little"), int.from_bytes(header[28:30], "little")
    at = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
    damaged = bytearray(archive_bytes)
    damaged[at] ^= 0xFF
    return bytes(damaged)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------- running the script


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


def run_get_data(
    *args: str, data_dir: Path, env: dict[str, str] | None = None, prefix: tuple[str, ...] = ()
) -> Run:
    if not GET_DATA.is_file():
        pytest.fail(f"{GET_DATA} is missing")
    environ = {"PATH": os.environ["PATH"], "HOME": str(data_dir), "LANG": "C.UTF-8", "DATA_DIR": str(data_dir)}
    environ.update(env or {})
    done = subprocess.run(
        [*prefix, "bash", str(GET_DATA), *args], env=environ, capture_output=True, text=True, timeout=120
    )
    return Run(done.returncode, done.stdout, done.stderr)


def local_env(base_url: str, *, weights: bytes | None = None, archive: bytes | None = None) -> dict[str, str]:
    env = {"COCO_BASE_URL": base_url, "MASKRCNN_WEIGHTS_URL": base_url + WEIGHTS_PATH}
    if weights is not None:
        env["MASKRCNN_WEIGHTS_SHA256"] = sha256(weights)
        env["MASKRCNN_WEIGHTS_MD5"] = hashlib.md5(weights).hexdigest()
    if archive is not None:
        env["COCO_VAL_ZIP_SHA256"] = sha256(archive)
    return env


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.rglob("*.part"))


# ----------------------------------------------------------------------------- offline


def test_without_any_network_it_fails_clearly(tmp_path: Path) -> None:
    # A fresh network namespace has no interface but a downed loopback: the real default URLs
    # cannot even be resolved, exactly like a machine without internet.
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.fail(f"this test needs `unshare -rn` (util-linux, user namespaces): {probe.stderr.strip()}")

    weights = run_get_data("--only", "weights", data_dir=tmp_path, prefix=("unshare", "-rn"))
    assert weights.returncode == 3, weights.stderr
    assert "cannot reach github.com" in weights.stderr
    assert "internet connection" in weights.stderr and "run this script again" in weights.stderr
    assert not (tmp_path / "weights" / "mask_rcnn_coco.h5").exists()

    # (curl retries a failed DNS lookup; once is enough to show the message here.)
    images = run_get_data("--only", "images", "--limit", "5", data_dir=tmp_path, prefix=("unshare", "-rn"),
                          env={"GET_DATA_RETRIES": "0"})
    assert images.returncode == 3, images.stderr
    assert "cannot reach images.cocodataset.org" in images.stderr and "COCO_BASE_URL" in images.stderr
    assert not list((tmp_path / "images").glob("*.jpg"))


def test_refused_connection_names_the_host_and_the_override(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was just free and now refuses connections
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_get_data("--limit", "2", data_dir=tmp_path, env=local_env(f"http://127.0.0.1:{port}"))
    assert result.returncode == 3
    assert f"cannot reach 127.0.0.1:{port}" in result.stderr and "COCO_BASE_URL" in result.stderr


@pytest.mark.parametrize(
    ("args", "complaint"),
    [(["--only", "photos"], "--only must be"), (["--limit", "0"], "--limit must be"), (["--limit"], "needs a value"),
     (["--frobnicate"], "unknown argument"), (["--only", "weights", "--limit", "3"], "only applies to photos")],
)
def test_usage_errors_exit_2_with_a_hint(tmp_path: Path, args: list[str], complaint: str) -> None:
    result = run_get_data(*args, data_dir=tmp_path)
    assert result.returncode == 2 and complaint in result.stderr


# ----------------------------------------------------------------------------- weights


def test_weights_are_downloaded_verified_and_then_skipped(
    tmp_path: Path, server: tuple[Served, str], weights_bytes: bytes
) -> None:
    served, url = server
    served.files[WEIGHTS_PATH] = weights_bytes
    env = local_env(url, weights=weights_bytes)

    first = run_get_data("--only", "weights", data_dir=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    installed = tmp_path / "weights" / "mask_rcnn_coco.h5"
    assert installed.read_bytes() == weights_bytes
    assert leftovers(tmp_path) == []
    assert [path for path, _ in served.take_requests()] == [WEIGHTS_PATH]

    second = run_get_data("--only", "weights", data_dir=tmp_path, env=env)
    assert second.returncode == 0 and "already present and verified" in second.stdout
    assert served.take_requests() == []  # nothing downloaded the second time


def test_weights_dir_from_environment_and_option(tmp_path: Path, server: tuple[Served, str], weights_bytes: bytes) -> None:
    served, url = server
    served.files[WEIGHTS_PATH] = weights_bytes
    env = {**local_env(url, weights=weights_bytes), "WEIGHTS_DIR": str(tmp_path / "from-env")}
    assert run_get_data("--only", "weights", data_dir=tmp_path, env=env).returncode == 0
    assert (tmp_path / "from-env" / "mask_rcnn_coco.h5").is_file()
    option = run_get_data("--only", "weights", "--weights-dir", str(tmp_path / "opt"), data_dir=tmp_path, env=env)
    assert option.returncode == 0 and (tmp_path / "opt" / "mask_rcnn_coco.h5").is_file()


def test_corrupted_weights_are_rejected_and_not_installed(
    tmp_path: Path, server: tuple[Served, str], weights_bytes: bytes
) -> None:
    served, url = server
    damaged = bytearray(weights_bytes)
    damaged[12345] ^= 0x01  # one flipped bit
    served.files[WEIGHTS_PATH] = bytes(damaged)

    result = run_get_data("--only", "weights", data_dir=tmp_path, env=local_env(url, weights=weights_bytes))
    assert result.returncode == 1
    assert "does not match its expected checksum" in result.stderr and "nothing was installed" in result.stderr
    assert not (tmp_path / "weights" / "mask_rcnn_coco.h5").exists()
    assert leftovers(tmp_path) == []


def test_interrupted_download_resumes_with_a_range_request(
    tmp_path: Path, server: tuple[Served, str], weights_bytes: bytes
) -> None:
    served, url = server
    served.files[WEIGHTS_PATH] = weights_bytes
    served.cut_after[WEIGHTS_PATH] = 1_000_000
    env = local_env(url, weights=weights_bytes)

    interrupted = run_get_data("--only", "weights", data_dir=tmp_path, env=env)
    assert interrupted.returncode == 3 and "interrupted" in interrupted.stderr
    part = tmp_path / "weights" / "mask_rcnn_coco.h5.part"
    kept = part.stat().st_size
    assert 0 < kept < len(weights_bytes)
    assert not (tmp_path / "weights" / "mask_rcnn_coco.h5").exists()
    served.take_requests()

    resumed = run_get_data("--only", "weights", data_dir=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert served.take_requests() == [(WEIGHTS_PATH, f"bytes={kept}-")]
    assert (tmp_path / "weights" / "mask_rcnn_coco.h5").read_bytes() == weights_bytes
    assert leftovers(tmp_path) == []


def test_a_complete_but_unverified_part_file_is_verified_and_installed(
    tmp_path: Path, server: tuple[Served, str], weights_bytes: bytes
) -> None:
    served, url = server
    served.files[WEIGHTS_PATH] = weights_bytes
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "mask_rcnn_coco.h5.part").write_bytes(weights_bytes)  # crashed just before verifying

    result = run_get_data("--only", "weights", data_dir=tmp_path, env=local_env(url, weights=weights_bytes))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "weights" / "mask_rcnn_coco.h5").read_bytes() == weights_bytes
    assert served.take_requests() == [(WEIGHTS_PATH, f"bytes={len(weights_bytes)}-")]


@pytest.mark.parametrize("server_ranges", [True, False], ids=["range-server", "no-range-server"])
def test_a_bad_part_file_is_discarded_and_the_download_restarts(
    tmp_path: Path, server: tuple[Served, str], weights_bytes: bytes, server_ranges: bool
) -> None:
    served, url = server
    served.files[WEIGHTS_PATH] = weights_bytes
    served.ranges = server_ranges
    (tmp_path / "weights").mkdir()
    # Longer than the real file (range server answers 416) / any partial file (server ignores Range).
    (tmp_path / "weights" / "mask_rcnn_coco.h5.part").write_bytes(b"\x00" * (len(weights_bytes) + 10))

    result = run_get_data("--only", "weights", data_dir=tmp_path, env=local_env(url, weights=weights_bytes))
    assert result.returncode == 0, result.stderr
    assert "starting it again from zero" in result.stderr
    assert (tmp_path / "weights" / "mask_rcnn_coco.h5").read_bytes() == weights_bytes
    assert served.take_requests()[-1] == (WEIGHTS_PATH, None)  # the last request fetched the whole file


def test_a_foreign_file_in_place_of_the_weights_is_left_alone(
    tmp_path: Path, server: tuple[Served, str], weights_bytes: bytes
) -> None:
    served, url = server
    served.files[WEIGHTS_PATH] = weights_bytes
    (tmp_path / "weights").mkdir()
    mine = tmp_path / "weights" / "mask_rcnn_coco.h5"
    mine.write_bytes(b"my own fine-tuned weights")
    result = run_get_data("--only", "weights", data_dir=tmp_path, env=local_env(url, weights=weights_bytes))
    assert result.returncode == 1 and "left untouched" in result.stderr
    assert mine.read_bytes() == b"my own fine-tuned weights"
    assert served.take_requests() == []


# ----------------------------------------------------------------------------- photos


def installed_photos(images_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(images_dir.glob("*.jpg"))}


def test_limit_fetches_only_the_first_photos_by_range(
    tmp_path: Path, server: tuple[Served, str], photos: dict[str, bytes], zip_bytes: bytes
) -> None:
    served, url = server
    served.files[ZIP_PATH] = zip_bytes
    images_dir = tmp_path / "my photos"  # a space in the path must not matter

    first = run_get_data("--only", "images", "--limit", "3", "--images-dir", str(images_dir), data_dir=tmp_path,
                         env=local_env(url))
    assert first.returncode == 0, first.stderr
    wanted = sorted(photos)[:3]
    assert installed_photos(images_dir) == {name: photos[name] for name in wanted}
    requests = served.take_requests()
    assert requests and all(path == ZIP_PATH and rng and rng.startswith("bytes=") for path, rng in requests)
    fetched = sum(int(b) - int(a) + 1 for a, b in (re.fullmatch(r"bytes=(\d+)-(\d+)", rng).groups()
                                                   for _, rng in requests if not rng.startswith("bytes=-")))
    assert fetched < len(zip_bytes)  # the whole archive was never transferred
    assert not (tmp_path.parent / "escape.jpg").exists() and not list(tmp_path.rglob("escape.jpg"))
    assert leftovers(tmp_path) == []

    second = run_get_data("--only", "images", "--limit", "3", "--images-dir", str(images_dir), data_dir=tmp_path,
                          env=local_env(url))
    assert second.returncode == 0 and "nothing to download" in second.stdout
    assert served.take_requests() == []  # the cached table of contents and local files suffice

    more = run_get_data("--only", "images", "--limit", "5", "--images-dir", str(images_dir), data_dir=tmp_path,
                        env=local_env(url))
    assert more.returncode == 0, more.stderr
    assert installed_photos(images_dir) == {name: photos[name] for name in sorted(photos)[:5]}
    assert len(served.take_requests()) == 2  # only the two new photos


def test_a_damaged_photo_is_redownloaded(
    tmp_path: Path, server: tuple[Served, str], photos: dict[str, bytes], zip_bytes: bytes
) -> None:
    served, url = server
    served.files[ZIP_PATH] = zip_bytes
    env = local_env(url)
    assert run_get_data("--only", "images", "--limit", "2", data_dir=tmp_path, env=env).returncode == 0
    victim = tmp_path / "images" / sorted(photos)[1]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated by some accident
    served.take_requests()

    again = run_get_data("--only", "images", "--limit", "2", data_dir=tmp_path, env=env)
    assert again.returncode == 0 and "1 of 2 photos to download" in again.stdout
    assert victim.read_bytes() == photos[victim.name]
    assert len(served.take_requests()) == 1


def test_a_photo_that_fails_its_crc_is_not_installed(
    tmp_path: Path, server: tuple[Served, str], photos: dict[str, bytes], zip_bytes: bytes
) -> None:
    served, url = server
    bad = sorted(photos)[1]
    served.files[ZIP_PATH] = corrupt_member(zip_bytes, bad)

    result = run_get_data("--only", "images", "--limit", "3", data_dir=tmp_path, env=local_env(url))
    assert result.returncode == 1
    assert f"{bad} failed verification" in result.stderr and "1 of 3 photos failed verification" in result.stderr
    good = [name for name in sorted(photos)[:3] if name != bad]
    assert installed_photos(tmp_path / "images") == {name: photos[name] for name in good}
    assert leftovers(tmp_path) == []


def test_limit_needs_range_support_and_says_so(
    tmp_path: Path, server: tuple[Served, str], zip_bytes: bytes
) -> None:
    served, url = server
    served.files[ZIP_PATH] = zip_bytes
    served.ranges = False
    result = run_get_data("--only", "images", "--limit", "2", data_dir=tmp_path, env=local_env(url))
    assert result.returncode == 1
    assert "does not honour HTTP Range requests" in result.stderr and "without --limit" in result.stderr


@pytest.mark.parametrize("server_ranges", [True, False], ids=["range-server", "no-range-server"])
def test_full_download_verifies_the_archive_extracts_and_cleans_up(
    tmp_path: Path, server: tuple[Served, str], photos: dict[str, bytes], zip_bytes: bytes, server_ranges: bool
) -> None:
    served, url = server
    served.files[ZIP_PATH] = zip_bytes
    served.ranges = server_ranges
    env = local_env(url, archive=zip_bytes)

    first = run_get_data("--only", "images", data_dir=tmp_path, env=env)
    assert first.returncode == 0, first.stderr
    assert installed_photos(tmp_path / "images") == dict(sorted(photos.items()))
    assert (tmp_path / "images" / ".get_data" / "val2017-manifest.tsv").is_file()
    assert not (tmp_path / "images" / ".get_data" / "val2017.zip").exists()  # 778 MB not left behind
    assert leftovers(tmp_path) == [] and not list(tmp_path.rglob("escape.jpg"))
    assert (ZIP_PATH, None) in served.take_requests()

    second = run_get_data("--only", "images", data_dir=tmp_path, env=env)
    assert second.returncode == 0 and "nothing to download" in second.stdout
    assert served.take_requests() == []


@pytest.mark.parametrize("server_ranges", [True, False], ids=["range-server", "no-range-server"])
def test_a_full_set_missing_one_photo_fetches_just_that_one_when_it_can(
    tmp_path: Path, server: tuple[Served, str], photos: dict[str, bytes], zip_bytes: bytes, server_ranges: bool
) -> None:
    served, url = server
    served.files[ZIP_PATH] = zip_bytes
    env = local_env(url, archive=zip_bytes)
    assert run_get_data("--only", "images", data_dir=tmp_path, env=env).returncode == 0
    lost = tmp_path / "images" / sorted(photos)[2]
    lost.unlink()
    served.take_requests()
    served.ranges = server_ranges

    again = run_get_data("--only", "images", data_dir=tmp_path, env=env)
    assert again.returncode == 0, again.stderr
    assert installed_photos(tmp_path / "images") == dict(sorted(photos.items()))
    requests = served.take_requests()
    if server_ranges:
        assert len(requests) == 1 and requests[0][1] and requests[0][1].startswith("bytes=")
    else:  # the range attempt got the whole archive back, so the script falls back to it
        assert "downloading the whole archive" in again.stderr + again.stdout
        assert requests[-1] == (ZIP_PATH, None)


def test_a_corrupted_archive_is_rejected_and_nothing_is_extracted(
    tmp_path: Path, server: tuple[Served, str], photos: dict[str, bytes], zip_bytes: bytes
) -> None:
    served, url = server
    served.files[ZIP_PATH] = corrupt_member(zip_bytes, sorted(photos)[0])
    result = run_get_data("--only", "images", data_dir=tmp_path, env=local_env(url, archive=zip_bytes))
    assert result.returncode == 1 and "val2017.zip" in result.stderr and "does not match" in result.stderr
    assert installed_photos(tmp_path / "images") == {}
    assert leftovers(tmp_path) == [] and not (tmp_path / "images" / ".get_data" / "val2017.zip").exists()


def test_images_and_weights_together(
    tmp_path: Path, server: tuple[Served, str], photos: dict[str, bytes], zip_bytes: bytes, weights_bytes: bytes
) -> None:
    served, url = server
    served.files.update({ZIP_PATH: zip_bytes, WEIGHTS_PATH: weights_bytes})
    result = run_get_data("--limit", "1", data_dir=tmp_path, env=local_env(url, weights=weights_bytes))
    assert result.returncode == 0, result.stderr
    assert list(installed_photos(tmp_path / "images")) == sorted(photos)[:1]
    assert (tmp_path / "weights" / "mask_rcnn_coco.h5").read_bytes() == weights_bytes
    assert "All requested data is in place." in result.stdout

