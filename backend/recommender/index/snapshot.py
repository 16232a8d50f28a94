"""The index on disk: arrays as .npy plus a JSON manifest, replaced atomically, mapped read-only.

Layout of a snapshot directory (one per detector, e.g. ``DATA_DIR/index/yolov5s``)::

    current -> snap-<unique>       a symlink, swapped with rename(2): atomic
    snap-<unique>/manifest.json    kind, options, caller's meta, per file: dtype, shape, size, crc32
    snap-<unique>/<array>.npy      ids, points, labels, sorted ids, order, the engine's arrays
    .lock                          serialises the swap and the clean-up between processes

A writer fills a private temporary directory (fsync of every file and of the directory), then,
holding an exclusive ``flock`` on ``.lock``, renames it to ``snap-*``, points ``current`` at
it and removes the snapshots no longer current. Concurrent writers (several processes) never
see each other's half-written files; the last one to swap wins, or, with ``order_key``, the
one whose ``meta[order_key]`` is larger (the change-feed position). Readers that mapped an
older snapshot keep valid mappings: removing a mapped file does not unmap it.

``load_snapshot`` checks the manifest, every file's size, dtype and shape and (by default) its
crc32, and raises ``SnapshotError`` for anything missing, truncated or corrupt: the caller
rebuilds from the database, which is always the truth.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
import zlib
from pathlib import Path

import numpy as np

from .core import Index
from .kinds import index_class

# 2: the exact engine's codes are of rotated points (quantized.py); a format-1 snapshot is rebuilt.
FORMAT = 2
_STALE_TMP_SECONDS = 24 * 3600
_CRC_CHUNK = 64 << 20


class SnapshotError(Exception):
    """A snapshot is missing, truncated, corrupt or of another format."""


def _crc32(array: np.ndarray) -> int:
    flat = array.reshape(-1).view(np.uint8) if array.size else np.empty(0, np.uint8)
    crc = 0
    for start in range(0, flat.shape[0], _CRC_CHUNK):
        crc = zlib.crc32(memoryview(flat[start : start + _CRC_CHUNK]), crc)
    return crc


def _write_array(path: Path, array: np.ndarray) -> dict:
    array = np.ascontiguousarray(array)
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    return {"dtype": array.dtype.str, "shape": list(array.shape), "bytes": path.stat().st_size, "crc32": _crc32(array)}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_manifest(snap: Path) -> dict:
    try:
        manifest = json.loads((snap / "manifest.json").read_text())
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot manifest in {snap}") from None
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"unreadable snapshot manifest in {snap}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SnapshotError(f"snapshot in {snap} has format {manifest.get('format')!r}, expected {FORMAT}")
    return manifest


def save_snapshot(index: Index, directory: str | Path, meta: dict, order_key: str | None = None,
                  extra: dict[str, np.ndarray] | None = None) -> bool:
    """Write ``index`` (compacted first if it has pending changes) as the current snapshot.

    ``meta`` must be JSON-serialisable; ``extra`` arrays of the caller's are kept beside the
    index and come back from ``load_snapshot`` in ``meta["extra"]``. Returns False if
    ``order_key`` is given and the current snapshot's ``meta[order_key]`` is larger (a newer
    snapshot is kept).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    index = index.compacted()
    tmp = directory / f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        arrays = {
            "ids": index._ids,
            "points": index._points,
            "labels": index._labels,
            "sorted_ids": index._sorted_ids,
            "order": index._order,
        }
        arrays.update({f"engine_{k}": v for k, v in index._engine.arrays().items()})
        arrays.update({f"extra_{k}": v for k, v in (extra or {}).items()})
        files = {name: _write_array(tmp / f"{name}.npy", a) for name, a in arrays.items()}
        manifest = {
            "format": FORMAT,
            "kind": index.kind,
            "options": index.options,
            "size": len(index),
            "created": time.time(),
            "meta": meta,
            "files": files,
        }
        with open(tmp / "manifest.json", "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        return _publish(directory, tmp, meta, order_key)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _publish(directory: Path, tmp: Path, meta: dict, order_key: str | None) -> bool:
    with open(directory / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        current = directory / "current"
        if order_key is not None and current.exists():
            try:
                old = _read_manifest(current.resolve())["meta"].get(order_key)
            except SnapshotError:
                old = None
            if old is not None and old > meta[order_key]:
                return False
        final = directory / f"snap-{uuid.uuid4().hex}"
        tmp.rename(final)
        link = directory / f".current-{uuid.uuid4().hex}"
        link.symlink_to(final.name)
        link.replace(current)  # rename(2) over the old symlink: readers see old or new
        _fsync_dir(directory)
        for entry in directory.iterdir():
            stale_tmp = entry.name.startswith(".tmp-") and time.time() - entry.stat().st_mtime > _STALE_TMP_SECONDS
            if (entry.name.startswith("snap-") and entry != final) or stale_tmp:
                shutil.rmtree(entry, ignore_errors=True)
    return True


def load_snapshot(directory: str | Path, mmap: bool = True, verify: bool = True) -> tuple[Index, dict]:
    """(index, meta) of the current snapshot in ``directory``; big arrays mapped read-only.

    ``verify`` checks every file's crc32 (reads each page once; about 0.2 s per 400 MB).
    """
    directory = Path(directory)
    try:
        snap = (directory / "current").resolve(strict=True)
    except (FileNotFoundError, RuntimeError, OSError):
        raise SnapshotError(f"no index snapshot in {directory}") from None
    manifest = _read_manifest(snap)
    arrays = {}
    for name, info in manifest["files"].items():
        arrays[name] = _load_array(snap / f"{name}.npy", info, mmap, verify)
    try:
        cls = index_class(manifest["kind"])
        engine = {k.removeprefix("engine_"): v for k, v in arrays.items() if k.startswith("engine_")}
        index = cls._from_base(
            arrays["ids"],
            arrays["points"],
            arrays["labels"],
            engine,
            manifest["options"],
            sorted_ids=arrays["sorted_ids"],
            order=arrays["order"],
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SnapshotError(f"snapshot in {snap} is inconsistent: {exc!r}") from None
    if len(index) != manifest["size"]:
        raise SnapshotError(f"snapshot in {snap} holds {len(index)} images, its manifest says {manifest['size']}")
    extra = {k.removeprefix("extra_"): v for k, v in arrays.items() if k.startswith("extra_")}
    return index, ({**manifest["meta"], "extra": extra} if extra else manifest["meta"])


def _load_array(path: Path, info: dict, mmap: bool, verify: bool) -> np.ndarray:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise SnapshotError(f"snapshot file missing: {path}") from None
    if size != info["bytes"]:
        raise SnapshotError(f"snapshot file {path} has {size} bytes, expected {info['bytes']} (truncated?)")
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SnapshotError(f"snapshot file {path} is unreadable: {exc}") from None
    if array.dtype.str != info["dtype"] or list(array.shape) != info["shape"]:
        raise SnapshotError(f"snapshot file {path} holds {array.dtype.str}{list(array.shape)}, expected {info}")
    if verify and _crc32(array) != info["crc32"]:
        raise SnapshotError(f"snapshot file {path} is corrupt (checksum mismatch)")
    return array
