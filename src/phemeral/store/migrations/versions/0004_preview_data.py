"""projects.preview_data: what a pull-request preview gets of production's services

Revision ID: 0004_preview_data
Revises: 0003_previews
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_preview_data"
down_revision = "0003_previews"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(
            sa.Column("preview_data", sa.String(length=8), nullable=False, server_default="empty")
        )


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("preview_data")
