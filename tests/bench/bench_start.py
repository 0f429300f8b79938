"""Benchmark: /start round trip through the fake Bot API, Waystation vs a bare python-telegram-bot echo bot.

200 users each send 10 /start commands (waiting for each reply before the next), all users at once: 2,000 updates.
Latency = from queuing the update at the fake to the bot's sendMessage arriving there. Both bots poll the same fake
in the same run, so the ratio shows what Waystation's own work costs (user bookkeeping, persistence, dedupe, i18n).

    .venv/bin/python tests/bench/bench_start.py [--users 200] [--per-user 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from telegram import Update
from telegram.ext import Application, CommandHandler, ContextTypes

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bot.config import load_settings
from bot.runner import BotRunner
from bot.sandbox.fake_telegram import FakeTelegram, FakeUser


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def drive(fake: FakeTelegram, users: list[FakeUser], per_user: int) -> tuple[list[float], float]:
    latencies: list[float] = []

    async def one_user(user: FakeUser) -> None:
        for _ in range(per_user):
            started = time.perf_counter()
            await user.send_command("/start")
            await user.receive(timeout=60)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(one_user(u) for u in users))
    return latencies, time.perf_counter() - started


async def measure(
    name: str,
    start_bot: Callable[[FakeTelegram], Awaitable[Callable[[], Awaitable[None]]]],
    n_users: int,
    per_user: int,
) -> dict[str, float | str]:
    async with FakeTelegram() as fake:
        stop = await start_bot(fake)
        try:
            users = [fake.user(f"User{i}", language_code="zh" if i % 2 else "en") for i in range(n_users)]
            # Warm-up: first contact creates each user (not part of the figure).
            await drive(fake, users[:10], 1)
            latencies, elapsed = await drive(fake, users, per_user)
        finally:
            await stop()
    total = n_users * per_user
    return {
        "bot": name,
        "updates": total,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "mean_ms": statistics.fmean(latencies),
        "updates_per_s": total / elapsed,
    }


async def start_waystation(
    fake: FakeTelegram, database_url: str, max_rate: float | None = None
) -> Callable[[], Awaitable[None]]:
    telegram: dict[str, object] = {
        "token": fake.token,
        "api_base_url": fake.base_url,
        "api_base_file_url": fake.base_file_url,
    }
    if max_rate is not None:
        telegram["overall_max_rate"] = max_rate
    settings = load_settings(None, telegram=telegram, database={"url": database_url})
    runner = BotRunner(settings, poll_timeout=1)
    await runner.start()
    return runner.stop


async def start_echo(fake: FakeTelegram) -> Callable[[], Awaitable[None]]:
    async def hello(update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_user is not None
        await update.effective_message.reply_text(f"Hello, {update.effective_user.first_name}!")

    app = Application.builder().token(fake.token).base_url(fake.base_url).build()
    app.add_handler(CommandHandler("start", hello))
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(timeout=1)

    async def stop() -> None:
        assert app.updater is not None
        await app.updater.stop()
        await app.stop()
        await app.shutdown()

    return stop


async def reset_postgres(url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


def row(result: dict[str, float | str]) -> str:
    return (
        f"{result['bot']:<38} {result['updates']:>7} {result['p50_ms']:>9.2f} {result['p99_ms']:>9.2f} "
        f"{result['mean_ms']:>9.2f} {result['updates_per_s']:>11.1f}"
    )


async def main_async(args: argparse.Namespace) -> None:
    print(f"/start round trip: {args.users} users x {args.per_user} updates, all users concurrently")
    print(f"{'bot':<38} {'updates':>7} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9} {'updates/s':>11}")
    baseline = await measure("bare PTB echo bot (baseline)", start_echo, args.users, args.per_user)
    print(row(baseline), flush=True)
    results = [baseline]
    # Waystation paces what it sends to Telegram's ~30 messages/s (config: telegram.overall_max_rate = 25): the
    # "unthrottled" rows lift that pace to show the bot's own cost; the last row is the production setting.
    variants: list[tuple[str, str, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        variants.append(("Waystation, SQLite, unthrottled", f"sqlite+aiosqlite:///{tmp}/a.db", 1e6))
        if args.postgres:
            variants.append(("Waystation, PostgreSQL, unthrottled", args.postgres, 1e6))
        variants.append(("Waystation, SQLite, 25 msg/s limit", f"sqlite+aiosqlite:///{tmp}/b.db", None))
        for name, url, rate in variants:

            async def start(
                fake: FakeTelegram, url: str = url, rate: float | None = rate
            ) -> Callable[[], Awaitable[None]]:
                if url.startswith("postgresql"):
                    await reset_postgres(url)  # update ids restart with every fake: old ones would be skipped
                return await start_waystation(fake, url, rate)

            results.append(await measure(name, start, args.users, args.per_user))
            print(row(results[-1]), flush=True)
    for result in results[1:]:
        print(
            f"ratio {result['bot']} / baseline: p50 x{float(result['p50_ms']) / float(baseline['p50_ms']):.2f}, "
            f"p99 x{float(result['p99_ms']) / float(baseline['p99_ms']):.2f}, "
            f"throughput x{float(result['updates_per_s']) / float(baseline['updates_per_s']):.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    import os

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--postgres", default=os.environ.get("WAYSTATION_TEST_POSTGRES_URL", ""))
    args = parser.parse_args(argv)
    if args.postgres:
        args.postgres = args.postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
