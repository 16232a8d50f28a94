"""A full disk is "507 storage is full", never a 500, leaves nothing half-written, and passes when space returns.

The test mounts small tmpfs filesystems it controls (so it needs root, which CI has; elsewhere
it is skipped and says why): once under the media store, once under the SQLite database, and
fills them up with a filler file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import test_api
from recommender.detection import Detector
from test_api import Api, assert_error, make_api, upload

yolo = test_api.yolo  # the real detector, loaded once (a fixture of test_api.py)


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root); the full-disk answers are not tested here")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the full-disk answers are not tested")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    """Write zeros into ``folder`` until its filesystem is full; the file to delete to free it again."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as out:  # unbuffered: nothing left to write at close
        try:
            while True:
                out.write(b"\0" * 65536)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() and p.parent.name != "locks" and p.name != "filler"}


def assert_storage_full(response) -> None:
    error = assert_error(response, 507, "storage_full")
    assert "storage is full" in error["message"]


def test_a_full_media_disk_refuses_uploads_and_new_thumbnails_with_507(tmp_path: Path, yolo: Detector,
                                                                        coco_dev_images: list[Path]) -> None:
    with small_filesystem(tmp_path / "data" / "media", "6m") as media:
        api: Api = make_api(f"sqlite:///{tmp_path / 'db.sqlite3'}", tmp_path / "data", yolo, coco_dev_images[:2])
        try:
            uncached = api.gallery[0]
            sha = api.service.queries.image(uncached).sha256
            (media / "thumbs" / sha[:2] / sha[2:4] / f"{sha}.jpg").unlink(missing_ok=True)  # its thumbnail is not cached
            before_files, before_count = files_under(media), api.service.queries.count()
            filler = fill(media)

            new = coco_dev_images[3]
            assert_storage_full(upload(api.client, new.read_bytes(), new.name))
            assert_storage_full(api.client.get(f"/images/{uncached}/thumb"))
            assert api.client.get(f"/images/{api.gallery[1]}/thumb").status_code == 200  # reading still works
            # Nothing half-written: no new row, no file, no temporary file left behind.
            assert api.service.queries.count() == before_count
            assert files_under(media) == before_files

            filler.unlink()
            assert upload(api.client, new.read_bytes(), new.name).status_code == 201
            assert api.client.get(f"/images/{uncached}/thumb").status_code == 200
        finally:
            api.service.close()


def test_a_full_database_disk_refuses_uploads_with_507_and_keeps_no_file(tmp_path: Path, yolo: Detector,
                                                                          coco_dev_images: list[Path]) -> None:
    with small_filesystem(tmp_path / "db-fs", "2m") as db_fs:
        api: Api = make_api(f"sqlite:///{db_fs / 'db.sqlite3'}", tmp_path / "data", yolo, coco_dev_images[:2])
        try:
            media = api.settings.media_dir
            before_files, before_count = files_under(media), api.service.queries.count()
            filler = fill(db_fs)

            new = coco_dev_images[3]
            assert_storage_full(upload(api.client, new.read_bytes(), new.name))
            assert api.service.queries.count() == before_count
            assert files_under(media) == before_files  # the original and thumbnail written first are removed again
            assert api.client.get(f"/get_similar/{api.gallery[0]}").status_code == 200

            filler.unlink()
            assert upload(api.client, new.read_bytes(), new.name).status_code == 201
            assert api.service.queries.count() == before_count + 1
        finally:
            api.service.close()
