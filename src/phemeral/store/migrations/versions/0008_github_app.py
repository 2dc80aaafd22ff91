"""GitHub App per project: App id, encrypted private key, installation id

Revision ID: 0008_github_app
Revises: 0007_uids_pins_build_limits
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_github_app"
down_revision = "0007_uids_pins_build_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("github_app_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("github_app_key", sa.Text(), nullable=True))
        batch.add_column(sa.Column("github_installation_id", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("github_installation_id")
        batch.drop_column("github_app_key")
        batch.drop_column("github_app_id")
