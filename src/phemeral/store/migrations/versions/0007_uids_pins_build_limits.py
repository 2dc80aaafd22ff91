"""uid counter (uids never reused), pinned / collected deployments, per-project build timeout

Revision ID: 0007_uids_pins_build_limits
Revises: 0006_custom_domains_tls
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_uids_pins_build_limits"
down_revision = "0006_custom_domains_tls"
branch_labels = None
depends_on = None

FIRST_APP_UID = 20000


def upgrade() -> None:
    counters = op.create_table(
        "counters",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    # The next uid continues above every uid handed out so far (live rows are all that is
    # known of the past; from here on the counter remembers deleted ones too).
    highest = op.get_bind().scalar(sa.text("SELECT MAX(uid) FROM projects"))
    op.bulk_insert(counters, [{"name": "app_uid", "value": max(highest or 0, FIRST_APP_UID)}])
    with op.batch_alter_table("projects") as batch:
        batch.add_column(sa.Column("build_timeout", sa.Integer(), nullable=True))
    with op.batch_alter_table("deployments") as batch:
        batch.add_column(
            sa.Column("pinned", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("collected_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deployments") as batch:
        batch.drop_column("collected_at")
        batch.drop_column("pinned")
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("build_timeout")
    op.drop_table("counters")
