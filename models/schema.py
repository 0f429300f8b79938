"""Alembic migrations, run programmatically (no alembic.ini): `waystation db upgrade` and bot start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    # Share the caller's connection with env.py (Alembic's documented "connection sharing" recipe).
    config.attributes["connection"] = connection
    return config


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Bring the schema to `revision` on an open (sync-facing) connection."""
    command.upgrade(alembic_config(connection), revision)


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def revision(url: str, message: str) -> None:
    """Autogenerate a new migration from the models (developer tool: `waystation db revision -m …`)."""
    command.revision(alembic_config(url=url), message=message, autogenerate=True)
