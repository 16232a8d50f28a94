"""Real processes for the queue tests: Debian's redis-server on a free port, ``recommender worker``s."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from conftest import RECOMMENDER, free_port, stop_process_group

QUEUE = "recommender.ingest"


class RedisServer:
    """A private redis-server (never the shared 6379) with append-only persistence in ``folder``."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: `make test` installs it (apt-get install redis-server)")
        self.binary = binary
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> RedisServer:
        # appendfsync always: even a kill -9 of the server right after a write keeps the write.
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder),
                   "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "no"]
        with (self.folder / "redis.log").open("a") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"redis-server did not start:\n{(self.folder / 'redis.log').read_text()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """kill -9: no shutdown save; only what the append-only file holds survives."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=5)

    def queued(self, db: int = 0) -> int:
        """Tasks waiting in the queue plus tasks delivered but not acknowledged."""
        client = self.client(db)
        return client.llen(QUEUE) + client.hlen("unacked")


class Worker:
    """``recommender worker`` as an operator starts it, in its own process group."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("w") as out:  # default concurrency: one detection per core
            self.process = subprocess.Popen([str(RECOMMENDER), "worker"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def wait_ready(self, timeout: float = 180) -> Worker:
        deadline = time.monotonic() + timeout
        while " ready." not in self.text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"the worker did not get ready:\n{self.text()}")
            time.sleep(0.2)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tasks(self, event: str) -> list[str]:
        """Task ids (SHA-256) this worker logged as "received" or "succeeded", in order."""
        return re.findall(r"ingest_photo\[([0-9a-f]{64})\] " + event, self.text())

    def in_flight(self) -> set[str]:
        return set(self.tasks("received")) - set(self.tasks("succeeded"))

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        stop_process_group(self.process, timeout=60)
