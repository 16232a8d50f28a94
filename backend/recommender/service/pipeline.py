"""Batch work run ahead in threads, results handed back in input order; and finding photo files."""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..formats import FILE_SUFFIXES

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def ordered_map(
    items: Sequence[T],
    work: Callable[[T], R],
    *,
    threads: int,
    expected: tuple[type[BaseException], ...],
) -> Iterator[tuple[T, R | BaseException]]:
    """Yield ``(item, work(item))`` in input order, with up to ``threads`` items in progress.

    Decoding and detection release the GIL, so threads overlap them; the caller consumes in
    its own thread (database commits stay there). Exceptions of the ``expected`` kinds are
    yielded in place of a result; others propagate. When the consumer stops (Ctrl-C, an
    error), queued work is cancelled and running work finishes before this returns.
    """
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="batch")
    window: deque[tuple[T, Future[R]]] = deque()
    pending = iter(items)
    try:
        for item in pending:
            window.append((item, pool.submit(work, item)))
            if len(window) >= 2 * threads:
                break
        while window:
            item, future = window.popleft()
            following = next(pending, _END)
            if following is not _END:
                window.append((following, pool.submit(work, following)))
            try:
                outcome: R | BaseException = future.result()
            except expected as exc:
                outcome = exc
            yield item, outcome
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def find_image_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """Files named directly plus image files (by suffix) found recursively in folders.

    Returns (files in a stable order without repeats, paths that do not exist). Hidden files
    and folders (starting with '.') inside folders are skipped.
    """
    files: list[Path] = []
    missing: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                found.extend(
                    Path(dirpath) / f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in FILE_SUFFIXES
                )
            files.extend(sorted(found))
        elif path.exists():
            files.append(path)
        else:
            missing.append(path)
    return list(dict.fromkeys(files)), missing
