"""render: the part of a task's cost already charged to its bill

Revision ID: 0006_render_billed
Revises: 0005_render
Create Date: 2026-12-02 01:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_render_billed"
down_revision: str | None = "0005_render"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("render_tasks") as batch:
        batch.add_column(sa.Column("billed", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("billed_frame_tasks", sa.Integer(), nullable=False, server_default="0")
        )
    # existing tasks were charged frame by frame: all of their cost is billed
    op.execute("UPDATE render_tasks SET billed = cost, billed_frame_tasks = frames_succeeded")


def downgrade() -> None:
    with op.batch_alter_table("render_tasks") as batch:
        batch.drop_column("billed_frame_tasks")
        batch.drop_column("billed")
