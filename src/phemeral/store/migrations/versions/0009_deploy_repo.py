"""Deployments remember the GitHub repository (owner/name) their commit statuses go to

Revision ID: 0009_deploy_repo
Revises: 0008_github_app
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_deploy_repo"
down_revision = "0008_github_app"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("github_repo", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("github_repo")
