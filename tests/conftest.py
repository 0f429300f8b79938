"""Shared fixtures: database backends, the fake Bot API, and the real bot started against it.

Every e2e test runs once per backend: SQLite always, PostgreSQL when WAYSTATION_TEST_POSTGRES_URL is set.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from bot import logs
from bot.config import Settings, load_settings
from bot.sandbox.fake_telegram import FakeTelegram
from tests.harness import BotHarness

# Production log levels for the whole suite (our DEBUG on, third-party request dumps off), so tests see what
# operators would see and can check that nothing private is logged.
logs.configure("DEBUG")

# No personal data in any log line of the session (names, phones, typed texts, locations the fake users sent).
pytest_plugins = ["tests.log_scan"]

POSTGRES_URL = os.environ.get("WAYSTATION_TEST_POSTGRES_URL", "").strip()
_ran: dict[str, int] = {"sqlite": 0, "postgresql": 0}
# Lines a test module adds to the end-of-run summary, by topic (e.g. the access matrix's count of role×action cells).
summary_lines: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer config.toml or WAYSTATION_* variable leaks into a test."""
    for name in list(os.environ):
        if name.startswith("WAYSTATION_") and name != "WAYSTATION_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _backend_params() -> list[object]:
    reason = "WAYSTATION_TEST_POSTGRES_URL is not set: PostgreSQL cases skipped"
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(
            "postgresql",
            id="postgresql",
            marks=[pytest.mark.postgres, pytest.mark.skipif(not POSTGRES_URL, reason=reason)],
        ),
    ]


@pytest.fixture(params=_backend_params())
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    backend: str = request.param
    _ran[backend] += 1
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'waystation.db'}"
        return
    url = POSTGRES_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    engine = create_async_engine(url)
    async with engine.begin() as connection:  # a clean schema for every test
        await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()
    yield url


@pytest.fixture
async def fake_telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


def make_settings(
    fake: FakeTelegram, database_url: str, sections: dict[str, object] | None = None, **telegram: object
) -> Settings:
    """Settings pointing the bot at the fake Bot API and the test database (plus any other `sections`)."""
    return load_settings(
        None,
        telegram={
            "token": fake.token,
            "api_base_url": fake.base_url,
            "api_base_file_url": fake.base_file_url,
            **telegram,
        },
        database={"url": database_url},
        **(sections or {}),
    )


@pytest.fixture
def settings(database_url: str, fake_telegram: FakeTelegram) -> Settings:
    return make_settings(fake_telegram, database_url)


@pytest.fixture
async def bot(settings: Settings, fake_telegram: FakeTelegram) -> AsyncIterator[BotHarness]:
    """The real Application, polling the fake. Fails the test on any handler error or rejected API call."""
    harness = BotHarness(settings, fake_telegram)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()
    harness.assert_clean()


@pytest.fixture
def caplog_all(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    ran = ", ".join(f"{name}: {count} test(s)" for name, count in _ran.items() if count)
    terminalreporter.write_line(f"database backends used — {ran or 'none'}")
    for line in summary_lines.values():
        terminalreporter.write_line(line)
    if not POSTGRES_URL:
        terminalreporter.write_line("PostgreSQL skipped: WAYSTATION_TEST_POSTGRES_URL is not set")
