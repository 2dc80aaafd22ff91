"""initial schema

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("uid", sa.Integer(), nullable=False),
        sa.Column("repo_url", sa.Text(), nullable=True),
        sa.Column("root_dir", sa.Text(), nullable=True),
        sa.Column("start_command", sa.Text(), nullable=True),
        sa.Column("python_version", sa.String(length=16), nullable=True),
        sa.Column("package_manager", sa.String(length=16), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("repo_token", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("uid"),
    )
    op.create_table(
        "environments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("branches", sa.JSON(), nullable=False),
        sa.Column("current_deployment_id", sa.String(length=12), nullable=True),
        sa.Column("last_push_seq", sa.Integer(), nullable=False),
        sa.Column("promoted_push_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_table(
        "deployments",
        sa.Column("id", sa.String(length=12), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("commit_sha", sa.String(length=64), nullable=True),
        sa.Column("branch", sa.Text(), nullable=True),
        sa.Column("pusher", sa.Text(), nullable=True),
        sa.Column("delivery_id", sa.String(length=100), nullable=True),
        sa.Column("push_seq", sa.Integer(), nullable=True),
        sa.Column("promote_on_success", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("custom_start_command", sa.Text(), nullable=True),
        sa.Column("start_command", sa.Text(), nullable=True),
        sa.Column("start_command_source", sa.String(length=16), nullable=True),
        sa.Column("settings", sa.JSON(), nullable=True),
        sa.Column("env_snapshot", sa.Text(), nullable=False),
        sa.Column("release", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["environment_id"], ["environments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("delivery_id"),
    )
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.create_index(
            "ix_deployments_environment_created",
            ["environment_id", "created_at", "id"],
            unique=False,
        )
        batch_op.create_index(
            "ix_deployments_project_created", ["project_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_deployments_status", ["status"], unique=False)

    op.create_table(
        "domains",
        sa.Column("label", sa.String(length=63), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["environment_id"], ["environments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("label"),
    )
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_domains_environment_id"), ["environment_id"], unique=False
        )

    op.create_table(
        "env_vars",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("secret", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["environment_id"], ["environments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("environment_id", "key"),
    )
    op.create_table(
        "promotions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("environment_id", sa.Integer(), nullable=False),
        sa.Column("from_deployment_id", sa.String(length=12), nullable=True),
        sa.Column("to_deployment_id", sa.String(length=12), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["environment_id"], ["environments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_promotions_environment_id"), ["environment_id"], unique=False
        )

    op.create_table(
        "build_log_lines",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(length=12), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("timestamp", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("build_log_lines", schema=None) as batch_op:
        batch_op.create_index("ix_build_log_deployment", ["deployment_id", "id"], unique=False)

    op.create_table(
        "runtime_log_lines",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("deployment_id", sa.String(length=12), nullable=False),
        sa.Column("instance", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("timestamp", sa.DateTime(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["deployment_id"], ["deployments.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("runtime_log_lines", schema=None) as batch_op:
        batch_op.create_index("ix_runtime_log_deployment", ["deployment_id", "id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("runtime_log_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_runtime_log_deployment")

    op.drop_table("runtime_log_lines")
    with op.batch_alter_table("build_log_lines", schema=None) as batch_op:
        batch_op.drop_index("ix_build_log_deployment")

    op.drop_table("build_log_lines")
    with op.batch_alter_table("promotions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_promotions_environment_id"))

    op.drop_table("promotions")
    op.drop_table("env_vars")
    with op.batch_alter_table("domains", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_domains_environment_id"))

    op.drop_table("domains")
    with op.batch_alter_table("deployments", schema=None) as batch_op:
        batch_op.drop_index("ix_deployments_status")
        batch_op.drop_index("ix_deployments_project_created")
        batch_op.drop_index("ix_deployments_environment_created")

    op.drop_table("deployments")
    op.drop_table("environments")
    op.drop_table("projects")
    op.drop_table("api_tokens")
