"""output safety: each image's classifier score, how each result was shown, and each server's choice

images.safety_score: P(unsafe) from the classifier, scored in the worker before anything is posted.
jobs.shown (plain | spoiler | held), released_by, released_at: the decision at delivery, and a moderator's
release of a held result. guild_settings.safety_mode (block | spoiler | age-restricted) and
safety_threshold: NULL is the operator's default.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 19:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("safety_score", sa.Float(), nullable=True))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("shown", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("released_by", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("released_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.add_column(sa.Column("safety_mode", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("safety_threshold", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("guild_settings", schema=None) as batch_op:
        batch_op.drop_column("safety_threshold")
        batch_op.drop_column("safety_mode")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("released_at")
        batch_op.drop_column("released_by")
        batch_op.drop_column("shown")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("safety_score")
