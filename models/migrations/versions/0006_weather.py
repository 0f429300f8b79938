"""cold-weather subscriptions, forecasts and events

Revision ID: 0006_weather
Revises: 0005_reports
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006_weather"
down_revision: str | None = "0005_reports"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "weather_subscriptions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), nullable=False),
        sa.Column("language", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("area_key", sa.String(length=32), nullable=True),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("cold_alerts", sa.Boolean(), nullable=False),
        sa.Column("announcements", sa.Boolean(), nullable=False),
        sa.Column("quiet_start", sa.Integer(), nullable=True),
        sa.Column("quiet_end", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("inactive_reason", sa.String(length=16), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("chat_id"),
    )
    with op.batch_alter_table("weather_subscriptions", schema=None) as batch_op:
        batch_op.create_index("ix_weather_subscriptions_active_area_id", ["active", "area_key", "id"], unique=False)

    op.create_table(
        "weather_forecasts",
        sa.Column("area_key", sa.String(length=32), nullable=False),
        sa.Column("hours", sa.JSON(), nullable=False),
        sa.Column("fetched_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("attempted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=64), nullable=True),
        sa.Column("stale_reported_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("area_key"),
    )

    op.create_table(
        "weather_events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("area_key", sa.String(length=32), nullable=False),
        sa.Column("open_key", sa.String(length=32), nullable=True),
        sa.Column("starts_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ends_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.Column("min_temperature_c", sa.Float(), nullable=True),
        sa.Column("min_apparent_c", sa.Float(), nullable=True),
        sa.Column("max_wind_kmh", sa.Float(), nullable=True),
        sa.Column("snowfall_cm", sa.Float(), nullable=True),
        sa.Column("opened_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("closed_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("alert_broadcast_id", sa.Integer(), nullable=True),
        sa.Column("standdown_broadcast_id", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("open_key"),
    )
    with op.batch_alter_table("weather_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_weather_events_area_key"), ["area_key"], unique=False)

    op.create_table(
        "weather_broadcasts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=True),
        sa.Column("area_keys", sa.JSON(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("urgent", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("language", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.BigInteger(), nullable=True),
        sa.Column("decided_by", sa.BigInteger(), nullable=True),
        sa.Column("decided_by_name", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", sa.String(length=64), nullable=True),
        sa.Column("report_chats", sa.JSON(), nullable=False),
        sa.Column("cursor", sa.Integer(), nullable=False),
        sa.Column("fanned_out", sa.Boolean(), nullable=False),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("blocked", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["event_id"], ["weather_events.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    with op.batch_alter_table("weather_broadcasts", schema=None) as batch_op:
        batch_op.create_index("ix_weather_broadcasts_status", ["status"], unique=False)

    op.create_table(
        "weather_deliveries",
        sa.Column("broadcast_id", sa.Integer(), nullable=False),
        sa.Column("chat_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("outbox_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["broadcast_id"], ["weather_broadcasts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("broadcast_id", "chat_id"),
    )
    with op.batch_alter_table("weather_deliveries", schema=None) as batch_op:
        batch_op.create_index("ix_weather_deliveries_chat_id", ["chat_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_weather_deliveries_outbox_id"), ["outbox_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("weather_deliveries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_weather_deliveries_outbox_id"))
        batch_op.drop_index("ix_weather_deliveries_chat_id")
    op.drop_table("weather_deliveries")
    with op.batch_alter_table("weather_broadcasts", schema=None) as batch_op:
        batch_op.drop_index("ix_weather_broadcasts_status")
    op.drop_table("weather_broadcasts")
    with op.batch_alter_table("weather_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_weather_events_area_key"))
    op.drop_table("weather_events")
    op.drop_table("weather_forecasts")
    with op.batch_alter_table("weather_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("ix_weather_subscriptions_active_area_id")
    op.drop_table("weather_subscriptions")
