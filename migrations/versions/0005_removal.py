"""removal: a finished job's image files deleted (🗑) or expired (IMAGE_RETENTION_DAYS); the row stays

Also indexes for the two new searches: jobs whose files are due for pruning (removed_at, finished_at),
and the messages that show a job (posted_messages.job_id), deleted with it.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("removed_reason", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("removed_by", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_jobs_removed_at_finished_at", ["removed_at", "finished_at"], unique=False)
    with op.batch_alter_table("posted_messages", schema=None) as batch_op:
        batch_op.create_index("ix_posted_messages_job_id", ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("posted_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_posted_messages_job_id")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_removed_at_finished_at")
        batch_op.drop_column("removed_by")
        batch_op.drop_column("removed_reason")
        batch_op.drop_column("removed_at")
