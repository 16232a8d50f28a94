"""The ingest / similar / delete / db commands, including a run killed half-way and re-run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from recommender.cli import main
from recommender.detection import resolve
from recommender.storage import MediaStore, create_database_engine, upgrade
from recommender.storage.migrate import head_revision

RECOMMENDER = Path(sys.executable).with_name("recommender")

DEFAULT = resolve("yolov5s").name  # the entry DETECTOR=yolov5s names by default


@pytest.fixture
def env(database_url: str, tmp_path: Path, weights_dir: Path) -> dict[str, str]:
    """Settings of a fresh collection, as environment variables."""
    return {
        "DATABASE_URL": database_url,
        "DATA_DIR": str(tmp_path / "data"),
        "WEIGHTS_DIR": str(weights_dir),
    }


@pytest.fixture
def migrated(env: dict[str, str]) -> dict[str, str]:
    result = CliRunner().invoke(main, ["db", "upgrade"], env=env)
    assert result.exit_code == 0, result.output
    return env


def _invoke(env: dict[str, str], *args: str):
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def _state(env: dict[str, str]) -> dict[str, object]:
    """What is stored: image rows (name -> sha256), vectors per image, media files."""
    engine = create_database_engine(env["DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT name, sha256 FROM images")).all())
            formats = dict(conn.execute(text("SELECT sha256, format FROM images")).all())
            vectors = conn.execute(text("SELECT count(*) FROM vectors")).scalar_one()
            bare = conn.execute(
                text("SELECT count(*) FROM images WHERE NOT EXISTS (SELECT 1 FROM vectors v WHERE v.image_id = images.id)")
            ).scalar_one()
    finally:
        engine.dispose()
    media = MediaStore(Path(env["DATA_DIR"]) / "media")
    files = list(media.iter_files())
    return {"rows": rows, "formats": formats, "vectors": vectors, "rows_without_vector": bare, "media": media, "files": files}


def _count_images(url: str) -> int:
    engine = create_database_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT count(*) FROM images")).scalar_one()
    finally:
        engine.dispose()


def _assert_every_row_has_its_file(state: dict) -> None:
    media: MediaStore = state["media"]
    for name, sha in state["rows"].items():
        path = media.original_path(sha, state["formats"][sha])
        assert path.is_file(), f"{name} has a row but no file"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha


# --------------------------------------------------------------------------- interruptions


@pytest.mark.slow
def test_a_killed_ingest_leaves_complete_images_and_a_rerun_finishes_exactly_once(
    env: dict[str, str], coco_dev_images: list[Path], tmp_path: Path
) -> None:
    photos = coco_dev_images[:60]
    assert len(photos) == 60
    upgrade_engine = create_database_engine(env["DATABASE_URL"])
    upgrade(upgrade_engine)
    upgrade_engine.dispose()
    command = [str(RECOMMENDER), "ingest", "--quiet", *map(str, photos)]
    full_env = {**os.environ, **env}
    log = tmp_path / "first-run.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 600
        while _count_images(env["DATABASE_URL"]) < 10:
            if process.poll() is not None:
                pytest.fail(f"ingest ended before it could be killed:\n{log.read_text()}")
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"ingest stored fewer than 10 images in 10 minutes:\n{log.read_text()}")
            time.sleep(0.1)
        process.send_signal(signal.SIGKILL)
        process.wait()

    killed = _state(env)
    assert 10 <= len(killed["rows"]) < 60, "the run should have been killed half-way"
    assert killed["rows_without_vector"] == 0 and killed["vectors"] == len(killed["rows"])
    _assert_every_row_has_its_file(killed)
    owned = set(killed["rows"].values())
    strays = [f for f in killed["files"] if f.sha256 not in owned]
    # Only the image being committed at the moment of the kill can have files (its original and
    # thumbnail) without a row.
    assert len({f.sha256 for f in strays}) <= 1, strays

    rerun = subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    already = len(killed["rows"])
    assert f"Ingested {60 - already} new images, skipped {already} duplicates, 0 failed" in rerun.stdout

    final = _state(env)
    assert sorted(final["rows"]) == sorted(p.name for p in photos)  # each exactly once
    assert set(final["rows"].values()) == {hashlib.sha256(p.read_bytes()).hexdigest() for p in photos}
    assert final["vectors"] == 60 and final["rows_without_vector"] == 0
    _assert_every_row_has_its_file(final)
    owned = set(final["rows"].values())
    assert [f for f in final["files"] if f.kind not in ("original", "thumb") or f.sha256 not in owned] == []
    assert len(final["files"]) == 120  # each photo's original and the thumbnail made at ingest


@pytest.mark.slow
def test_sigterm_stops_ingest_cleanly_without_stray_files(env: dict[str, str], coco_dev_images: list[Path], tmp_path: Path) -> None:
    photos = coco_dev_images[100:130]
    engine = create_database_engine(env["DATABASE_URL"])
    upgrade(engine)
    engine.dispose()
    process = subprocess.Popen(
        [str(RECOMMENDER), "ingest", "--quiet", *map(str, photos)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while _count_images(env["DATABASE_URL"]) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stdout + stderr
    assert "run the same command again" in stderr

    stopped = _state(env)
    assert 3 <= len(stopped["rows"]) < len(photos)
    _assert_every_row_has_its_file(stopped)
    # An orderly stop finishes or undoes the image in hand: no file without a row.
    assert {f.sha256 for f in stopped["files"]} == set(stopped["rows"].values())
    assert all(f.kind in ("original", "thumb") for f in stopped["files"])  # no temporary file left


# ------------------------------------------------------------------------------- commands


def test_ingest_summary_lists_unreadable_files_and_counts_duplicates(migrated, coco_dev_images, tmp_path: Path) -> None:
    folder = tmp_path / "incoming"
    folder.mkdir()
    for path in coco_dev_images[:3]:
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "cut-off.jpg").write_bytes(coco_dev_images[3].read_bytes()[:1500])

    first = _invoke(migrated, "ingest", "--quiet", str(folder))
    assert first.exit_code == 0
    assert "Ingested 3 new images, skipped 0 duplicates, 1 failed" in first.stdout
    assert "cut-off.jpg" in first.stderr and "Not ingested" in first.stderr

    again = _invoke(migrated, "ingest", "--quiet", "--strict", str(folder))
    assert "Ingested 0 new images, skipped 3 duplicates, 1 failed" in again.stdout
    assert again.exit_code == 1  # --strict: a skipped file is an error


def test_ingest_if_empty_seeds_a_new_collection_only_once(migrated, coco_dev_images, tmp_path: Path) -> None:
    # What the container's entry point runs at every start: only the first start ingests.
    seed, later = tmp_path / "seed", tmp_path / "later"
    seed.mkdir()
    later.mkdir()
    for path in coco_dev_images[:2]:
        (seed / path.name).write_bytes(path.read_bytes())
    (later / coco_dev_images[2].name).write_bytes(coco_dev_images[2].read_bytes())

    first = _invoke(migrated, "ingest", "--quiet", "--if-empty", str(seed))
    assert first.exit_code == 0 and "Ingested 2 new images" in first.stdout
    second = _invoke(migrated, "ingest", "--quiet", "--if-empty", str(later))
    assert second.exit_code == 0
    assert "already holds 2 images; nothing ingested" in second.stdout
    assert sorted(_state(migrated)["rows"]) == sorted(p.name for p in coco_dev_images[:2])


def test_similar_prints_text_and_json_pages(migrated, coco_dev_images) -> None:
    photos = coco_dev_images[:5]
    assert _invoke(migrated, "ingest", "--quiet", *map(str, photos)).exit_code == 0
    query = photos[0].name

    as_json = _invoke(migrated, "similar", query, "--json", "--per-page", "3")
    assert as_json.exit_code == 0
    page = json.loads(as_json.stdout)
    assert (page["query"], page["detector"], page["page"], page["per_page"], page["total"]) == (query, DEFAULT, 1, 3, 4)
    assert len(page["results"]) == 3
    distances = [r["distance"] for r in page["results"]]
    assert distances == sorted(distances)
    for r in page["results"]:
        assert set(r["shared_classes"]) == set(r["classes"]) & set(page["query_classes"])

    second = json.loads(_invoke(migrated, "similar", query, "--json", "--per-page", "3", "--page", "2").stdout)
    names = [r["name"] for r in page["results"] + second["results"]]
    assert sorted(names) == sorted(p.name for p in photos[1:])

    as_text = _invoke(migrated, "similar", query, "--per-page", "3")
    assert as_text.exit_code == 0
    assert f"Similar to {query}" in as_text.stdout and "page 1 of 2, 4 images ranked" in as_text.stdout
    for rank, r in enumerate(page["results"], start=1):
        assert f"{rank:>4}. {r['name']}" in as_text.stdout

    unknown = _invoke(migrated, "similar", "nope.jpg")
    assert unknown.exit_code == 1 and "no image named 'nope.jpg'" in unknown.stderr


def test_delete_removes_an_image_for_good(migrated, coco_dev_images) -> None:
    photos = coco_dev_images[:3]
    assert _invoke(migrated, "ingest", "--quiet", *map(str, photos)).exit_code == 0
    victim = photos[1].name
    sha = _state(migrated)["rows"][victim]

    deleted = _invoke(migrated, "delete", victim)
    assert deleted.exit_code == 0 and f"Deleted {victim}." in deleted.stdout
    state = _state(migrated)
    assert victim not in state["rows"] and sha not in {f.sha256 for f in state["files"]}
    others = json.loads(_invoke(migrated, "similar", photos[0].name, "--json").stdout)
    assert [r["name"] for r in others["results"]] == [photos[2].name]

    again = _invoke(migrated, "delete", victim)
    assert again.exit_code == 1 and "no image named" in again.stderr


def test_db_upgrade_creates_the_schema_once(env: dict[str, str]) -> None:
    before = _invoke(env, "db", "current")
    assert "current: none" in before.stdout
    first = _invoke(env, "db", "upgrade")
    head = head_revision()
    assert first.exit_code == 0 and f"from an empty database to revision {head}" in first.stdout
    second = _invoke(env, "db", "upgrade")
    assert f"up to date (revision {head})" in second.stdout
    assert f"current: {head}" in _invoke(env, "db", "current").stdout


def test_commands_explain_an_unusable_database(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "mysql://nobody@localhost/db", "DATA_DIR": str(tmp_path)}
    result = _invoke(env, "similar", "x.jpg")
    assert result.exit_code == 1 and "unsupported database" in result.stderr


def test_ingest_without_detector_weights_fails_clearly_and_stores_nothing(migrated, coco_dev_images, tmp_path: Path) -> None:
    no_weights = {**migrated, "WEIGHTS_DIR": str(tmp_path / "empty-weights")}
    result = _invoke(no_weights, "ingest", str(coco_dev_images[0]))
    assert result.exit_code == 1 and "recommender fetch-weights" in result.stderr
    state = _state(no_weights)
    assert state["rows"] == {} and state["files"] == []


def test_reindex_reports_what_it_computed_and_what_the_index_serves(migrated, coco_dev_images, tmp_path: Path) -> None:
    assert _invoke(migrated, "ingest", "--quiet", *map(str, coco_dev_images[:2])).exit_code == 0
    result = _invoke(migrated, "reindex", "--quiet")
    assert result.exit_code == 0
    assert f"Computed 0 of 0 missing vector(s) for {DEFAULT}" in result.stdout
    activated = _invoke(migrated, "reindex", "--quiet", "--activate")
    assert f"The collection now uses {DEFAULT} (2 images indexed)." in activated.stdout
    # Switching to a detector whose weights are absent is refused and changes nothing.
    no_weights = {**migrated, "WEIGHTS_DIR": str(tmp_path / "empty-weights")}
    refused = _invoke(no_weights, "reindex", "--detector", "maskrcnn", "--activate")
    assert refused.exit_code == 1 and "mask_rcnn_coco.h5" in refused.stderr
    assert json.loads(_invoke(migrated, "similar", "--json", coco_dev_images[0].name).stdout)["detector"] == DEFAULT


def test_pruning_the_change_feed_keeps_every_answer_right(migrated, coco_dev_images) -> None:
    """After `db prune-feed`, an index snapshot older than the pruned rows is rebuilt, not
    replayed with a gap; later changes are numbered on from the kept newest row."""
    photos = coco_dev_images[:7]
    _invoke(migrated, "ingest", "--quiet", *map(str, photos[:3]))
    query = photos[0].name
    assert json.loads(_invoke(migrated, "similar", query, "--json").stdout)["total"] == 2  # snapshot saved here

    _invoke(migrated, "ingest", "--quiet", *map(str, photos[3:6]))
    _invoke(migrated, "delete", photos[1].name)
    pruned = _invoke(migrated, "db", "prune-feed", "--keep-days", "0")
    assert pruned.exit_code == 0, pruned.output
    assert pruned.stdout.startswith("Removed 7 changes")  # 1 activation + 6 vectors + 1 delete, minus the newest

    page = json.loads(_invoke(migrated, "similar", query, "--json").stdout)
    assert page["total"] == 4
    assert {r["name"] for r in page["results"]} == {p.name for p in photos[2:6]}

    _invoke(migrated, "ingest", "--quiet", str(photos[6]))
    page = json.loads(_invoke(migrated, "similar", query, "--json").stdout)
    assert page["total"] == 5 and photos[6].name in {r["name"] for r in page["results"]}
    assert _invoke(migrated, "db", "prune-feed").stdout.startswith("Removed 0 changes older than 7 days")
