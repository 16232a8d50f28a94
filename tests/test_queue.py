"""Ingest through the queue: real redis-server, real ``recommender worker`` processes, real databases.

Nothing is mocked and nothing runs eagerly: the CLI stages and enqueues, workers in other
processes detect and store, outcomes come back through Redis. The suite sends QUEUE_PHOTOS of
coco_dev through two workers (TEST_QUEUE_PHOTOS=400 runs all of them; so does bench/ingest.py).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import POSTGRES_ADMIN_URL, RECOMMENDER
from queue_processes import RedisServer, Worker
from recommender import bootstrap
from recommender.config import Settings
from recommender.service import Unavailable
from recommender.storage import MediaStore, create_database_engine
from recommender.tasks.app import QUEUE

QUEUE_PHOTOS = int(os.environ.get("TEST_QUEUE_PHOTOS", "120"))
# Settings of the caller's environment that must not leak into the processes a test starts.
_OURS = ("DATABASE_URL", "DATA_DIR", "WEIGHTS_DIR", "BROKER_URL", "RESULT_BACKEND", "BROKER_VISIBILITY_TIMEOUT",
         "WORKER_CONCURRENCY", "DETECT_THREADS", "DETECTOR", "IMAGES_DIR")


@pytest.fixture
def broker(tmp_path: Path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


def _env(database_url: str, data_dir: Path, weights_dir: Path, broker: RedisServer | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    env.update(DATABASE_URL=database_url, DATA_DIR=str(data_dir), WEIGHTS_DIR=str(weights_dir))
    if broker is not None:
        # A dead worker's tasks come back after 4 s instead of 5 minutes.
        env.update(BROKER_URL=broker.url(), BROKER_VISIBILITY_TIMEOUT="4")
    return env


def _cli(env: dict[str, str], *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    result = subprocess.run([str(RECOMMENDER), *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"recommender {' '.join(args[:3])} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _stored(env: dict[str, str]) -> dict[str, str]:
    """sha256 -> name of every image row; asserts each row has a vector and its original file."""
    engine = create_database_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT sha256, name, format FROM images")).all()
            vectors = conn.execute(text("SELECT count(*) FROM vectors")).scalar_one()
    finally:
        engine.dispose()
    assert len({sha for sha, _, _ in rows}) == len(rows) and vectors == len(rows)
    media = MediaStore(Path(env["DATA_DIR"]) / "media")
    for sha, name, fmt in rows:
        assert media.original_path(sha, fmt).is_file(), f"{name} has a row but no original"
    return {sha: name for sha, name, _ in rows}


def _count(env: dict[str, str]) -> int:
    engine = create_database_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM images")).scalar_one()
    finally:
        engine.dispose()


def _marks(env: dict[str, str]) -> list[Path]:
    return [p for p in (Path(env["DATA_DIR"]) / "media" / "queued").rglob("*") if p.is_file()]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _vectors(env: dict[str, str], weights_dir: Path) -> dict[str, np.ndarray]:
    settings = Settings(data_dir=Path(env["DATA_DIR"]), database_url=env["DATABASE_URL"], weights_dir=weights_dir)
    with bootstrap.build(settings) as service:
        names, raw = service.queries.stored_vectors()
    return dict(zip(names, raw))


# ------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_two_workers_ingest_coco_dev_exactly_once_with_the_vectors_of_in_process_ingest(
    broker: RedisServer, postgres_url: str, tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    photos = coco_dev_images[:QUEUE_PHOTOS]
    env = _env(postgres_url, tmp_path / "queued", weights_dir, broker)
    _cli(env, "db", "upgrade")
    workers = [Worker(env, tmp_path / f"worker-{i}.log").wait_ready() for i in range(2)]
    try:
        queued = _cli(env, "ingest", "--queue", "--quiet", *map(str, photos))
    finally:
        for worker in workers:
            worker.stop()
    assert f"Ingested {len(photos)} new images, skipped 0 duplicates, 0 failed" in queued.stdout

    stored = _stored(env)
    assert set(stored) == {_sha(p) for p in photos}  # every photo, each exactly once
    assert sorted(stored.values()) == sorted(p.name for p in photos)
    assert all(worker.tasks("succeeded") for worker in workers), "both workers should have taken tasks"
    assert _marks(env) == [] and broker.queued() == 0

    # The same photos ingested in this process's way (no queue) give the same vectors.
    local = _env(f"sqlite:///{tmp_path / 'local.sqlite3'}", tmp_path / "local", weights_dir, None)
    _cli(local, "ingest", "--quiet", *map(str, photos))
    through_queue, in_process = _vectors(env, weights_dir), _vectors(local, weights_dir)
    assert sorted(through_queue) == sorted(in_process)
    for name, vector in in_process.items():
        np.testing.assert_array_equal(through_queue[name], vector, err_msg=name)


@pytest.mark.slow
def test_a_worker_killed_mid_task_loses_no_photo_and_stores_none_twice(
    broker: RedisServer, postgres_url: str, tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    photos = coco_dev_images[200:260]
    env = _env(postgres_url, tmp_path / "data", weights_dir, broker)
    _cli(env, "db", "upgrade")
    doomed, survivor = (Worker(env, tmp_path / f"worker-{i}.log").wait_ready() for i in range(2))
    cli_log = tmp_path / "ingest.log"
    try:
        with cli_log.open("w") as out:
            ingest = subprocess.Popen([str(RECOMMENDER), "ingest", "--queue", "--quiet", *map(str, photos)], env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
        # Kill it while it holds a task: received, not finished (acknowledged late, so still queued).
        deadline = time.monotonic() + 600
        while not (len(doomed.tasks("succeeded")) >= 3 and doomed.in_flight()):
            assert time.monotonic() < deadline and ingest.poll() is None, cli_log.read_text()
            time.sleep(0.01)
        doomed.kill()
        lost = doomed.in_flight()
        assert ingest.wait(timeout=600) == 0, cli_log.read_text()
    finally:
        doomed.stop()
        survivor.stop()
    assert f"Ingested {len(photos)} new images, skipped 0 duplicates, 0 failed" in cli_log.read_text()
    assert lost and lost <= set(survivor.tasks("succeeded")), "the killed worker's task should run again elsewhere"
    stored = _stored(env)
    assert set(stored) == {_sha(p) for p in photos}
    assert _marks(env) == [] and broker.queued() == 0


def test_bad_files_are_reported_failed_with_their_reason(
    broker: RedisServer, tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for path in coco_dev_images[:2]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "copy.jpg").write_bytes(coco_dev_images[0].read_bytes())
    cut = coco_dev_images[2].read_bytes()[:3000]  # a JPEG header, then nothing: the worker finds out
    (folder / "cut-off.jpg").write_bytes(cut)
    (folder / "notes.jpg").write_text("not a photo")  # refused before it is queued
    env = _env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data", weights_dir, broker)
    worker = Worker(env, tmp_path / "worker.log").wait_ready()
    try:
        first = _cli(env, "ingest", "--queue", "--quiet", "--strict", str(folder), str(tmp_path / "absent"), check=False)
        again = _cli(env, "ingest", "--queue", "--quiet", str(folder), check=False)
    finally:
        worker.stop()
    assert first.returncode == 1, first.stdout + first.stderr
    assert "Ingested 2 new images, skipped 1 duplicate, 3 failed" in first.stdout
    failed = dict(line.strip().split(": ", 1) for line in first.stderr.splitlines() if line.startswith("  "))
    assert "truncated" in failed[str(folder / "cut-off.jpg")]
    assert "not a supported image" in failed[str(folder / "notes.jpg")]
    assert failed[str(tmp_path / "absent")] == "no such file or folder"
    assert "Ingested 0 new images, skipped 3 duplicates, 2 failed" in again.stdout
    assert "truncated" in worker.text()  # the worker says why, too

    stored = _stored(env)
    assert set(stored) == {_sha(p) for p in coco_dev_images[:2]}
    # The failed photo's original went with it; nothing stays marked as queued.
    media = MediaStore(Path(env["DATA_DIR"]) / "media")
    assert not media.original_path(hashlib.sha256(cut).hexdigest(), "JPEG").exists()
    assert _marks(env) == []


@pytest.mark.slow
def test_a_broker_restart_loses_no_queued_photo(
    broker: RedisServer, tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    env = _env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data", weights_dir, broker)
    waiting, later = coco_dev_images[300:320], coco_dev_images[320:350]
    queued = _cli(env, "ingest", "--queue", "--no-wait", "--quiet", *map(str, waiting))
    assert "Queued 20 photos for the workers" in queued.stdout
    assert broker.queued() == 20 and _count(env) == 0  # no worker yet: all waiting in Redis

    broker.kill()  # kill -9: what survives is what the append-only file holds
    broker.start()
    assert broker.queued() == 20

    worker = Worker(env, tmp_path / "worker.log").wait_ready()
    try:
        deadline = time.monotonic() + 300
        while _count(env) < 20 or _marks(env):
            assert time.monotonic() < deadline, worker.text()
            time.sleep(0.2)
        # And a restart while a run is being followed: the worker reconnects, the CLI waits it out.
        log = tmp_path / "ingest.log"
        with log.open("w") as out:
            ingest = subprocess.Popen([str(RECOMMENDER), "ingest", "--queue", "--quiet", *map(str, later)], env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
            while _count(env) < 25:
                assert time.monotonic() < deadline and ingest.poll() is None, log.read_text()
                time.sleep(0.05)
            broker.kill()
            time.sleep(1)
            broker.start()
            assert ingest.wait(timeout=300) == 0, log.read_text()
    finally:
        worker.stop()
    assert "Ingested 30 new images, skipped 0 duplicates, 0 failed" in log.read_text()
    assert set(_stored(env)) == {_sha(p) for p in waiting + later}
    assert _marks(env) == []


def test_a_task_the_broker_lost_is_sent_again_by_the_waiting_run(
    broker: RedisServer, tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    """Redis pops a message before the worker books it as unacknowledged; a broker killed in
    between loses it for good. The run following the photos notices (queue empty, an outcome
    still missing, nothing new for a while) and queues it again."""
    env = _env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data", weights_dir, broker)
    photos = coco_dev_images[350:356]
    log = tmp_path / "ingest.log"
    with log.open("w") as out:
        ingest = subprocess.Popen([str(RECOMMENDER), "ingest", "--queue", "--quiet", *map(str, photos)], env=env,
                                  stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while broker.client().llen(QUEUE) < len(photos):
            assert time.monotonic() < deadline and ingest.poll() is None, log.read_text()
            time.sleep(0.1)
        assert broker.client().rpop(QUEUE) is not None  # the lost message
        worker = Worker(env, tmp_path / "worker.log").wait_ready()
        try:
            assert ingest.wait(timeout=300) == 0, log.read_text()
        finally:
            worker.stop()
    assert f"Ingested {len(photos)} new images, skipped 0 duplicates, 0 failed" in log.read_text()
    assert set(_stored(env)) == {_sha(p) for p in photos}


# ---------------------------------------------------------------------------- without a broker


def test_without_broker_url_nothing_changes_and_celery_is_never_imported(
    tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    env = _env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data", weights_dir, None)
    script = (
        "import sys\n"
        "from recommender.cli import main\n"
        "from recommender.web.app import create_app\n"
        f"main(['ingest', '--quiet', {str(coco_dev_images[0])!r}], standalone_mode=False)\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'redis')\n"
        "                or m.startswith('recommender.tasks'))\n"
        "print('queue modules:', loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Ingested 1 new image" in result.stdout and "queue modules: []" in result.stdout

    for command in (["ingest", "--queue", str(coco_dev_images[1])], ["worker"]):
        refused = _cli(env, *command, check=False)
        assert refused.returncode == 2 and "BROKER_URL" in refused.stderr, refused.stderr
    assert _count(env) == 1


def test_an_unreachable_broker_is_one_line_before_anything_is_staged(
    tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    env = _env(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data", weights_dir, None)
    env["BROKER_URL"] = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    result = _cli(env, "ingest", "--queue", str(coco_dev_images[0]), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot reach the broker at redis://127.0.0.1:1/0" in result.stderr
    assert not (Path(env["DATA_DIR"]) / "media" / "originals").exists()


# ------------------------------------------------------------------- staging and the orphan cleaner


def test_a_queued_original_outlives_the_orphan_grace_until_its_task_runs(
    tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=f"sqlite:///{tmp_path / 'db.sqlite3'}",
                        weights_dir=weights_dir)
    media = MediaStore(settings.media_dir)
    hour_ago, eight_days_ago = time.time() - 3600, time.time() - 8 * 86400
    with bootstrap.build(settings) as service:
        first, second = (service.ingest.stage(p) for p in coco_dev_images[:2])
        for staged in (first, second):
            os.utime(media.original_path(staged.sha256, staged.format), (hour_ago, hour_ago))
        assert service.admin.clean_orphans() == 0  # queued for an hour: older than 10 min, still spared

        # A task that ran: stored, its mark gone; run again (redelivered), a duplicate.
        result = service.ingest.stored(first.sha256, first.format, first.name_hint)
        assert not result.duplicate and result.image.name == coco_dev_images[0].name
        assert service.ingest.stored(first.sha256, first.format, first.name_hint).duplicate
        assert not media.is_queued(first.sha256)

        # A task lost for longer than the queue grace (a wiped broker): its original goes.
        os.utime(media.queued_mark_path(second.sha256), (eight_days_ago, eight_days_ago))
        assert service.admin.clean_orphans() == 2  # the original and its mark
        assert not media.original_path(second.sha256, second.format).exists()
        assert service.queries.count() == 1


def test_a_database_outage_leaves_a_queued_photo_in_place_for_the_retry(
    postgres_url: str, tmp_path: Path, weights_dir: Path, coco_dev_images: list[Path]
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url, weights_dir=weights_dir)
    bootstrap.migrate_database(settings)
    media = MediaStore(settings.media_dir)
    with bootstrap.build(settings) as service:
        staged = service.ingest.stage(coco_dev_images[0])
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:  # the database goes away under the worker
            conn.execute(text(f'DROP DATABASE "{make_url(postgres_url).database}" WITH (FORCE)'))
        admin.dispose()
        with pytest.raises(Unavailable):  # transient: the task retries it (a PhotoFailed would not be)
            service.ingest.stored(staged.sha256, staged.format, staged.name_hint)
    assert media.original_path(staged.sha256, staged.format).is_file() and media.is_queued(staged.sha256)
