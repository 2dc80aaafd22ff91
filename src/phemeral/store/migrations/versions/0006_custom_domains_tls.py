"""custom domains with their certificates, the ACME account, per-environment HTTPS settings

Revision ID: 0006_custom_domains_tls
Revises: 0005_project_workers
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_custom_domains_tls"
down_revision = "0005_project_workers"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "custom_domains",
        sa.Column("name", sa.String(length=253), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("cert_chain", sa.Text(), nullable=True),
        sa.Column("cert_key", sa.Text(), nullable=True),
        sa.Column("cert_not_after", sa.DateTime(), nullable=True),
        sa.Column("cert_issued_at", sa.DateTime(), nullable=True),
        sa.Column("cert_failures", sa.Integer(), nullable=False),
        sa.Column("cert_last_error", sa.Text(), nullable=True),
        sa.Column("cert_next_try_at", sa.DateTime(), nullable=True),
        sa.Column("cert_renew_now", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["environment_id"], ["environments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("custom_domains", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custom_domains_environment_id"), ["environment_id"], unique=False
        )
    op.create_table(
        "acme_accounts",
        sa.Column("directory", sa.String(length=500), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("directory"),
    )
    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("https_redirect", sa.Boolean(), nullable=False, server_default=sa.true())
        )
        batch_op.add_column(
            sa.Column("hsts_max_age", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("environments", schema=None) as batch_op:
        batch_op.drop_column("hsts_max_age")
        batch_op.drop_column("https_redirect")
    op.drop_table("acme_accounts")
    with op.batch_alter_table("custom_domains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custom_domains_environment_id"))
    op.drop_table("custom_domains")
