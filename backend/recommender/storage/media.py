"""Content-addressed files on disk: originals byte for byte, and cached JPEG thumbnails.

Layout under the media directory::

    originals/ab/cd/<sha256>.<ext>     the uploaded bytes, unchanged
    thumbs/ab/cd/<sha256>.jpg          made at ingest (or, for older images, on first request)
    queued/ab/cd/<sha256>              empty mark: a queue task will ingest this original

Every write goes to a temporary file in the target directory, is fsynced, then renamed
over the final name, so a reader (or a process killed mid-write) never sees a partial file.
The database is the source of truth: a file whose hash has no row is an orphan, which
``find_orphans`` reports once it is old enough not to belong to an ingest still in flight.
An original staged for the queue has no row until a worker runs its task, which may be hours
later on a long queue: its mark spares it for ``QUEUED_GRACE_SECONDS`` instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..formats import image_format

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_TEMP_PREFIX = ".tmp-"
# Temporary names carry the writer's pid and host, so a leftover of a process that died on
# this host is recognised at once instead of after the grace period.
_HOST = re.sub(r"[^A-Za-z0-9.]", "", socket.gethostname()) or "host"
_TEMP_OWNER = re.compile(r"^\.tmp-(\d+)@([A-Za-z0-9.]+)-")
# How long a queued original is spared without a row: longer than any queue should take to
# drain, short enough that the originals of tasks lost with a wiped broker are cleaned in time.
QUEUED_GRACE_SECONDS = 7 * 24 * 3600.0


@dataclass(frozen=True)
class MediaFile:
    sha256: str
    path: Path
    kind: str  # "original", "thumb", "temp" (left behind by a killed write) or "queued" (a mark)
    mtime: float


class MediaStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.originals = self.root / "originals"
        self.thumbs = self.root / "thumbs"
        self.queued = self.root / "queued"
        self._making_lock = threading.Lock()
        self._making_locks: dict[str, tuple[threading.Lock, int]] = {}

    # -- paths ------------------------------------------------------------------------------
    def original_path(self, sha256: str, fmt: str) -> Path:
        return self._shard(self.originals, sha256) / f"{sha256}.{_extension(fmt)}"

    def thumbnail_path(self, sha256: str) -> Path:
        return self._shard(self.thumbs, sha256) / f"{sha256}.jpg"

    def queued_mark_path(self, sha256: str) -> Path:
        return self._shard(self.queued, sha256) / sha256

    @staticmethod
    def _shard(base: Path, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a lowercase hex SHA-256: {sha256!r}")
        return base / sha256[:2] / sha256[2:4]

    # -- writing ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, sha256: str) -> Iterator[None]:
        """Hold the lock of one content hash, across the processes of this machine.

        Writing a file and committing its row, or deleting a row and then its file, are two
        steps; without the lock an upload of the same bytes could commit its row between a
        delete's two steps and be left with no file. 256 lock files (by the hash's first byte)
        keep the folder small; two photos sharing one only wait for each other briefly.
        """
        self._shard(self.originals, sha256)  # validates the hash
        path = self.root / "locks" / f"{sha256[:2]}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def put_original(self, sha256: str, fmt: str, data: bytes) -> Path:
        """Store ``data`` (whose SHA-256 the caller computed) and return its path.

        Content addressing makes this idempotent: an existing file of the right size is kept.
        """
        path = self.original_path(sha256, fmt)
        if _has_size(path, len(data)):
            return path
        _atomic_write(path, data)
        return path

    def put_thumbnail(self, sha256: str, data: bytes) -> Path:
        path = self.thumbnail_path(sha256)
        _atomic_write(path, data)
        return path

    def thumbnail(self, sha256: str, make: Callable[[], bytes]) -> Path:
        """Path of the cached thumbnail, calling ``make`` to create it the first time.

        Requests for the same missing thumbnail wait for one ``make`` instead of each decoding
        the original.
        """
        path = self.thumbnail_path(sha256)
        if path.is_file():
            return path
        with self._making(sha256):
            if not path.is_file():
                _atomic_write(path, make())
        return path

    def mark_queued(self, sha256: str) -> None:
        """Record that a queue task will ingest this original: the orphan cleaner spares it meanwhile.

        Marking again (the photo enqueued once more) renews the mark.
        """
        path = self.queued_mark_path(sha256)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()

    def unmark_queued(self, sha256: str) -> None:
        """The task is done (stored, duplicate or failed for good): the original is on its own again."""
        self.queued_mark_path(sha256).unlink(missing_ok=True)

    def is_queued(self, sha256: str, *, since: float = 0.0) -> bool:
        """True when the original has a queue mark made (or renewed) after ``since`` (a time.time())."""
        try:
            return self.queued_mark_path(sha256).stat().st_mtime > since
        except FileNotFoundError:
            return False

    @contextlib.contextmanager
    def _making(self, sha256: str) -> Iterator[None]:
        with self._making_lock:
            lock, users = self._making_locks.get(sha256, (threading.Lock(), 0))
            self._making_locks[sha256] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._making_lock:
                lock, users = self._making_locks[sha256]
                if users == 1:
                    del self._making_locks[sha256]
                else:
                    self._making_locks[sha256] = (lock, users - 1)

    # -- deleting ---------------------------------------------------------------------------
    def delete(self, sha256: str, fmt: str | None = None) -> int:
        """Remove the original (any extension when ``fmt`` is None) and thumbnail; count removed."""
        targets = [self.thumbnail_path(sha256)]
        if fmt is not None:
            targets.append(self.original_path(sha256, fmt))
        else:
            targets.extend(self._shard(self.originals, sha256).glob(f"{sha256}.*"))
        removed = 0
        for path in targets:
            try:
                path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    # -- scanning ---------------------------------------------------------------------------
    def iter_files(self) -> Iterator[MediaFile]:
        """Every file under originals/ and thumbs/, including leftover temporary files."""
        for kind, base in (("original", self.originals), ("thumb", self.thumbs)):
            if not base.is_dir():
                continue
            for dirpath, _dirnames, filenames in os.walk(base):
                for filename in filenames:
                    path = Path(dirpath) / filename
                    try:
                        mtime = path.stat().st_mtime
                    except FileNotFoundError:  # removed while we walked
                        continue
                    if filename.startswith(_TEMP_PREFIX):
                        yield MediaFile("", path, "temp", mtime)
                        continue
                    sha = filename.split(".", 1)[0]
                    if _SHA256.match(sha):
                        yield MediaFile(sha, path, kind, mtime)

    def iter_queued_marks(self) -> Iterator[MediaFile]:
        """Every queue mark (kind "queued"), with the time it was made or last renewed."""
        if not self.queued.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(self.queued):
            for filename in filenames:
                path = Path(dirpath) / filename
                with contextlib.suppress(FileNotFoundError):  # unmarked while we walked
                    if _SHA256.match(filename):
                        yield MediaFile(filename, path, "queued", path.stat().st_mtime)

    def find_orphans(
        self,
        known: Callable[[Iterable[str]], set[str]],
        *,
        older_than: float = 0.0,
        queued_for: float = QUEUED_GRACE_SECONDS,
        batch: int = 1000,
    ) -> list[MediaFile]:
        """Files whose hash ``known`` does not confirm, modified more than ``older_than`` s ago.

        ``known(hashes)`` returns the subset that has a database row; asking in batches keeps
        memory flat for large collections. A file whose hash has a queue mark younger than
        ``queued_for`` seconds is spared (its task has not run yet); older marks are orphans.
        """
        now = time.time()
        cutoff, queued_cutoff = now - older_than, now - queued_for
        orphans: list[MediaFile] = [m for m in self.iter_queued_marks() if m.mtime <= queued_cutoff]
        pending: list[MediaFile] = []

        def flush() -> None:
            confirmed = known({f.sha256 for f in pending})
            orphans.extend(
                f for f in pending if f.sha256 not in confirmed and not self.is_queued(f.sha256, since=queued_cutoff)
            )
            pending.clear()

        for media_file in self.iter_files():
            if media_file.kind == "temp" and _writer_is_dead(media_file.path.name):
                orphans.append(media_file)
                continue
            if media_file.mtime > cutoff:
                continue
            if media_file.kind == "temp":
                orphans.append(media_file)
                continue
            pending.append(media_file)
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
        return orphans

    def remove_files(self, files: Iterable[MediaFile]) -> int:
        removed = 0
        for media_file in files:
            try:
                media_file.path.unlink()
                removed += 1
            except FileNotFoundError:
                pass
        return removed


def _extension(fmt: str) -> str:
    return image_format(fmt).extension


def _writer_is_dead(filename: str) -> bool:
    """True when a temporary file's writer was a process on this host that no longer runs."""
    match = _TEMP_OWNER.match(filename)
    if match is None or match.group(2) != _HOST:
        return False
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists but belongs to someone else
        return False
    return False


def _has_size(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size
    except FileNotFoundError:
        return False


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f"{_TEMP_PREFIX}{os.getpid()}@{_HOST}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp_name, 0o644)  # mkstemp creates 0600; the web server may run as another user
        os.replace(temp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp_name)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not possible on every platform, harmless to skip there.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
