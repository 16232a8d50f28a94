"""The index kinds a setting can name, and the one way to build any of them."""

from __future__ import annotations

from .balltree import BallTreeSearch
from .core import Index
from .ivf import IVFSearch
from .quantized import QuantizedScan


class ExactIndex(Index):
    """Default: uint8 scan with an error bound, then exact re-scoring (``threads`` splits it)."""

    kind = "exact"
    engine_class = QuantizedScan


class BallTreeIndex(Index):
    """The design's scikit-learn BallTree; same pages as the default."""

    kind = "balltree"
    engine_class = BallTreeSearch


class IVFIndex(Index):
    """Opt-in, APPROXIMATE: faiss IVF with 8-bit codes, candidates re-scored exactly (see ivf.py)."""

    kind = "ivf"
    engine_class = IVFSearch


KINDS: dict[str, type[Index]] = {cls.kind: cls for cls in (ExactIndex, BallTreeIndex, IVFIndex)}
EXACT_KINDS = ("exact", "balltree")
DEFAULT_KIND = "exact"


def index_class(kind: str) -> type[Index]:
    try:
        return KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown index kind {kind!r}: choose one of {', '.join(KINDS)}") from None


def build_index(ids, points, labels=None, kind: str = DEFAULT_KIND, **options) -> Index:
    """An index of the given kind (``exact`` default, ``balltree``) over the given points.

    Options (all optional, kept in snapshots): ``compact_min`` (2048) and ``compact_fraction``
    (0.01): ``needs_compaction`` once delta + tombstones exceed max(min, fraction * size);
    exact: ``threads`` (default 1) and ``min_blocks_per_thread`` (512
    blocks of 256 rows) decide how a scan is split; balltree: ``leaf_size`` (40);
    ivf: ``nlist`` (min(4096, n // 256)) and ``nprobe`` (64).
    """
    return index_class(kind).build(ids, points, labels, **options)


def empty_index(kind: str = DEFAULT_KIND, **options) -> Index:
    return build_index([], None, None, kind, **options)


def warm_up() -> None:
    """Compile (or load from numba's cache) the scan for in-memory and memory-mapped arrays.

    The first compilation takes about 5 s, later starts about 0.2 s (cached); call this at
    start-up so no request pays for it.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    for readonly in (False, True):
        index = build_index(np.arange(4), rng.random((4, 81)))
        if readonly:
            for array in (index._engine.blocks, index._engine.norms, index._engine.tails, index._points, index._labels):
                array.setflags(write=False)
        index.query(rng.random(81), require=[1], max_distance=1.0)
        index.query(rng.random(81))
