"""A perceptual hash per image, for folding near-identical photos in result lists.

Revision ID: 0003
Revises: 0002
Create Date: 2027-01-15

``images.phash``: imagehash's 64-bit DCT hash of the upright pixels, as a signed BIGINT;
NULL until computed (new photos get it at ingest; ``recommender reindex --hashes`` fills
the older ones).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("phash", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("images") as batch:
        batch.drop_column("phash")
