"""Scale through the real service: start-up, memory and GET /get_similar at n photos.

    .venv/bin/python bench/scale.py [--n 100000 1000000] [--backend sqlite postgresql]
                                    [--queries 300] [--json OUT] [--drop]

For each backend and n, an n-photo collection is written into the real database without
running the detector (``synthetic.fill``: distinct rows, coco_dev YOLOv5s vectors resampled
with logit noise, detections consistent with the vectors) and kept under ``--cache`` (on
PostgreSQL in a database ``scale_bench_<n>`` at 127.0.0.1:5432), so later runs reuse it;
``--drop`` removes the databases at the end. A 400-photo collection of the same backend is
the baseline, measured in the same run, interleaved with the large one. With ``--baseline-src
DIR`` a server running the code in DIR (e.g. a ``git worktree`` of an older commit) answers
the same n-photo collection too, with index snapshots of its own, interleaved with the others.

``recommender serve`` is started as the README does (WEB_WORKERS default: 2 web processes,
8 threads each) with DATA_DIR pointing at the collection's folder:

* **start-up**: seconds from the command until every web process answers /healthz 200, and
  until the first GET /get_similar is answered; *cold* without an index snapshot (each process
  reads every vector and the class table, builds, saves), *warm* with the snapshot present
  (median of ``--warm-starts``).
* **memory** of all server processes (arbiter + web processes) from /proc/<pid>/smaps_rollup:
  the sum of PSS (shared pages, such as the mapped snapshot, counted once) and of RSS (counted
  in every process that maps them), after the queries.
* **GET /get_similar** pages 1 and 5 (30 per page) for random photos: sequential over one
  keep-alive connection, in rounds that run every (collection, page) once in a shuffled order;
  then 1 against 4 concurrent clients (interleaved timed rounds): requests per second, and the
  latency under 4 clients.

Medians and p95 in ms; the load average is printed (the machine is shared).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from http_latency import Client, _free_port, _loadavg, summary
from recommender import bootstrap
from recommender.config import Settings
from recommender.storage import Repository
from synthetic import fill, name_of

REPO = Path(__file__).resolve().parents[1]
PG_SERVER = "postgres@127.0.0.1:5432"
BASELINE = 400
PAGES = (1, 5)
TARGET_MEDIAN_MS = {100_000: 8.0, 1_000_000: 15.0}
TARGET_START_S, TARGET_MEMORY_MB = 15.0, 1536.0


@dataclass(frozen=True)
class Built:
    backend: str
    n: int
    data_dir: Path
    database_url: str | None
    src: Path = REPO  # the code the server runs (--baseline-src: an older checkout)

    @property
    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, database_url=self.database_url)

    @property
    def key(self) -> str:
        return f"{self.n}" if self.src == REPO else f"{self.n} baseline"

    def with_code(self, src: Path) -> Built:
        """The same collection served by the code in ``src``, with index snapshots of its own."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'recommender.sqlite3'}"
        return Built(self.backend, self.n, self.data_dir.parent / "baseline-data", url, src)


def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def prepare(backend: str, n: int, sigma: float, weights: Path, cache: Path) -> Built:
    """The n-photo collection of ``backend``: reused when the cached one is complete, else made."""
    folder = cache / f"{backend}-n{n}-s{sigma:g}"
    database = f"scale_bench_{n}_s{sigma:g}".replace(".", "_")
    url = None if backend == "sqlite" else f"postgresql+psycopg://{PG_SERVER}/{database}"
    built = Built(backend, n, folder / "data", url)
    marker = folder / "built.json"
    if marker.is_file() and _complete(built):
        print(f"reusing {backend} n={n}: {json.loads(marker.read_text())}", flush=True)
        return built
    shutil.rmtree(folder, ignore_errors=True)
    built.data_dir.mkdir(parents=True)
    if url is not None:
        _admin(f"DROP DATABASE IF EXISTS {database}")
        _admin(f"CREATE DATABASE {database}")
    made = fill(built.settings, n, sigma, weights)
    marker.write_text(json.dumps(made) + "\n")
    print(f"built {backend} n={n}: {made}", flush=True)
    return built


def _complete(built: Built) -> bool:
    try:
        repository = Repository(bootstrap.open_database(built.settings))
    except Exception:  # the database or file is gone: build again
        return False
    try:
        return repository.count() == built.n
    finally:
        repository.close()


def drop(built: Built) -> None:
    if built.database_url is not None:
        _admin(f"DROP DATABASE IF EXISTS {built.database_url.rsplit('/', 1)[1]}")
        shutil.rmtree(built.data_dir.parent, ignore_errors=True)


class Server:
    """``recommender serve`` on a free loopback port, in its own session (so all its processes are found)."""

    def __init__(self, built: Built, weights: Path) -> None:
        self.built, self.port = built, _free_port()
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "WEB_WORKERS", "INDEX", "DETECTOR", "ADMIN_TOKEN", "PYTHONPATH")}
        env.update(DATA_DIR=str(built.data_dir), WEIGHTS_DIR=str(weights), HOST="127.0.0.1", PORT=str(self.port),
                   PYTHONPATH=str(built.src / "backend"))
        if built.database_url:
            env["DATABASE_URL"] = built.database_url
        self.started = time.perf_counter()
        log = (built.data_dir.parent / "server.log").open("a")
        self.process = subprocess.Popen([str(Path(sys.executable).with_name("recommender")), "serve"], env=env,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, workers: int = 2, timeout: float = 600.0) -> float:
        """Seconds from the command until ``workers`` distinct processes answered /healthz 200."""
        ready: set[int] = set()
        while len(ready) < workers:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with {self.process.returncode}; see {self.built.data_dir.parent}")
            if time.perf_counter() - self.started > timeout:
                raise SystemExit("the server did not become ready in time")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                body = response.read()
                conn.close()
                if response.status == 200:
                    ready.add(json.loads(body)["pid"])
                    continue  # a fresh connection may reach the other process
            except OSError:
                pass
            time.sleep(0.1)
        return time.perf_counter() - self.started

    def first_similar(self, name: str) -> float:
        client = Client(self.port)
        status, _body, _seconds = client.request("GET", f"/get_similar/{name}")
        client.close()
        assert status == 200, status
        return time.perf_counter() - self.started

    def memory_mb(self) -> dict[str, float]:
        """Sum of PSS and of RSS (MB) over every process of the server's session."""
        totals = {"pss_mb": 0.0, "rss_mb": 0.0, "processes": 0}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getsid(int(entry.name)) != self.process.pid:
                    continue
                rollup = (entry / "smaps_rollup").read_text().splitlines()
            except (OSError, ProcessLookupError):
                continue
            fields = {line.split(":")[0]: line.split()[1] for line in rollup[1:]}
            totals["pss_mb"] += int(fields["Pss"]) / 1024
            totals["rss_mb"] += int(fields["Rss"]) / 1024
            totals["processes"] += 1
        return {k: round(v, 1) for k, v in totals.items()}

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start(built: Built, weights: Path, cold: bool, rng: random.Random) -> tuple[Server, dict]:
    if cold:
        shutil.rmtree(built.settings.snapshot_dir, ignore_errors=True)
    # The previous server's snapshot (hundreds of MB at 1M) may still be being written back;
    # that disk traffic would slow whichever server starts next.
    os.sync()
    server = Server(built, weights)
    ready = server.wait_ready()
    first = server.first_similar(name_of(rng.randrange(1, built.n + 1)))
    return server, {"ready_s": round(ready, 2), "first_similar_s": round(first, 2), **server.memory_mb()}


def startups(pair: list[Built], weights: Path, warm_starts: int, rng: random.Random) -> tuple[list[Server], dict]:
    """Cold then warm starts of each collection, alternating; the last warm servers stay up."""
    found: dict[str, dict] = {b.key: {"cold": None, "warm": []} for b in pair}
    for built in pair:
        server, found[built.key]["cold"] = start(built, weights, True, rng)
        server.stop()
    servers: list[Server] = []
    for round_ in range(warm_starts):
        for built in pair:
            server, seen = start(built, weights, False, rng)
            found[built.key]["warm"].append(seen)
            if round_ == warm_starts - 1:
                servers.append(server)
            else:
                server.stop()
    return servers, found


def sequential(servers: list[Server], queries: int, rng: random.Random) -> dict:
    clients = {s.built.key: Client(s.port) for s in servers}
    sizes = {s.built.key: s.built.n for s in servers}
    times: dict[tuple[str, int], list[float]] = {(s.built.key, p): [] for s in servers for p in PAGES}
    for _ in range(5):  # warm-up: connections, first requests of each process
        for s in servers:
            clients[s.built.key].request("GET", f"/get_similar/{name_of(rng.randrange(1, s.built.n + 1))}")
    for _ in range(queries):
        order = list(times)
        rng.shuffle(order)
        for key, page in order:
            name = name_of(rng.randrange(1, sizes[key] + 1))
            status, _body, seconds = clients[key].request("GET", f"/get_similar/{name}?page={page}")
            assert status == 200, status
            times[(key, page)].append(seconds)
    for client in clients.values():
        client.close()
    return {f"{key}/page{p}": summary(t) for (key, p), t in times.items()}


def _timed_round(server: Server, clients: int, seconds: float, rng: random.Random) -> tuple[float, dict[int, list[float]]]:
    """Requests per second with ``clients`` keep-alive clients, each alternating pages 1 and 5."""
    latencies: dict[int, list[float]] = {p: [] for p in PAGES}
    count = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    picks = [[name_of(rng.randrange(1, server.built.n + 1)) for _ in range(2000)] for _ in range(clients)]

    def run(k: int) -> None:
        client, i = Client(server.port), 0
        while time.perf_counter() < deadline:
            page = PAGES[i % 2]
            status, _body, took = client.request("GET", f"/get_similar/{picks[k][i % 2000]}?page={page}")
            assert status == 200, status
            with lock:
                latencies[page].append(took)
                count[0] += 1
            i += 1
        client.close()

    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return count[0] / seconds, latencies


def concurrent(servers: list[Server], rounds: int, seconds: float, rng: random.Random) -> dict:
    slots = [(s, c) for s in servers for c in (1, 4)]
    rate = {(s.built.key, c): [] for s, c in slots}
    lat = {(s.built.key, c, p): [] for s, c in slots for p in PAGES}
    for _ in range(rounds):
        rng.shuffle(slots)
        for server, clients in slots:
            per_s, latencies = _timed_round(server, clients, seconds, rng)
            rate[(server.built.key, clients)].append(per_s)
            for page, values in latencies.items():
                lat[(server.built.key, clients, page)].extend(values)
    out: dict = {}
    for s in servers:
        n = s.built.key
        one, four = statistics.median(rate[(n, 1)]), statistics.median(rate[(n, 4)])
        out[n] = {"per_s_1": round(one, 1), "per_s_4": round(four, 1), "ratio_4_vs_1": round(four / one, 2),
                       **{f"4clients/page{p}": summary(lat[(n, 4, p)]) for p in PAGES}}
    return out


def measure(pair: list[Built], weights: Path, args: argparse.Namespace, rng: random.Random) -> dict:
    load_start = _loadavg()
    servers, starts = startups(pair, weights, args.warm_starts, rng)
    try:
        seq = sequential(servers, args.queries, rng)
        conc = concurrent(servers, args.rounds, args.seconds, rng)
        memory = {s.built.key: s.memory_mb() for s in servers}
    finally:
        for s in servers:
            s.stop()
    return {"backend": pair[0].backend, "load_average": [load_start, _loadavg()], "startups": starts,
            "sequential": seq, "concurrent": conc, "memory_after_queries": memory}


def report(r: dict) -> None:
    print(f"\n{r['backend']}: load average {r['load_average'][0]} at start, {r['load_average'][1]} at the end")
    print("| n | cold ready / first answer s | warm ready / first answer s (median) | PSS / RSS MB (warm, after queries) "
          "| page 1 median / p95 ms | page 5 median / p95 ms | 4 clients p1 median / p95 | 4 vs 1 throughput |")
    print("|---|---|---|---|---|---|---|---|")
    for key, st in r["startups"].items():
        n, baseline = int(key.split()[0]), " baseline" in key
        warm = st["warm"]
        w_ready = statistics.median(w["ready_s"] for w in warm)
        w_first = statistics.median(w["first_similar_s"] for w in warm)
        mem, seq, conc = r["memory_after_queries"][key], r["sequential"], r["concurrent"][key]
        p1, p5, c1 = seq[f"{key}/page1"], seq[f"{key}/page5"], conc["4clients/page1"]
        print(f"| {n:,}{' (baseline code)' if baseline else ''} | {st['cold']['ready_s']} / {st['cold']['first_similar_s']} | {w_ready:.2f} / {w_first:.2f} "
              f"| {mem['pss_mb']:.0f} / {mem['rss_mb']:.0f} | {p1['median_ms']} / {p1['p95_ms']} "
              f"| {p5['median_ms']} / {p5['p95_ms']} | {c1['median_ms']} / {c1['p95_ms']} "
              f"| {conc['per_s_4']} / {conc['per_s_1']} = {conc['ratio_4_vs_1']}× |")
        if n in TARGET_MEDIAN_MS and not baseline:
            print(f"  targets at {n:,}: page-1 median {p1['median_ms']} <= {TARGET_MEDIAN_MS[n]} ms: "
                  f"{'yes' if p1['median_ms'] <= TARGET_MEDIAN_MS[n] else 'NO'}"
                  + (f"; warm start {w_ready:.1f} <= {TARGET_START_S} s: {'yes' if w_ready <= TARGET_START_S else 'NO'}"
                     f"; PSS {mem['pss_mb']:.0f} <= {TARGET_MEMORY_MB:.0f} MB: "
                     f"{'yes' if mem['pss_mb'] <= TARGET_MEMORY_MB else 'NO'}" if n >= 1_000_000 else ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--backend", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--sigma", type=float, default=1.0, help="logit noise (1.0: the less clustered data)")
    parser.add_argument("--queries", type=int, default=300, help="sequential rounds (each: every collection and page)")
    parser.add_argument("--rounds", type=int, default=4, help="timed rounds of 1 and of 4 clients")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a timed round")
    parser.add_argument("--warm-starts", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", REPO / "data" / "weights")))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/scale-bench"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--baseline-src", type=Path,
                        help="a checkout of older code: its server answers the same n-photo collection, interleaved")
    parser.add_argument("--drop", action="store_true", help="drop the PostgreSQL databases made, at the end")
    args = parser.parse_args()
    rng = random.Random(11)
    results = []
    for backend in args.backend:
        baseline = prepare(backend, BASELINE, args.sigma, args.weights, args.cache)
        for n in args.n:
            big = prepare(backend, n, args.sigma, args.weights, args.cache)
            before = [big.with_code(args.baseline_src.resolve())] if args.baseline_src else []
            results.append(measure([big, *before, baseline], args.weights, args, rng))
            report(results[-1])
            if args.json:
                args.json.write_text(json.dumps(results, indent=2) + "\n")
            if args.drop:
                drop(big)
        if args.drop:
            drop(baseline)


if __name__ == "__main__":
    main()
