"""backing services (PostgreSQL, Redis) per environment; service variables per deployment

Revision ID: 0002_services
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_services"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("location", sa.String(length=16), nullable=False),
        sa.Column("resource", sa.String(length=63), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("credentials", sa.Text(), nullable=False),
        sa.Column("connection_limit", sa.Integer(), nullable=True),
        sa.Column("maxmemory_mb", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("rotated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["environment_id"], ["environments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("resource"),
    )
    op.create_index("ix_services_environment_id", "services", ["environment_id"])
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(sa.Column("env_sources", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("env_sources")
    op.drop_index("ix_services_environment_id", table_name="services")
    op.drop_table("services")
