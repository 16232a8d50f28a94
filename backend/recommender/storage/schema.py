"""The tables, as SQLAlchemy Core metadata (the migrations in ``db/`` create the same schema)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import REAL, TypeDecorator, TypeEngine

# Stable constraint names, so migrations and the metadata agree on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class FloatVector(TypeDecorator[np.ndarray]):
    """A float32 vector: ``REAL[]`` on PostgreSQL, a little-endian float32 BLOB elsewhere.

    PostgreSQL gets a real array so the values stay queryable in SQL; SQLite has no array
    type, and a BLOB of 81 float32 (324 bytes) is far smaller and faster than JSON text.
    """

    impl = LargeBinary
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(REAL()))
        return dialect.type_descriptor(LargeBinary())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        array = np.asarray(value, dtype="<f4").ravel()
        if dialect.name == "postgresql":
            return array.tolist()
        return array.tobytes()

    def process_result_value(self, value: Any, dialect: Dialect) -> np.ndarray | None:
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return np.frombuffer(bytes(value), dtype="<f4").astype(np.float32)
        return np.asarray(value, dtype=np.float32)


images = Table(
    "images",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("sha256", String(64), nullable=False, unique=True),
    Column("width", Integer, nullable=False),
    Column("height", Integer, nullable=False),
    Column("format", String(16), nullable=False),
    Column("mime", String(64), nullable=False),
    Column("size_bytes", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Perceptual hash (neardup.py), signed 64-bit; NULL until computed (migration 0003).
    Column("phash", BigInteger, nullable=True),
    # AUTOINCREMENT: SQLite would otherwise hand the highest id out again after a delete, and
    # an id names one image forever (the change feed and every index refer to images by id).
    sqlite_autoincrement=True,
)

detections = Table(
    "detections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("detector", String(64), nullable=False),
    Column("class_id", SmallInteger, nullable=False),
    Column("score", REAL(), nullable=False),
    Column("x1", REAL(), nullable=False),
    Column("y1", REAL(), nullable=False),
    Column("x2", REAL(), nullable=False),
    Column("y2", REAL(), nullable=False),
    Index(None, "image_id", "detector"),
)

vectors = Table(
    "vectors",
    metadata,
    Column("image_id", Integer, ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
    Column("detector", String(64), nullable=False),
    Column("values", FloatVector(), nullable=False),
    PrimaryKeyConstraint("image_id", "detector"),
    # Loading one detector's vectors is the start-up query; the PK starts with image_id.
    Index(None, "detector", "image_id"),
)

# Small key/value facts about the collection, e.g. which detector the index serves.
state = Table(
    "state",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

# The change feed: every change an index must follow, written in the transaction of the change.
# ``seq`` is handed out under a lock held until commit (see feed.py), so it grows in commit
# order and a follower that has read up to ``seq`` has seen every earlier change.
changes = Table(
    "changes",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("kind", String(16), nullable=False),  # "vector", "delete" or "activate"
    Column("image_id", Integer, nullable=True),  # no foreign key: a deleted image keeps its history
    Column("detector", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
