"""A running server follows changes other processes commit: CLI ingest, delete, another web worker.

The server is the real one (``recommender serve`` with two gunicorn worker processes); the
changes come from the real CLI in other processes; SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import RECOMMENDER, ServerProcess, free_port, get_json
from recommender.detection import resolve

GALLERY = 100
ADDED = 20
DEADLINE_S = 5.0


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(RECOMMENDER), *args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"recommender {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


def _visible(url: str, expected: int) -> set[int]:
    """Pids of the worker processes that answered /healthz with ``expected`` indexed photos."""
    seen: dict[int, int] = {}
    for _ in range(12):  # fresh connections: the kernel spreads them over the workers
        _status, health = get_json(f"{url}/healthz")
        seen[health["pid"]] = health["indexed"]
    return {pid for pid, indexed in seen.items() if indexed == expected} if set(seen.values()) == {expected} else set()


def _ranked(url: str, query: str) -> tuple[int, set[str]]:
    """(total, every name) that one server process ranks for ``query``."""
    names: set[str] = set()
    for number in (1, 2):  # every result: the collection has fewer than 200 photos
        with urllib.request.urlopen(f"{url}/get_similar/{query}?per_page=100&page={number}", timeout=60) as response:
            page = json.loads(response.read())
        names |= {r["name"] for r in page["results"]}
    return page["total"], names


@pytest.mark.slow
def test_every_web_worker_follows_cli_ingests_and_deletes(database_url: str, tmp_path: Path, weights_dir: Path,
                                                          coco_dev_images: list[Path]) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "DETECTOR", "IMAGES_DIR")},
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "WEIGHTS_DIR": str(weights_dir),
        "PORT": str(free_port()),
    }
    gallery, added = coco_dev_images[:GALLERY], coco_dev_images[GALLERY : GALLERY + ADDED]
    _cli(env, "db", "upgrade")
    _cli(env, "ingest", "--quiet", "--strict", *map(str, gallery))
    with ServerProcess([str(RECOMMENDER), "serve", "--web-workers", "2"], env, tmp_path / "server.log") as server:
        server.wait_ready(images=GALLERY, workers=2)
        query, victim = gallery[0].name, gallery[1].name
        assert _ranked(server.url, query)[0] == GALLERY - 1

        _cli(env, "ingest", "--quiet", "--strict", *map(str, added))
        _cli(env, "delete", victim)
        changed = time.monotonic()
        expected = GALLERY + ADDED - 1
        while len(_visible(server.url, expected)) < 2:  # both worker processes
            assert time.monotonic() - changed < DEADLINE_S, f"not every worker followed within {DEADLINE_S} s"
            time.sleep(0.1)
        for _ in range(6):  # whichever worker answers
            total, names = _ranked(server.url, query)
            assert total == expected - 1 and len(names) == total
            assert victim not in names
            assert {p.name for p in added} <= names, "the photos ingested from the CLI are ranked"
        gone = urllib.request.Request(f"{server.url}/images/{victim}")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(gone, timeout=5)
        assert missing.value.code == 404


@pytest.mark.slow
def test_reindex_activate_switches_what_a_running_server_serves(tmp_path: Path, weights_dir: Path,
                                                                coco_dev_images: list[Path]) -> None:
    from recommender.detection import Detections
    from recommender.storage import Repository, create_database_engine
    from recommender.vectors import query_transform, ranking_transform

    env = {
        **{k: v for k, v in os.environ.items() if k not in ("ADMIN_TOKEN", "DETECTOR", "IMAGES_DIR", "DATABASE_URL")},
        "DATA_DIR": str(tmp_path / "data"),
        "WEIGHTS_DIR": str(weights_dir),
        "PORT": str(free_port()),
    }
    photos = coco_dev_images[:12]
    _cli(env, "ingest", "--quiet", "--strict", *map(str, photos))
    # Mask R-CNN vectors of the stored photos, written as a finished reindex would have: the
    # weights cannot be had here, and switching to vectors that exist needs none.
    engine = create_database_engine(f"sqlite:///{tmp_path / 'data' / 'recommender.sqlite3'}")
    repo = Repository(engine)
    ids = repo.vectors(resolve("yolov5s").name)[0].tolist()
    nothing = Detections(np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros((0, 4), np.float32), np.zeros(81, np.float32))
    stored = {}
    for k, image_id in enumerate(ids):
        vector = np.zeros(81, dtype=np.float32)
        vector[1 + k % 3] = 0.9  # three groups: the ranking shows which vectors are served
        repo.store_vector(image_id, "maskrcnn", nothing, vector)
        stored[image_id] = vector
    with ServerProcess([str(RECOMMENDER), "serve", "--web-workers", "2"], env, tmp_path / "server.log") as server:
        server.wait_ready(images=len(photos), workers=2)
        query = repo.get_by_id(ids[0])
        assert get_json(f"{server.url}/get_similar/{query.name}")[1]["detector"] == resolve("yolov5s").name
        switched = _cli(env, "reindex", "--detector", "maskrcnn", "--activate", "--quiet")
        assert "now uses maskrcnn" in switched.stdout
        changed = time.monotonic()
        while True:
            answers = [get_json(f"{server.url}/get_similar/{query.name}?per_page=20")[1] for _ in range(8)]
            if all(a["detector"] == "maskrcnn" for a in answers):
                break
            assert time.monotonic() - changed < DEADLINE_S, "the server still serves yolov5s"
            time.sleep(0.1)
        points = ranking_transform(np.array([stored[i] for i in ids]))
        distances = np.linalg.norm(points - query_transform(stored[query.id]), axis=1)
        expected = [repo.get_by_id(ids[i]).name for i in sorted(range(len(ids)), key=lambda i: (round(distances[i], 9), ids[i]))
                    if ids[i] != query.id]
        assert [r["name"] for r in answers[0]["results"]] == expected
    engine.dispose()
