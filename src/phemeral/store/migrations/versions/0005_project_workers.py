"""a project's worker count (server processes per instance)

Revision ID: 0005_project_workers
Revises: 0004_preview_data
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_project_workers"
down_revision = "0004_preview_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("workers", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("workers")
