"""Alembic environment: uses the connection handed over by models.schema, or opens one from the URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import models.registry  # noqa: F401  (imports every table so autogenerate sees them)

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode recreates tables instead.
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_from_url(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


shared = context.config.attributes.get("connection")
if shared is not None:
    _run(shared)
else:
    asyncio.run(_run_from_url(context.config.get_main_option("sqlalchemy.url") or ""))
