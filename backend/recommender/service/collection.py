"""The live collection: an immutable index of the active detector's vectors that follows the change feed.

Every process that answers queries holds one. Readers take the current ``Snapshot`` and query
it without any lock; a refresh builds the next snapshot from the feed and swaps it in with one
assignment, so a query in flight keeps the one it started with.

* **Start**: map the persisted index snapshot of the active detector (written atomically with
  the feed position it covers) and replay the feed from there; without a usable snapshot, read
  every vector from the database, build, and save a snapshot for the next start. Processes
  starting together (the web workers) build one at a time (``one_builder``): the first
  builds and saves, the others wait and map what it saved.
* **Follow**: ``follow()`` polls the feed head (one primary-key lookup) every ``interval``
  seconds; a process's own writes call ``refresh_if_loaded`` so they show at once.
* **Apply**: the feed says *which* images changed; their current vectors and classes are read
  from the database (the truth), so replaying a change twice, or out of date, is harmless.
* **Far behind** (more than ``rebuild_after`` changes, or the feed was pruned past our
  position) or a **detector switch** (the collection now serves another detector than this
  snapshot's): start over as at start-up.
"""

from __future__ import annotations

import fcntl
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..classes import NUM_CLASSES
from ..classtable import ClassTable, class_bits
from ..index import Index, SnapshotError, build_index, load_snapshot, save_snapshot, warm_up
from ..storage import Repository
from ..storage.feed import ACTIVATE, DELETE, Change
from ..vectors import DEFAULT_RANKING, RANKINGS, Ranking

log = logging.getLogger(__name__)

FEED_BATCH = 2000
_MAX_RELOADS = 3
# How long a starting process waits for another one's build before building its own.
BUILD_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class Snapshot:
    detector: str
    index: Index
    position: int  # every change up to this feed position is applied
    ranking: Ranking
    classes: ClassTable  # which images show which class (search by object names)


_warmed = threading.Event()


def _warm_up_once() -> None:
    # The scan is compiled code: compile it (or load it from numba's cache) before any query.
    if not _warmed.is_set():
        started = time.perf_counter()
        warm_up()
        _warmed.set()
        # Logged apart: on a first start the compile (seconds) would read as index build time.
        log.info("index scan compiled or read from numba's cache in %.1f s", time.perf_counter() - started)


def _transformed(ranking: Ranking, raw: np.ndarray, chunk: int = 32_768) -> np.ndarray:
    """float32 index points of every raw vector, a chunk at a time: the transform's float64
    temporaries then stay in cache instead of filling memory (1M photos: 6.6 -> 2.2 s)."""
    points = np.empty(raw.shape, dtype=np.float32)
    for start in range(0, raw.shape[0], chunk):
        points[start : start + chunk] = ranking.index_transform(raw[start : start + chunk])
    return points


def build_lock(folder: Path) -> Path:
    """The lock file ``one_builder`` takes for the snapshot folder ``folder``."""
    return folder.with_name(f"{folder.name}.build-lock")


@contextmanager
def one_builder(lock_file: Path | None, wait: float = BUILD_WAIT_SECONDS) -> Iterator[bool]:
    """Held by one process at a time (an ``flock``); yields whether another one held it first.

    Without it every web worker of a cold start reads all vectors and builds the same index at
    once, on the same cores. A lock that cannot be made (read-only disk) or is held past
    ``wait`` (a stuck process) is skipped: building twice is slower, never wrong.
    """
    if lock_file is None:
        yield False
        return
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock_file, "a+")
    except OSError:
        yield False
        return
    waited, deadline = False, time.monotonic() + wait
    try:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    log.warning("another process has been building the index for %.0f s; building it here too", wait)
                    break
                waited = True
                time.sleep(0.2)
        yield waited
    finally:
        handle.close()  # releases the lock


class LiveCollection:
    def __init__(
        self,
        repository: Repository,
        *,
        index_kind: str,
        snapshot_dir: Path | None,
        label_threshold: float,
        ranking: Callable[[str], Ranking] = lambda _detector: RANKINGS[DEFAULT_RANKING],
        rebuild_after: int = 50_000,
    ) -> None:
        self._repository = repository
        self._kind = index_kind
        self._snapshot_dir = snapshot_dir
        self._threshold = label_threshold
        self._ranking = ranking
        self._rebuild_after = rebuild_after
        self._collection_id = repository.collection_id()
        self._current: Snapshot | None = None
        self._saved_position = -1
        self._lock = threading.Lock()  # one refresher at a time; readers never take it
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- readers ----------------------------------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._current is not None

    def current(self) -> Snapshot:
        """The newest snapshot; the first call loads it (and so may take a while)."""
        snapshot = self._current
        return snapshot if snapshot is not None else self.refresh()

    def behind(self) -> int:
        """Changes committed to the feed that this process has not applied yet."""
        snapshot = self._current
        return self._repository.feed_head() - (snapshot.position if snapshot else 0)

    # -- refreshing -------------------------------------------------------------------------
    def refresh(self) -> Snapshot:
        """Apply everything the feed holds now; load first if nothing is loaded."""
        with self._lock:
            if self._current is None:
                self._current = self._load()
            self._catch_up()
            return self._current

    def refresh_if_loaded(self) -> None:
        if self._current is not None:
            self.refresh()

    def follow(self, interval: float = 0.5) -> None:
        """Keep up with the feed from a background thread until ``close``."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._follow, args=(interval,), name="feed-follower", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _follow(self, interval: float) -> None:
        failing = False
        while not self._stop.wait(interval):
            try:
                current = self._current
                if current is None or self._repository.feed_head() > current.position:
                    self.refresh()
                self._maybe_compact()
                self._maybe_save()
                if failing:
                    log.info("following the change feed again")
                failing = False
            except Exception:  # the database may be down: keep serving the last snapshot
                if not failing:
                    log.exception("cannot follow the change feed; serving the last snapshot meanwhile")
                failing = True

    def _maybe_compact(self) -> None:
        """Fold the changes into a new base, off the request path (O(n): seconds at a million)."""
        snapshot = self._current
        if snapshot is None or not snapshot.index.needs_compaction():
            return
        compacted = Snapshot(snapshot.detector, snapshot.index.compacted(), snapshot.position, snapshot.ranking,
                             snapshot.classes)
        with self._lock:
            if self._current is None or self._current.detector != snapshot.detector:
                return  # reloaded meanwhile: that one is compact already
            # Changes applied while we compacted are replayed onto the compacted base from the feed.
            target = self._current.position
            self._current = compacted
            while self._current.position < target:
                changes, _oldest = self._repository.feed_since(self._current.position, FEED_BATCH)
                changes = [c for c in changes if c.seq <= target]
                if not changes:
                    break
                self._current = self._apply(self._current, changes)

    def _catch_up(self) -> None:
        reloads = 0
        while True:
            snapshot = self._current
            assert snapshot is not None
            changes, oldest = self._repository.feed_since(snapshot.position, FEED_BATCH)
            if not changes:
                return
            pruned = oldest > snapshot.position + 1
            # Activations in between do not touch this detector's vectors (its changes are in the
            # feed as its own), so only a collection that now serves another detector reloads.
            switched = any(c.kind == ACTIVATE for c in changes) and self._repository.active_detector() != snapshot.detector
            if pruned or switched or self._repository.feed_head() - snapshot.position > self._rebuild_after:
                if reloads == _MAX_RELOADS:  # the collection keeps changing under us: try again next poll
                    log.warning("the index was reloaded %d times in a row; trying again later", reloads)
                    return
                self._current = self._load()
                reloads += 1
                continue
            self._current = self._apply(snapshot, changes)
            if len(changes) < FEED_BATCH:
                return

    def _apply(self, snapshot: Snapshot, changes: list[Change]) -> Snapshot:
        touched = sorted(
            {c.image_id for c in changes if c.image_id is not None and (c.kind == DELETE or c.detector == snapshot.detector)}
        )
        index, classes = snapshot.index, snapshot.classes
        if touched:
            vectors = self._repository.vectors_of(touched, snapshot.detector)
            ids = np.array([i for i in touched if i in vectors], dtype=np.int64)
            raw = np.array([vectors[i] for i in ids.tolist()], dtype=np.float32).reshape(-1, NUM_CLASSES)
            gone = np.array([i for i in touched if i not in vectors], dtype=np.int64)
            shown = self._repository.shown_classes(snapshot.detector, self._threshold, touched)
            classes = classes.with_changes(np.array(touched, dtype=np.int64), *shown)
            labels = class_bits(ids, shown[0], shown[1])
            index = index.with_changes(ids, snapshot.ranking.index_transform(raw), labels, gone)
        return Snapshot(snapshot.detector, index, changes[-1].seq, snapshot.ranking, classes)

    # -- loading and saving -----------------------------------------------------------------
    def _load(self) -> Snapshot:
        _warm_up_once()
        started = time.perf_counter()
        position = self._repository.feed_head()  # read before the data: replaying from here is safe
        detector = self._repository.active_detector()
        if detector is None:
            raise RuntimeError("the collection has no active detector (bootstrap records one)")
        ranking = self._ranking(detector)
        snapshot, how = self._load_saved(detector, ranking, position), "mapped from its snapshot"
        if snapshot is None:
            folder = self._folder(detector)
            with one_builder(None if folder is None else build_lock(folder)) as waited:
                if waited:  # another process built one meanwhile: map it
                    position = self._repository.feed_head()
                    snapshot = self._load_saved(detector, ranking, position)
                if snapshot is None:
                    snapshot, how = self._build(detector, ranking, position), "built from the database"
        log.info(
            "index of %s %s in %.1f s: %d images at feed position %d",
            detector, how, time.perf_counter() - started, len(snapshot.index), snapshot.position,
        )
        return snapshot

    def _build(self, detector: str, ranking: Ranking, position: int) -> Snapshot:
        """Every vector of ``detector`` read at feed ``position`` or later, indexed and saved."""
        classes = ClassTable.build(*self._repository.shown_classes(detector, self._threshold))
        ids, raw = self._repository.all_vectors(detector)
        index = build_index(ids, _transformed(ranking, raw), classes.labels(ids), kind=self._kind)
        snapshot = Snapshot(detector, index, position, ranking, classes)
        self._save(snapshot)
        return snapshot

    def _folder(self, detector: str) -> Path | None:
        return None if self._snapshot_dir is None else self._snapshot_dir / f"{detector}.{self._kind}"

    def _load_saved(self, detector: str, ranking: Ranking, head: int) -> Snapshot | None:
        folder = self._folder(detector)
        if folder is None:
            return None
        try:
            index, meta = load_snapshot(folder)
        except SnapshotError as exc:
            log.info("no usable index snapshot (%s); reading the vectors from the database", exc)
            return None
        position = int(meta.get("position", -1))
        # The database is the truth: a snapshot from another database, or "from the future"
        # (a restored backup), is ignored; an older one is brought up to date from the feed,
        # unless replaying would cost more than a rebuild or the feed no longer reaches back.
        if meta.get("collection") != self._collection_id or meta.get("detector") != detector or not 0 <= position <= head:
            log.info("index snapshot in %s does not match this database; rebuilding it", folder)
            return None
        if head - position > self._rebuild_after or self._repository.feed_since(position, 1)[1] > position + 1:
            log.info("index snapshot in %s is too far behind the change feed; rebuilding it", folder)
            return None
        try:
            classes = ClassTable.from_flat(*(meta["extra"][k] for k in ("class_bounds", "class_ids", "class_scores")))
        except KeyError:
            log.info("index snapshot in %s has no class table; rebuilding it", folder)
            return None
        self._saved_position = position
        return Snapshot(detector, index, position, ranking, classes)

    def _maybe_save(self) -> None:
        snapshot = self._current
        if snapshot is not None and snapshot.position - self._saved_position >= max(1000, len(snapshot.index) // 20):
            self._save(snapshot)

    def _save(self, snapshot: Snapshot) -> None:
        folder = self._folder(snapshot.detector)
        if folder is None:
            return
        try:
            meta = {"collection": self._collection_id, "detector": snapshot.detector, "position": snapshot.position}
            bounds, ids, scores = snapshot.classes.flat()
            extra = {"class_bounds": bounds, "class_ids": ids, "class_scores": scores}
            save_snapshot(snapshot.index, folder, meta, order_key="position", extra=extra)
            self._saved_position = snapshot.position
        except OSError as exc:  # a cache: a read-only or full disk costs start-up time, nothing else
            log.warning("could not save the index snapshot in %s: %s", folder, exc)
