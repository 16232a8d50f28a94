"""The change feed: a numbered list of the changes an index must follow.

A writer appends a row in the same transaction as its change. Sequence numbers are handed out
as ``max(seq) + 1`` under a lock that lasts until commit, so they grow in *commit* order: a
follower that has read everything up to ``seq`` can never later find a smaller one committed
behind its back (which a plain sequence or autoincrement allows on PostgreSQL, where a slow
transaction may commit after a faster one that drew a later number).

* PostgreSQL: ``LOCK TABLE changes IN EXCLUSIVE MODE`` blocks other writers of the feed until
  commit but never blocks readers.
* SQLite: a transaction's first write takes the database's single write lock until commit, so
  once a transaction has written anything, it is the only writer; ``lock`` has nothing to add.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, delete, func, insert, select

from .schema import changes as changes_t

VECTOR = "vector"  # a vector of (image_id, detector) was added or replaced
DELETE = "delete"  # image_id and everything of it is gone
ACTIVATE = "activate"  # the index serves ``detector`` from now on
KINDS = (VECTOR, DELETE, ACTIVATE)


@dataclass(frozen=True)
class Change:
    seq: int
    kind: str
    image_id: int | None
    detector: str | None


def lock(conn: Connection) -> None:
    """Become the only writer of the feed until this transaction ends (see the module docstring).

    On SQLite, call it after the transaction's first write.
    """
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("LOCK TABLE changes IN EXCLUSIVE MODE")


def append(conn: Connection, kind: str, image_id: int | None = None, detector: str | None = None) -> int:
    """Append one change (after ``lock``); returns its sequence number."""
    if kind not in KINDS:
        raise ValueError(f"unknown change kind {kind!r}")
    seq = head(conn) + 1
    conn.execute(
        insert(changes_t).values(
            seq=seq,
            kind=kind,
            image_id=None if image_id is None else int(image_id),
            detector=detector,
            created_at=datetime.now(timezone.utc),
        )
    )
    return seq


def head(conn: Connection) -> int:
    """The newest sequence number (0 for an empty feed); a primary-key lookup."""
    return int(conn.execute(select(func.coalesce(func.max(changes_t.c.seq), 0))).scalar_one())


def oldest(conn: Connection) -> int:
    """The oldest sequence number still kept (0 for an empty feed)."""
    return int(conn.execute(select(func.coalesce(func.min(changes_t.c.seq), 0))).scalar_one())


def since(conn: Connection, position: int, limit: int) -> list[Change]:
    """Changes after ``position``, oldest first, at most ``limit`` of them."""
    c = changes_t.c
    query = select(c.seq, c.kind, c.image_id, c.detector).where(c.seq > int(position)).order_by(c.seq).limit(limit)
    return [Change(int(r.seq), r.kind, r.image_id, r.detector) for r in conn.execute(query)]


def prune(conn: Connection, before: datetime) -> int:
    """Delete the changes recorded before ``before``, always keeping the newest; count them.

    The newest row stays because ``append`` numbers from it: an empty feed would start again
    at 1 and followers further on would wait forever. A follower (or a snapshot file) whose
    position the pruning passed notices the gap through ``oldest`` and rebuilds.
    """
    newest = head(conn)
    c = changes_t.c
    return conn.execute(delete(changes_t).where(c.created_at < before, c.seq < newest)).rowcount or 0
