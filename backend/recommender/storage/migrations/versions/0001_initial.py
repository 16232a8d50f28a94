"""Initial schema: images, their detections and vectors per detector, and collection state.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

The vector column is ``REAL[]`` on PostgreSQL and a float32 BLOB on SQLite
(see recommender.storage.schema.FloatVector). Types are spelled out here rather than
imported so this migration keeps meaning the same thing when the models change.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("mime", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("name", name="uq_images_name"),
        sa.UniqueConstraint("sha256", name="uq_images_sha256"),
    )
    op.create_table(
        "detections",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("class_id", sa.SmallInteger(), nullable=False),
        sa.Column("score", sa.REAL(), nullable=False),
        sa.Column("x1", sa.REAL(), nullable=False),
        sa.Column("y1", sa.REAL(), nullable=False),
        sa.Column("x2", sa.REAL(), nullable=False),
        sa.Column("y2", sa.REAL(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_detections"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_detections_image_id_images", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_detections_image_id_detector", "detections", ["image_id", "detector"])
    op.create_table(
        "vectors",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("detector", sa.String(64), nullable=False),
        sa.Column("values", sa.LargeBinary().with_variant(postgresql.ARRAY(sa.REAL()), "postgresql"), nullable=False),
        sa.PrimaryKeyConstraint("image_id", "detector", name="pk_vectors"),
        sa.ForeignKeyConstraint(["image_id"], ["images.id"], name="fk_vectors_image_id_images", ondelete="CASCADE"),
    )
    op.create_index("ix_vectors_detector_image_id", "vectors", ["detector", "image_id"])
    op.create_table(
        "state",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_state"),
    )


def downgrade() -> None:
    op.drop_table("state")
    op.drop_index("ix_vectors_detector_image_id", table_name="vectors")
    op.drop_table("vectors")
    op.drop_index("ix_detections_image_id_detector", table_name="detections")
    op.drop_table("detections")
    op.drop_table("images")
