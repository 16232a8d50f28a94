"""Opt-in APPROXIMATE engine (``kind="ivf"``): faiss IVF + 8-bit scalar quantisation, exact re-scoring.

Measured at 10M spread YOLOv5s-like vectors (bench/query.py --ten-million): with 4096 lists
and nprobe 64 the page-1 recall@30 against the exact default is 0.998 on average (worst query
0.90) at about a third of the exact scan's latency. It is for collections where the exact
scan is too slow (several million images and more); below that the exact default is fast
enough and exact.

What is approximate and what is not:
* the candidates come from the ``nprobe`` nearest lists, so a true neighbour in another list
  can be missed; every returned candidate is re-scored with ``distance_keys``, so the page's
  order, ties and distances follow the contract among the candidates;
* ``total`` is exact for class filters and the excluded image (counted from the labels), but
  with ``max_distance`` it counts only what the probed lists hold;
* class filters and tombstones are applied inside faiss's scan (an ``IDSelector``), so a
  filtered page is as full as an unfiltered one.

faiss keeps its own copy of the codes (81 bytes + an 8-byte id per image); a snapshot stores
the serialised faiss index, which is read into memory (not mapped) when loaded.
"""

from __future__ import annotations

import math

import numpy as np

from .contract import DISTANCE_GRID, distance_keys, label_filter

_TRAIN_ROWS = 300_000
# The 8-bit codes' distance error is far below this margin on ranking-space points (norms <= ~1).
_RANGE_MARGIN = 0.05


class IVFSearch:
    kind = "ivf"

    def __init__(self, points, labels, arrays, nlist: int | None = None, nprobe: int = 64, **_) -> None:
        import faiss

        self.points, self.labels = points, labels
        self.nprobe = int(nprobe)
        self.index = faiss.deserialize_index(np.asarray(arrays["faiss"])) if arrays else None

    @classmethod
    def build(cls, points, labels, nlist: int | None = None, nprobe: int = 64, **options) -> IVFSearch:
        import faiss

        n, dim = points.shape
        engine = cls(points, labels, None, nlist=nlist, nprobe=nprobe)
        if n == 0:
            return engine
        nlist = int(nlist or max(1, min(4096, n // 256)))
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit)
        rng = np.random.default_rng(0)
        sample = points if n <= _TRAIN_ROWS else points[np.sort(rng.choice(n, _TRAIN_ROWS, replace=False))]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
        for start in range(0, n, 1_000_000):
            index.add(np.ascontiguousarray(points[start : start + 1_000_000], dtype=np.float32))
        engine.index = index
        return engine

    def arrays(self) -> dict[str, np.ndarray]:
        import faiss

        return {} if self.index is None else {"faiss": faiss.serialize_index(self.index)}

    def _params(self, dead, exclude_row, require, forbid):
        """faiss search parameters whose selector drops tombstones, the query and filtered rows."""
        import faiss

        params = faiss.SearchParametersIVF()
        params.nprobe = self.nprobe
        keep_alive = []  # faiss selectors hold raw pointers: keep their Python objects alive
        selectors = []
        gone = dead if exclude_row < 0 else np.union1d(dead, [exclude_row])
        if gone.shape[0]:
            batch = faiss.IDSelectorBatch(gone.astype(np.int64))
            keep_alive.append(batch)
            selectors.append(faiss.IDSelectorNot(batch))
        passing = None
        if require.any() or forbid.any():
            passing = label_filter(self.labels, require, forbid)
            bits = np.packbits(passing, bitorder="little")
            keep_alive.append(bits)
            selectors.append(faiss.IDSelectorBitmap(passing.shape[0], faiss.swig_ptr(bits)))
        if len(selectors) == 2:
            params.sel = faiss.IDSelectorAnd(selectors[0], selectors[1])
        elif selectors:
            params.sel = selectors[0]
        keep_alive.extend(selectors)
        return params, keep_alive, passing

    def search(self, q, k, dead, exclude_row, require, forbid, max_key):
        n = self.points.shape[0]
        if n == 0:
            return np.empty(0, np.int64), np.empty(0), 0
        params, _alive, passing = self._params(dead, exclude_row, require, forbid)
        q32 = q.astype(np.float32)[None, :]
        if max_key != math.inf:
            if max_key < 0:
                return np.empty(0, np.int64), np.empty(0), 0
            radius = max_key * DISTANCE_GRID + _RANGE_MARGIN
            _, _, rows = self.index.range_search(q32, float(radius), params=params)
            keys = distance_keys(self.points[rows], q)
            within = keys <= max_key
            rows, keys = rows[within], keys[within]
            count = int(rows.shape[0])
        else:
            count = n - dead.shape[0] - int(exclude_row >= 0)
            if passing is not None:
                passing[dead] = False
                if exclude_row >= 0:
                    passing[exclude_row] = False
                count = int(passing.sum())
            if k == 0:
                return np.empty(0, np.int64), np.empty(0), count
            _, rows = self.index.search(q32, 4 * k, params=params)
            rows = rows[0][rows[0] >= 0]
            keys = distance_keys(self.points[rows], q)
        if 0 < k < rows.shape[0]:
            near = keys <= np.partition(keys, k - 1)[k - 1]
            rows, keys = rows[near], keys[near]
        return rows, keys, count
