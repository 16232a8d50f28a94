"""INTERIM: the immutable-index interface over the old NeighborIndex, until the index package lands."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..index import NeighborIndex, QueryResult

INDEX_KINDS = ("exact", "balltree")


class SnapshotError(RuntimeError):
    pass


class _Immutable:
    def __init__(self, ids: np.ndarray, points: np.ndarray, labels: np.ndarray, kind: str) -> None:
        self.kind = kind
        self._ids = np.asarray(ids, dtype=np.int64)
        self._points = np.asarray(points, dtype=np.float64).reshape(-1, 81)
        self._labels = np.asarray(labels, dtype=np.uint64).reshape(-1, 2)
        self._index = NeighborIndex.build(self._ids, self._points) if len(self._ids) else NeighborIndex()
        self._set = set(self._ids.tolist())

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._set

    def with_changes(self, upsert_ids, upsert_points, upsert_labels, remove_ids) -> _Immutable:
        drop = set(np.asarray(remove_ids, dtype=np.int64).tolist()) | set(np.asarray(upsert_ids, dtype=np.int64).tolist())
        keep = np.array([i not in drop for i in self._ids.tolist()], dtype=bool)
        ids = np.concatenate([self._ids[keep], np.asarray(upsert_ids, dtype=np.int64)])
        points = np.concatenate([self._points[keep], np.asarray(upsert_points, dtype=np.float64).reshape(-1, 81)])
        labels = np.concatenate([self._labels[keep], np.asarray(upsert_labels, dtype=np.uint64).reshape(-1, 2)])
        return _Immutable(ids, points, labels, self.kind)

    def needs_compaction(self) -> bool:
        return False

    def compacted(self) -> _Immutable:
        return self

    def query(self, q, page=1, per_page=30, *, exclude_id=None, require=None, forbid=None, max_distance=None) -> QueryResult:
        return self._index.query(q, page=page, per_page=per_page, exclude_id=exclude_id)


def build_index(kind: str, ids, points, labels) -> _Immutable:
    return _Immutable(ids, points, labels, kind)


def save_snapshot(index, directory: Path, meta: dict) -> None:
    return None


def load_snapshot(directory: Path, mmap: bool = True):
    raise SnapshotError(f"no snapshot in {directory}")
