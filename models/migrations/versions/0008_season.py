"""season reports: aid given on resolve, outreach patrols, station usage

Revision ID: 0008_season
Revises: 0007_teams
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0008_season"
down_revision: str | None = "0007_teams"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_DATETIME = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "case_aid",
        sa.Column("case_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("kinds", sa.JSON(), nullable=False),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.Column("given_by", sa.BigInteger(), nullable=True),
        sa.Column("given_at", UTC_DATETIME(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("case_id"),
    )
    op.create_table(
        "patrols",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("staff_id", sa.BigInteger(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("open_key", sa.String(length=32), nullable=True),
        sa.Column("started_at", UTC_DATETIME(), nullable=False),
        sa.Column("ended_at", UTC_DATETIME(), nullable=True),
        sa.Column("people_met", sa.Integer(), nullable=True),
        sa.Column("items", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    with op.batch_alter_table("patrols", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_patrols_staff_id"), ["staff_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_patrols_started_at"), ["started_at"], unique=False)
    op.create_table(
        "station_usage",
        sa.Column("station_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("shown", sa.Integer(), nullable=False),
        sa.Column("opened", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["station_id"], ["stations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("station_id", "day"),
    )


def downgrade() -> None:
    op.drop_table("station_usage")
    with op.batch_alter_table("patrols", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_patrols_started_at"))
        batch_op.drop_index(batch_op.f("ix_patrols_staff_id"))
    op.drop_table("patrols")
    op.drop_table("case_aid")
