"""Fixtures shared by every test module: real data paths and real databases."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared"))
COCO_DEV = SHARED_DIR / "data" / "coco_dev"
REFERENCE_VECTORS = SHARED_DIR / "data" / "maskrcnn_reference_vectors.npz"

# PostgreSQL is a first-class target: these tests fail, never skip, when it is unreachable.
POSTGRES_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="session")
def coco_dev_dir() -> Path:
    if not (COCO_DEV / "images").is_dir():
        pytest.fail(f"coco_dev photos not found at {COCO_DEV} (set SHARED_DIR)")
    return COCO_DEV


@pytest.fixture(scope="session")
def coco_dev_labels(coco_dev_dir: Path) -> dict[str, list[str]]:
    return json.loads((coco_dev_dir / "labels.json").read_text())["images"]


@pytest.fixture(scope="session")
def coco_dev_images(coco_dev_dir: Path) -> list[Path]:
    return sorted((coco_dev_dir / "images").glob("*.jpg"))


@pytest.fixture(scope="session")
def weights_dir() -> Path:
    """Where the test run keeps fetched weights (shared across runs: fetching is idempotent)."""
    path = Path(os.environ.get("TEST_WEIGHTS_DIR", REPO_ROOT / "data" / "weights"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _create_postgres_database() -> tuple[str, callable]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"recommender_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - environment problem, reported loudly
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}")
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url, drop


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database URL: a SQLite file, then a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.sqlite3'}"
    url, drop = _create_postgres_database()
    request.addfinalizer(drop)
    return url


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> str:
    """A fresh, empty PostgreSQL database on the local server."""
    url, drop = _create_postgres_database()
    request.addfinalizer(drop)
    return url


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for servers a test starts)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to the process group of ``process`` (started with ``start_new_session``), SIGKILL
    after ``timeout`` seconds: a server and the workers it forked all stop."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def get_json(url: str) -> tuple[int, dict]:
    """Status and JSON body of a GET, for error statuses too."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


RECOMMENDER = Path(sys.executable).with_name("recommender")


class ServerProcess:
    """``recommender serve`` (or another command that ends in it) as a user starts it, killed on exit."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> None:
        self.port = int(env["PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("w") as out:
            self.process = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 180, images: int | None = None, workers: int = 1) -> float:
        """Seconds until /healthz says ok (and, if given, counts ``images``) from ``workers`` processes."""
        started = time.monotonic()
        ready: set[int] = set()
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"the server exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                status, body = get_json(f"{self.url}/healthz")
                if status == 200 and (images is None or body.get("images") == images):
                    ready.add(body.get("pid", 0))
                    if len(ready) >= workers:
                        return time.monotonic() - started
                    continue  # a fresh connection may reach another worker
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # not listening yet
            if time.monotonic() - started > timeout:
                pytest.fail(f"the server was not ready within {timeout} s:\n{self.log.read_text()}")
            time.sleep(0.25)

    def stop(self) -> None:
        stop_process_group(self.process)

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
