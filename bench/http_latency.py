"""HTTP latency of a real server: upload → first page, and get_similar, against baselines.

    .venv/bin/python bench/http_latency.py [IMAGES_DIR] [--gallery N] [--uploads N] [--queries N] [--json OUT]

Starts ``recommender serve`` (gunicorn, WEB_WORKERS processes, threads) on a free loopback port with a
fresh SQLite DATA_DIR, fills it with ``recommender ingest`` (the first ``--gallery`` photos
of IMAGES_DIR, default coco_dev), waits for /healthz, then measures over one keep-alive
connection:

* upload of photos the gallery does not hold (each once, so every one is detected), the
  answer being the JSON with the first page of 30 similar photos; then the same bytes again
  (the duplicate path: no detection);
* GET /get_similar/<name> (page 1, 30 per page) for random gallery names;
* baselines measured in the same run: GET /healthz (HTTP + framework cost) and the detector
  alone, in this process, on the same upload photos (decode + detect);
* get_similar again while another thread keeps uploading, to show searches are not held up
  behind detections beyond the CPU they share;
* get_similar throughput with 1 and with 4 concurrent clients (interleaved rounds): readers
  share one immutable index snapshot and take no lock, so 4 clients on 2 cores should get
  well over 1.6 times the throughput of one.

Reports median and p95 in ms and the ratios to the baselines. Requests are bounded in count
and go to 127.0.0.1 only. The load average is printed: on a shared machine it explains outliers.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the standard library's ``http`` package, and Python puts the
# script's folder first on sys.path: drop it so ``import http.client`` gets the real one.
if __name__ == "__main__" and sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]

import argparse
import http.client
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable

from PIL import Image

DEFAULT_IMAGES = Path(os.environ.get("SHARED_DIR", Path(__file__).resolve().parents[2] / "shared")) / "data" / "coco_dev" / "images"
REPO = Path(__file__).resolve().parents[1]
TARGET_UPLOAD_MS = 300.0
TARGET_SIMILAR_MS = 20.0


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1e3 for s in seconds)
    p95 = ms[min(len(ms) - 1, max(0, round(0.95 * len(ms)) - 1))]
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 2), "p95_ms": round(p95, 2)}


def fit_640(path: Path) -> bytes:
    """The photo as a JPEG whose longer side is 640 px (COCO photos mostly are already)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if max(image.size) != 640:
            scale = 640 / max(image.size)
            image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        image.save(out, "JPEG", quality=90)
        return out.getvalue()


def multipart(data: bytes, filename: str) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file_to_upload\"; filename=\"{filename}\"\r\n"
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive connection, like a browser tab."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
                ) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        payload = response.read()
        return response.status, payload, time.perf_counter() - started

    def upload(self, data: bytes, filename: str) -> tuple[int, dict, float]:
        body, content_type = multipart(data, filename)
        status, payload, seconds = self.request("POST", "/upload_file", body, {"Content-Type": content_type})
        return status, json.loads(payload), seconds

    def close(self) -> None:
        self.conn.close()


def start_server(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    recommender = Path(sys.executable).with_name("recommender")
    log = log_path.open("w")
    return subprocess.Popen([str(recommender), "serve", "--threads", "8"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(port: int, process: subprocess.Popen, timeout: float = 300.0) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with status {process.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready in time")


def load_detector(weights_dir: Path) -> Callable[[bytes], float]:
    """Decode + detect in this process, no HTTP, no database: what an upload cannot go below.

    Returns a function timing one image; it is called right before each upload of the same
    photo, so load from other processes hits the baseline and the upload alike.
    """
    from recommender import bootstrap
    from recommender.config import Settings
    from recommender.images import decode_image

    detector = bootstrap.make_detector(Settings(weights_dir=weights_dir))
    detector.load()  # with its warm-up, as the server does

    def detect_alone(data: bytes) -> float:
        started = time.perf_counter()
        detector.detect(decode_image(data).rgb)
        return time.perf_counter() - started

    return detect_alone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="?", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--gallery", type=int, default=340, help="photos ingested before measuring")
    parser.add_argument("--uploads", type=int, default=40, help="distinct photos uploaded (not in the gallery)")
    parser.add_argument("--queries", type=int, default=300, help="get_similar requests")
    default_weights = Path(os.environ.get("WEIGHTS_DIR", REPO / "data" / "weights"))
    parser.add_argument("--weights-dir", type=Path, default=default_weights)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    photos = sorted(args.images.glob("*.jpg"))
    if len(photos) < args.gallery + args.uploads:
        raise SystemExit(f"need {args.gallery + args.uploads} photos in {args.images}, found {len(photos)}")
    gallery, held_out = photos[: args.gallery], photos[args.gallery : args.gallery + args.uploads]
    rng = random.Random(7)
    print(f"dataset: {args.images} (gallery {len(gallery)}, uploads {len(held_out)}); load average {_loadavg()}")

    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        data_dir = Path(tmp)
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ADMIN_TOKEN", "DETECTOR")}
        env.update(DATA_DIR=str(data_dir), WEIGHTS_DIR=str(args.weights_dir), HOST="127.0.0.1", PORT=str(port))
        recommender = Path(sys.executable).with_name("recommender")
        started = time.perf_counter()
        subprocess.run([str(recommender), "ingest", "--quiet", "--strict", *map(str, gallery)], env=env, check=True)
        print(f"ingested {len(gallery)} photos in {time.perf_counter() - started:.1f} s")

        process = start_server(env, data_dir / "server.log")
        try:
            ready_s = wait_ready(port, process)
            print(f"server ready {ready_s:.1f} s after start (detector + index loaded in the background)")
            detect_alone = load_detector(args.weights_dir)
            results = measure(port, gallery, held_out, rng, args.queries, detect_alone)
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)
    results["load_average_end"] = _loadavg()
    report(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def measure(port: int, gallery: list[Path], held_out: list[Path], rng: random.Random, queries: int,
            detect_alone: Callable[[bytes], float]) -> dict:
    client = Client(port)
    names = [p.name for p in gallery]
    # Warm-up: connection, thumbnails code paths, first similar query.
    for _ in range(5):
        client.request("GET", "/healthz")
        client.request("GET", f"/get_similar/{rng.choice(names)}")

    healthz = [client.request("GET", "/healthz")[2] for _ in range(200)]

    uploads, duplicates, alone = [], [], []
    upload_bytes = [fit_640(p) for p in held_out]
    for path, data in zip(held_out, upload_bytes, strict=True):
        alone.append(detect_alone(data))
        status, body, seconds = client.upload(data, path.name)
        assert status == 201 and len(body["similar"]["results"]) == 30, (status, body.get("error"))
        uploads.append(seconds)
    for path, data in list(zip(held_out, upload_bytes, strict=True))[:20]:
        status, body, seconds = client.upload(data, path.name)
        assert status == 200 and body["duplicate"], status
        duplicates.append(seconds)

    similar = []
    for _ in range(queries):
        status, _payload, seconds = client.request("GET", f"/get_similar/{rng.choice(names)}?page=1&per_page=30")
        assert status == 200
        similar.append(seconds)

    # Searches while another connection keeps uploading new (re-encoded) photos.
    stop = threading.Event()
    busy_uploads: list[float] = []

    def keep_uploading() -> None:
        uploader = Client(port)
        i = 0
        while not stop.is_set() and i < 200:
            source = held_out[i % len(held_out)]
            with Image.open(source) as image:
                out = io.BytesIO()
                image.convert("RGB").save(out, "JPEG", quality=70 + (i % 20))
            status, _body, seconds = uploader.upload(out.getvalue(), f"busy-{i}.jpg")
            if status in (200, 201):
                busy_uploads.append(seconds)
            i += 1
        uploader.close()

    thread = threading.Thread(target=keep_uploading)
    thread.start()
    time.sleep(0.3)
    similar_busy = []
    for _ in range(100):
        status, _payload, seconds = client.request("GET", f"/get_similar/{rng.choice(names)}?page=1&per_page=30")
        assert status == 200
        similar_busy.append(seconds)
        time.sleep(0.01)
    stop.set()
    thread.join()
    client.close()
    throughput = concurrency(port, names, rng)
    return {
        "similar_per_s_1_client": throughput[1],
        "similar_per_s_4_clients": throughput[4],
        "healthz": summary(healthz),
        "detector_alone": summary(alone),
        "upload_new": summary(uploads),
        "upload_duplicate": summary(duplicates),
        "get_similar": summary(similar),
        "get_similar_during_uploads": summary(similar_busy),
        "uploads_running_meanwhile": summary(busy_uploads) if busy_uploads else None,
    }


def concurrency(port: int, names: list[str], rng: random.Random, seconds: float = 3.0, rounds: int = 6
                ) -> dict[int, list[float]]:
    """GET /get_similar requests per second with 1 and with 4 clients (keep-alive each), interleaved."""
    done: dict[int, list[float]] = {1: [], 4: []}
    for r in range(rounds):
        for clients in ((1, 4) if r % 2 == 0 else (4, 1)):
            counts = [0] * clients
            deadline = time.perf_counter() + seconds

            def run(k: int, picks: list[str]) -> None:
                client = Client(port)
                while time.perf_counter() < deadline:
                    status, _payload, _s = client.request("GET", f"/get_similar/{picks[counts[k] % len(picks)]}")
                    assert status == 200
                    counts[k] += 1
                client.close()

            threads = [threading.Thread(target=run, args=(k, rng.sample(names, len(names)))) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            done[clients].append(sum(counts) / seconds)
    return done


def report(r: dict) -> None:
    def row(label: str, key: str) -> None:
        s = r[key]
        print(f"  {label:<38} n={s['n']:<4} median {s['median_ms']:8.1f} ms   p95 {s['p95_ms']:8.1f} ms")

    print("\nHTTP on 127.0.0.1 (one keep-alive connection; gunicorn gthread, WEB_WORKERS processes, 8 threads):")
    row("GET /healthz (baseline)", "healthz")
    row("decode + detect alone (baseline)", "detector_alone")
    row("POST /upload_file, new 640-px photo", "upload_new")
    row("POST /upload_file, duplicate", "upload_duplicate")
    row("GET /get_similar (30 per page)", "get_similar")
    row("GET /get_similar during uploads", "get_similar_during_uploads")
    if r.get("uploads_running_meanwhile"):
        row("  (the uploads running meanwhile)", "uploads_running_meanwhile")
    up, det = r["upload_new"]["median_ms"], r["detector_alone"]["median_ms"]
    sim, hz = r["get_similar"]["median_ms"], r["healthz"]["median_ms"]
    print("\nratios of medians:")
    print(f"  upload / detector alone        {up / det:6.2f}×   "
          f"(+{up - det:.1f} ms for HTTP, hashing, storage, first page)")
    print(f"  get_similar / healthz          {sim / hz:6.2f}×")
    print(f"  get_similar during uploads / idle {r['get_similar_during_uploads']['median_ms'] / sim:6.2f}×")
    one, four = statistics.median(r["similar_per_s_1_client"]), statistics.median(r["similar_per_s_4_clients"])
    print(f"\nGET /get_similar throughput (median of {len(r['similar_per_s_1_client'])} interleaved rounds):")
    print(f"  1 client {one:7.1f} req/s   4 clients {four:7.1f} req/s   ratio {four / one:4.2f}× (target >= 1.6×)")
    print("\ntargets:")
    print(f"  upload median {up:.1f} ms <= {TARGET_UPLOAD_MS:.0f} ms: {'yes' if up <= TARGET_UPLOAD_MS else 'NO'}")
    sim_ok = "yes" if sim <= TARGET_SIMILAR_MS else "NO"
    print(f"  get_similar median {sim:.1f} ms <= {TARGET_SIMILAR_MS:.0f} ms: {sim_ok}")
    print(f"load average at the end: {r['load_average_end']}")


if __name__ == "__main__":
    main()
