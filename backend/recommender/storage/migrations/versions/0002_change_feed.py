"""Change feed, image ids that are never reused, one name per detector.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

* ``changes``: the feed every process follows to keep its index current.
* ``images`` gets AUTOINCREMENT on SQLite (PostgreSQL sequences never reuse ids anyway), so
  a deleted image's id is never given to a new one. Ids deleted before this migration may
  still be reused once: SQLite kept no record of them.
* Mask R-CNN vectors were stored as ``maskrcnn-coco`` while the setting was ``maskrcnn``; the
  detector now has the one name ``maskrcnn`` everywhere.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_RENAMED = {"maskrcnn-coco": "maskrcnn"}


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("detector", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_changes"),
    )
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("images", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass
    for old, new in _RENAMED.items():
        for table in ("vectors", "detections"):
            op.execute(sa.text(f"UPDATE {table} SET detector = :new WHERE detector = :old").bindparams(old=old, new=new))
        op.execute(sa.text("UPDATE state SET value = :new WHERE value = :old").bindparams(old=old, new=new))


def downgrade() -> None:
    for old, new in _RENAMED.items():
        for table in ("vectors", "detections"):
            op.execute(sa.text(f"UPDATE {table} SET detector = :old WHERE detector = :new").bindparams(old=old, new=new))
    op.drop_table("changes")
