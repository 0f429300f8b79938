"""citizen reports of people in need

Revision ID: 0005_reports
Revises: 3a4bab306dd5
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005_reports"
down_revision: str | None = "3a4bab306dd5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Reports are cases (kind = "report"); this table holds what only a report has, one row per report case.
    op.create_table(
        "report_details",
        sa.Column("case_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("reporter_key", sa.String(length=64), nullable=False),
        sa.Column("people", sa.Integer(), nullable=False),
        sa.Column("seen", sa.String(length=16), nullable=False),
        sa.Column("seen_text", sa.String(length=100), nullable=True),
        sa.Column("photo_file_id", sa.String(length=255), nullable=True),
        sa.Column("may_contact", sa.Boolean(), nullable=False),
        sa.Column("wants_outcome", sa.Boolean(), nullable=False),
        sa.Column("found", sa.Boolean(), nullable=True),
        sa.Column("searched_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("searched_by", sa.BigInteger(), nullable=True),
        sa.Column("searched_by_name", sa.String(length=200), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["case_id"], ["cases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("case_id"),
    )
    with op.batch_alter_table("report_details", schema=None) as batch_op:
        batch_op.create_index("ix_report_details_reporter_key_created_at", ["reporter_key", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("report_details", schema=None) as batch_op:
        batch_op.drop_index("ix_report_details_reporter_key_created_at")
    op.drop_table("report_details")
