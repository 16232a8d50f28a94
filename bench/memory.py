"""Peak memory of a web worker under the "small file, huge picture" attack, and ingest throughput.

    .venv/bin/python bench/memory.py [--baseline-src DIR] [--rounds 2] [--ingest-photos 120]

The attack (issue 12): a 46 KB PNG that decodes to 7000×7000 grey pixels (49 MP, under the
50 MP limit). For each variant of the code, a fresh ``recommender serve --web-workers 1
--threads 16`` (SQLite; 16 threads so that all 8 uploads are admitted into one worker at once)
is started as a subprocess and the workers' RSS is sampled from /proc every 10 ms (and their
VmHWM, the kernel's own peak, is read) through these phases:

1. ``uploads``: 8 such PNGs (distinct bytes) uploaded at once;
2. ``thumbs``: their 8 thumbnails requested at once;
3. ``thumbs, uncached``: the thumbnail files deleted, the 8 requested at once again (what a
   collection ingested before thumbnails were made at ingest still does);

after each phase the RSS is read again after 3 s idle ("after"). ``--baseline-src`` names a
checkout of other code (its ``backend/`` goes first on PYTHONPATH), e.g. the code before this
change: ``git archive <commit> | tar -x -C /tmp/before``; variants alternate (A, B, A, B...).

Ingest throughput (the same photos, coco_dev by default, into a fresh SQLite collection, the
detector loaded and warmed up first; photos per second of ``Ingest.paths``) is measured in the
same run for each variant, alternating too, since making thumbnails at ingest costs some time.
Reports medians over the rounds.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared")) / "data" / "coco_dev" / "images"
RECOMMENDER = Path(sys.executable).with_name("recommender")
SIDE = 7000
CONCURRENT = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def huge_grey_png(tag: int) -> bytes:
    """A PNG of SIDE×SIDE grey pixels that compresses to tens of kilobytes; ``tag`` makes the bytes unique."""
    image = Image.new("L", (SIDE, SIDE), 128)
    image.putpixel((tag % SIDE, tag // SIDE), 0)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for {pid}")


def workers_of(master: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                found.append(int(entry.name))
    if not found:
        raise RuntimeError("no gunicorn worker found")
    return found


def largest_rss(pids: list[int]) -> float:
    return max(rss_mb(pid) for pid in pids)


class Sampler:
    """The largest peak RSS of the workers while a block runs, sampled every 10 ms (plus the kernel's VmHWM)."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def __enter__(self) -> Sampler:
        for pid in self.pids:
            # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0, own process or root).
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass
        self.peak = largest_rss(self.pids)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, largest_rss(self.pids))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, *(rss_mb(pid, "VmHWM") for pid in self.pids))


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def upload(port: int, data: bytes, filename: str) -> tuple[int, bytes]:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="file_to_upload"; filename="{filename}"\r\n'
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return request(port, "POST", "/upload_file", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def at_once(calls: list) -> list:
    results: list = [None] * len(calls)
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, calls[i]())) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def attack(src: Path, pngs: list[bytes], weights: Path, warm_photo: Path, server_args: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": str(src / "backend"), "DATA_DIR": f"{tmp}/data", "WEIGHTS_DIR": str(weights),
               "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp}/db.sqlite3"}
        with open(f"{tmp}/server.log", "w") as log:
            server = subprocess.Popen([str(RECOMMENDER), "serve", *server_args], env=env,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            while True:
                try:
                    if request(port, "GET", "/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                if server.poll() is not None:
                    raise SystemExit(Path(f"{tmp}/server.log").read_text())
                time.sleep(0.2)
            time.sleep(1)  # every worker up
            workers = workers_of(server.pid)
            for _ in workers:  # ordinary uploads: the baseline (each worker warm)
                upload(port, warm_photo.read_bytes(), warm_photo.name)
            time.sleep(1)
            figures = {"baseline": largest_rss(workers)}
            with Sampler(workers) as s:
                answers = at_once([lambda i=i: upload(port, pngs[i], f"huge-{i}.png") for i in range(len(pngs))])
            statuses = sorted(status for status, _ in answers)
            names = [json.loads(body)["name"] for status, body in answers if status in (200, 201)]
            time.sleep(3)
            figures.update({"uploads peak": s.peak, "uploads after": largest_rss(workers), "uploads ok": float(len(names))})
            if statuses.count(201) != len(pngs):
                print(f"  {src.name}: upload statuses {statuses}", file=sys.stderr)
            for phase in ("thumbs", "thumbs, uncached"):
                if phase == "thumbs, uncached":
                    shutil.rmtree(f"{tmp}/data/media/thumbs", ignore_errors=True)
                with Sampler(workers) as s:
                    thumbs = at_once([lambda n=n: request(port, "GET", f"/images/{n}/thumb") for n in names])
                assert all(status == 200 for status, _ in thumbs), [status for status, _ in thumbs]
                time.sleep(3)
                figures.update({f"{phase} peak": s.peak, f"{phase} after": largest_rss(workers)})
            return figures
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


INGEST_SNIPPET = """
import sys, tempfile, time
from pathlib import Path
from recommender import bootstrap
from recommender.config import Settings
photos = [Path(p) for p in sys.argv[2:]]
with tempfile.TemporaryDirectory() as tmp:
    settings = Settings(data_dir=Path(tmp), weights_dir=Path(sys.argv[1]))
    with bootstrap.build(settings) as service:
        service.detectors.load(service.collection.current().detector)
        started, cpu = time.perf_counter(), time.process_time()
        summary = service.ingest.paths(photos, clean_orphans=False)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert summary.ingested == len(photos), summary.failed
        print(len(photos) / seconds, cpu / len(photos))
"""


def ingest_rate(src: Path, weights: Path, photos: list[Path]) -> tuple[float, float]:
    """(photos per second, CPU seconds per photo, all threads of the process) of one ingest run."""
    env = {**os.environ, "PYTHONPATH": str(src / "backend")}
    out = subprocess.run([sys.executable, "-c", INGEST_SNIPPET, str(weights), *map(str, photos)], env=env,
                         capture_output=True, text=True, check=True, timeout=1800)
    rate, cpu = out.stdout.strip().splitlines()[-1].split()
    return float(rate), float(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-src", type=Path, help="another checkout to compare with (its backend/ is used)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--web-workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=16,
                        help="request threads per worker; 16 admits all 8 uploads at once into one worker")
    parser.add_argument("--ingest-photos", type=int, default=120, help="photos per ingest measurement (0: skip)")
    parser.add_argument("--no-attack", action="store_true", help="measure ingest throughput only")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--weights-dir", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", REPO / "data" / "weights")))
    args = parser.parse_args()

    variants = {"this": REPO} if args.baseline_src is None else {"baseline": args.baseline_src.resolve(), "this": REPO}
    photos = sorted(args.images.glob("*.jpg"))
    pngs = [huge_grey_png(i) for i in range(CONCURRENT)]
    print(f"attack: {CONCURRENT} PNGs of {SIDE}x{SIDE} grey, {len(pngs[0]) / 1024:.0f} KB each; "
          f"load average {os.getloadavg()[0]:.1f}")
    memory: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, src in variants.items():
            server_args = ["--web-workers", str(args.web_workers), "--threads", str(args.threads)]
            if not args.no_attack:
                memory[name].append(attack(src, pngs, args.weights_dir, photos[0], server_args))
            if args.ingest_photos:
                rates[name].append(ingest_rate(src, args.weights_dir, photos[1 : 1 + args.ingest_photos]))
            figures = json.dumps({k: round(v) for k, v in memory[name][-1].items()}) if memory[name] else ""
            ingest = f" ingest {rates[name][-1][0]:.1f} photos/s, {rates[name][-1][1] * 1e3:.0f} ms CPU/photo" if rates[name] else ""
            print(f"  round {round_ + 1} {name}: {figures}{ingest}")
    if not args.no_attack:
        print(f"\nlargest worker RSS in MB ({args.web_workers} worker(s) of {args.threads} threads), median of "
              f"{args.rounds} rounds (peak: sampled every 10 ms and the kernel's VmHWM)")
        print(f"{'':<24}" + "".join(f"{name:>12}" for name in variants))
        for key in memory["this"][0]:
            print(f"{key:<24}" + "".join(f"{statistics.median(r[key] for r in memory[name]):12.0f}" for name in variants))
    if args.ingest_photos:
        report_ingest(rates, args.ingest_photos)


def report_ingest(rates: dict[str, list[tuple[float, float]]], photos: int) -> None:
    # Wall-clock rate swings with whatever else runs on the machine; CPU time per photo much less.
    print(f"\ningest of {photos} coco_dev photos (median over rounds; wall-clock rate and CPU time per photo)")
    for name, runs in rates.items():
        print(f"  {name:<10} {statistics.median(r[0] for r in runs):6.2f} photos/s   "
              f"{statistics.median(r[1] for r in runs) * 1e3:6.1f} ms CPU/photo   "
              f"(rates: {', '.join(f'{r[0]:.1f}' for r in runs)})")
    if "baseline" in rates:
        for label, i in (("photos/s", 0), ("CPU per photo", 1)):
            ratio = statistics.median(r[i] for r in rates["this"]) / statistics.median(r[i] for r in rates["baseline"])
            print(f"  this/baseline, {label}: {ratio:.3f}")


if __name__ == "__main__":
    main()
