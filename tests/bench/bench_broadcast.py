"""Benchmark: a cold-weather alert to 10,000 and 100,000 subscribers over a city with 1,000 stations.

Everything goes through the real bot and the fake Bot API over HTTP. The fake runs in this process; the bot runs in a
child process (so it can be killed), with the Application exactly as bot/application.py builds it. Each subscriber gets
a personalised alert: the three stations with heating open during the cold night nearest to them, in their language
(70 % Chinese, 30 % English).

(a) capped: the fake answers 429 above 30 messages/second overall; the bot is configured just under it
    (telegram.overall_max_rate, --capped-rate). Measured over --capped-seconds: the sustained rate (target ≥ 29/s,
    97 % of the cap), the 429s the fake sent, and that none was left unhandled (no outbox item failed; every 429'd
    chat got its message later).
(b) uncapped: no limit anywhere; messages composed and sent per second, from the first delivery to the last (target
    ≥ 1,000/s, so paid broadcasts at 1,000/s are never slowed by us). The bot is killed with SIGKILL when 40 % are
    delivered and started again: duplicates and losses are counted per chat (both must be 0; see the printed note on
    what a SIGKILL can and cannot guarantee).
(c) peak memory: the bot process's peak RSS (VmHWM).
Baseline, measured in the same run: a bare python-telegram-bot loop sending as fast as it can to the same fake (PTB's
default httpx client, 16 at a time), no database, no composing.

    .venv/bin/python tests/bench/bench_broadcast.py [--subscribers 10000 100000] [--capped-seconds 30]
        [--postgres postgresql://…]   (default: $WAYSTATION_TEST_POSTGRES_URL; SQLite always)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import func, insert, update
from sqlalchemy import select as sa_select

from bot.database import Database
from bot.sandbox.fake_telegram import FakeTelegram
from models import weather
from models.outbox import OutboxItem
from models.stations import AMENITIES, Station, amenity_mask
from tests.bench.bench_start import reset_postgres

CITY = (31.78, 119.95)  # Changzhou
SPAN = 0.15  # ± degrees: a city of about 30 × 30 km
FIRST_USER = 800_000_001
AREA = {"key": "city", "name": "Changzhou", "names": {"zh_Hans": "常州"}, "lat": CITY[0], "lon": CITY[1]}
HOURS = ("24/7", "20:00-08:00", "Mo-Su 07:00-22:00", "Mo-Fr 08:00-18:00", "18:00-06:00")


# --- the child: the bot ---------------------------------------------------------------------------------------------


def settings_for(config: dict[str, Any]) -> Any:
    from bot.config import load_settings

    return load_settings(
        None,
        telegram={
            "token": config["token"],
            "api_base_url": config["base_url"],
            "api_base_file_url": config["base_file_url"],
            "overall_max_rate": config["rate"],
            "group_max_per_minute": 1_000_000,
        },
        database={"url": config["database"], "upgrade_on_start": False},
        weather={"areas": [AREA], "mode": "auto", "report_interval_seconds": 30.0},
        help={"hotline": "0519-12345"},
        logging={"level": "WARNING"},
    )


async def child(config: dict[str, Any]) -> None:
    from bot import logs, weather_jobs
    from bot.runner import BotRunner

    logs.configure("WARNING")
    weather_jobs.STARTUP_DELAY = 10**6  # no forecast checks here: the alert is made by the parent
    settings = settings_for(config)
    runner = BotRunner(settings, poll_timeout=1)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await runner.start()
    print("ready", flush=True)
    await stop.wait()
    await weather_jobs.stop(runner.app)
    await runner.stop()


# --- the parent: data, the fake, measuring ---------------------------------------------------------------------------


async def seed(url: str, subscribers: int, seed_value: int = 7) -> None:
    """1,000 stations and the subscribers, written directly (the import path is benchmarked elsewhere)."""
    rng = random.Random(seed_value)
    db = Database(url)
    await db.upgrade()
    stations = []
    for i in range(1000):
        amenities = sorted(rng.sample(AMENITIES[:12], 4) + (["heating"] if rng.random() < 0.4 else []))
        ordered = [a for a in AMENITIES if a in amenities]
        stations.append(
            {
                "external_id": f"bench-{i:04d}",
                "name": f"驿站{i:04d}",
                "name_en": f"Station {i:04d}",
                "lat": CITY[0] + rng.uniform(-SPAN, SPAN),
                "lon": CITY[1] + rng.uniform(-SPAN, SPAN),
                "amenities": ordered,
                "amenity_bits": amenity_mask(ordered),
                "opening_hours": rng.choice(HOURS),
                "timezone": "Asia/Shanghai",
                "status": "open",
                "languages": [],
                "updated_at": datetime.now(UTC),
            }
        )
    subs = []
    now = datetime.now(UTC)
    for i in range(subscribers):
        chinese = rng.random() < 0.7
        subs.append(
            {
                "chat_id": FIRST_USER + i,
                "language": "zh_Hans" if chinese else "en",
                "area_key": "city",
                "lat": round(CITY[0] + rng.uniform(-SPAN, SPAN), 3),
                "lon": round(CITY[1] + rng.uniform(-SPAN, SPAN), 3),
                "cold_alerts": True,
                "announcements": False,
                "quiet_start": None,
                "quiet_end": None,
                "active": True,
                "inactive_reason": None,
                "created_at": now,
                "updated_at": now,
            }
        )
    async with db.engine.begin() as connection:
        await connection.execute(insert(Station.__table__), stations)  # type: ignore[attr-defined]
        for start in range(0, len(subs), 10_000):
            await connection.execute(insert(weather.Subscription.__table__), subs[start : start + 10_000])  # type: ignore[attr-defined]
    await db.dispose()


async def new_alert(url: str, marker: str) -> int:
    """A cold night starting in two hours, and its alert, ready to send (what an approval or auto mode produces)."""
    db = Database(url)
    starts = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=2)
    async with db.session() as session:
        event = weather.ColdEvent(
            area_key="city",
            open_key=None,
            starts_at=starts,
            ends_at=starts + timedelta(hours=9),
            reasons=["temperature", "apparent"],
            min_temperature_c=-18.0,
            min_apparent_c=-26.0,
            max_wind_kmh=30.0,
        )
        session.add(event)
        await session.flush()
        broadcast, _ = await weather.create_broadcast(
            session,
            weather.Broadcast(
                kind="alert", event_id=event.id, area_keys=["city"], text=marker, urgent=True, status="sending"
            ),
        )
        await session.commit()
        assert broadcast.id is not None
        broadcast_id = broadcast.id
    await db.dispose()
    return broadcast_id


async def retire(url: str, broadcast_id: int) -> None:
    """End a broadcast the benchmark stopped midway, so the next phase measures only its own messages."""
    db = Database(url)
    async with db.engine.begin() as connection:
        broadcasts = weather.Broadcast.__table__  # type: ignore[attr-defined]
        table = OutboxItem.__table__  # type: ignore[attr-defined]
        await connection.execute(update(broadcasts).where(broadcasts.c.id == broadcast_id).values(status="done"))
        await connection.execute(
            update(table).where(table.c.status.in_(("pending", "sending"))).values(status="superseded")
        )
    await db.dispose()


async def failed_items(url: str) -> int:
    db = Database(url)
    async with db.session() as session:
        connection = await session.connection()
        table = OutboxItem.__table__  # type: ignore[attr-defined]
        result = await connection.execute(sa_select(func.count()).select_from(table).where(table.c.status == "failed"))
        count = int(result.scalar_one())
    await db.dispose()
    return count


@dataclass
class Tally:
    """Messages with the phase's marker, per chat, with the time of each (the fake's clock is this process's)."""

    marker: str
    per_chat: Counter[int] = field(default_factory=Counter)
    times: list[float] = field(default_factory=list)
    seen: dict[int, int] = field(default_factory=dict)

    def listen(self, fake: FakeTelegram) -> None:
        def on_change(chat_id: int) -> None:
            chat = fake.chat(chat_id)
            messages = chat.messages
            start = self.seen.get(chat_id, 0)
            for message in messages[start:]:
                if message.from_bot and message.text and self.marker in message.text:
                    self.per_chat[chat_id] += 1
                    self.times.append(time.perf_counter())
            self.seen[chat_id] = len(messages)

        fake.add_listener(on_change)

    @property
    def delivered(self) -> int:
        return len(self.per_chat)


class Child:
    """The bot in a subprocess, with its peak memory read from /proc."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", json.dumps(config)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.peak_kb = 0
        self.cpu_s = 0.0

    async def ready(self) -> None:
        assert self.process.stdout is not None
        line = await asyncio.to_thread(self.process.stdout.readline)
        if line.strip() != "ready":
            raise RuntimeError(f"the bot did not start: {line!r}")

    def sample(self) -> None:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            self.cpu_s = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            pass

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        self.sample()
        self.process.send_signal(sig)
        await asyncio.to_thread(self.process.wait, 60)


async def wait_for(predicate: Any, timeout: float, child: Child | None = None) -> bool:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return True
        if child is not None:
            child.sample()
            if child.process.poll() is not None:
                raise RuntimeError(f"the bot exited with {child.process.returncode}")
        await asyncio.sleep(0.1)
    return predicate()


def config_for(fake: FakeTelegram, url: str, rate: float) -> dict[str, Any]:
    return {
        "token": fake.token,
        "base_url": fake.base_url,
        "base_file_url": fake.base_file_url,
        "database": url,
        "rate": rate,
    }


async def capped(fake: FakeTelegram, url: str, n: int, seconds: float, rate: float) -> dict[str, Any]:
    marker = f"bench-capped-{n}-{url.split(':')[0]}"
    tally = Tally(marker)
    tally.listen(fake)
    fake.calls.clear()
    fake.set_flood_limits(global_per_second=30, retry_after=1)
    broadcast_id = await new_alert(url, marker)
    bot = Child(config_for(fake, url, rate))
    await bot.ready()
    await wait_for(lambda: tally.delivered > 0, 120, bot)
    warmup = time.perf_counter() + 2.0
    await wait_for(lambda: False, seconds + 2.0, bot)
    end = time.perf_counter()
    await bot.stop()
    window = [t for t in tally.times if warmup <= t <= end]
    throttled = [c for c in fake.calls if c.status == 429]
    throttled_chats = {int(c.params.get("chat_id", 0)) for c in throttled}
    settled = [c for c in throttled if c.at < fake.world.now() - 3]  # long enough ago to have been retried
    unhandled = [c for c in settled if tally.per_chat[int(c.params.get("chat_id", 0))] == 0]
    fake.set_flood_limits()
    failed = await failed_items(url)
    await retire(url, broadcast_id)
    return {
        "rate": len(window) / (end - warmup),
        "delivered": tally.delivered,
        "429": len(throttled),
        "429_chats": len(throttled_chats),
        "unhandled": len(unhandled),
        "failed": failed,
        "duplicates": sum(c - 1 for c in tally.per_chat.values() if c > 1),
        "peak_mb": bot.peak_kb / 1024,
    }


async def uncapped(fake: FakeTelegram, url: str, n: int, kill_at: float) -> dict[str, Any]:
    marker = f"bench-free-{n}-{url.split(':')[0]}"
    tally = Tally(marker)
    tally.listen(fake)
    await new_alert(url, marker)
    config = config_for(fake, url, 1_000_000.0)
    first = Child(config)
    await first.ready()
    first.sample()
    child_cpu_start = first.cpu_s
    parent_cpu_start = time.process_time()
    ready_at = time.perf_counter()
    await wait_for(lambda: tally.delivered >= n * kill_at, 3600, first)
    first.sample()
    parent_cpu = time.process_time() - parent_cpu_start
    await first.stop(signal.SIGKILL)
    killed_at = time.perf_counter()
    before = list(tally.times)
    second = Child(config)
    await second.ready()
    restarted = time.perf_counter()
    finished = await wait_for(lambda: tally.delivered >= n, 3600, second)
    await wait_for(lambda: False, 3.0, second)  # late duplicates would show up now
    await second.stop()
    after = [t for t in tally.times if t >= killed_at]
    segments = [(before[0], before[-1], len(before))]
    if len(after) > 1:
        segments.append((after[0], after[-1], len(after)))
    busy = sum(end - start for start, end, _ in segments)
    return {
        "finished": finished,
        "rate": sum(count for *_, count in segments) / busy if busy else 0.0,
        "rate_first": len(before) / (before[-1] - before[0]) if len(before) > 1 else 0.0,
        "rate_by_tenth": [round(len(part) / max(part[-1] - part[0], 1e-9)) for part in tenths(sorted(tally.times))],
        "restart_s": (after[0] - restarted) if after else 0.0,
        "duplicates": sum(c - 1 for c in tally.per_chat.values() if c > 1),
        "losses": n - tally.delivered,
        "failed": await failed_items(url),
        "peak_mb": max(first.peak_kb, second.peak_kb) / 1024,
        # Before the kill: CPU per delivered message of the bot (child) and of the fake Bot API (this process), and
        # the share of a core each used.
        "bot_cpu_us": (first.cpu_s - child_cpu_start) / max(len(before), 1) * 1e6,
        "fake_cpu_us": parent_cpu / max(len(before), 1) * 1e6,
        "bot_cores": (first.cpu_s - child_cpu_start) / max(killed_at - ready_at, 1e-9),
        "fake_cores": parent_cpu / max(killed_at - ready_at, 1e-9),
    }


def tenths(times: list[float]) -> list[list[float]]:
    """The delivery times in ten equal parts (to see whether the rate holds up as the tables grow)."""
    size = max(len(times) // 10, 2)
    return [times[i : i + size] for i in range(0, len(times) - 1, size) if len(times[i : i + size]) > 1]


async def baseline(fake: FakeTelegram, n: int) -> float:
    """A bare PTB bot (httpx, no database, no composing) sending n messages, 16 at a time."""
    from telegram import Bot

    queue = list(range(n))
    async with Bot(fake.token, base_url=fake.base_url) as bot:

        async def worker() -> None:
            while queue:
                chat = FIRST_USER + queue.pop()
                await bot.send_message(chat, "baseline <b>message</b>", parse_mode="HTML")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(16)))
        return n / (time.perf_counter() - started)


def remove_sqlite(url: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(url.split("///", 1)[1] + suffix).unlink(missing_ok=True)


async def run_backend(name: str, url: str, args: argparse.Namespace, fake: FakeTelegram, base: float) -> list[str]:
    lines = []
    for n in args.subscribers:
        if url.startswith("postgresql"):
            await reset_postgres(url)
        else:
            remove_sqlite(url)
        started = time.perf_counter()
        await seed(url, n)
        print(
            f"{name}: {n:,} subscribers and 1,000 stations seeded in {time.perf_counter() - started:.1f} s", flush=True
        )
        skipped: dict[str, Any] = {"rate": 0.0, "peak_mb": 0.0}  # a phase left out with --only
        a: dict[str, Any] = skipped | {"429": 0, "unhandled": 0, "failed": 0}
        b: dict[str, Any] = skipped | {"bot_cpu_us": 0, "fake_cores": 0, "duplicates": 0, "losses": 0, "failed": 0}
        if args.only in (None, "a"):
            a = await capped(fake, url, n, args.capped_seconds, args.capped_rate)
            print(f"{name} {n:,} (a) capped: {a}", flush=True)
        if args.only in (None, "b"):
            b = await uncapped(fake, url, n, 0.4)
            print(f"{name} {n:,} (b) uncapped + SIGKILL at 40 %: {b}", flush=True)
        lines.append(
            " | ".join(
                [
                    f"{name:<10} {n:>8,}",
                    f"{a['rate']:>5.1f}/s {a['rate'] / 30 * 100:>5.1f}% {a['429']:>4} {a['unhandled']:>4}",
                    f"{b['rate']:>6.0f}/s x{b['rate'] / base:>4.1f} {b['bot_cpu_us']:>6.0f} {b['fake_cores']:>5.2f}",
                    f"{max(a['peak_mb'], b['peak_mb']):>5.0f} MB",
                    f"{b['duplicates']:>4} {b['losses']:>4} {a['failed'] + b['failed']:>4}",
                ]
            )
        )
    return lines


async def main_async(args: argparse.Namespace) -> None:
    users = max(args.subscribers)
    async with FakeTelegram() as fake:
        started = time.perf_counter()
        for i in range(users):
            fake.user(f"S{i}", user_id=FIRST_USER + i, language_code="zh" if i % 10 < 7 else "en")
        print(f"fake Bot API with {users:,} users ready in {time.perf_counter() - started:.1f} s", flush=True)
        # The fake keeps every message and call: with millions of objects, Python's cyclic GC would pause this process
        # (the fake Bot API) longer and longer as the run goes on. Nothing here needs it.
        gc.freeze()
        gc.disable()
        args.baseline = min(args.baseline, users)
        base = await baseline(fake, args.baseline)
        for chat in range(FIRST_USER, FIRST_USER + args.baseline):  # forget the baseline's messages
            fake.chat(chat).messages.clear()
        fake.calls.clear()
        print(f"baseline: bare PTB (httpx) to the same fake: {base:.0f} messages/s", flush=True)
        backends = []
        with tempfile.TemporaryDirectory() as tmp:
            backends.append(("SQLite", f"sqlite+aiosqlite:///{tmp}/bench.db"))
            if args.postgres:
                backends.append(("PostgreSQL", args.postgres))
            table = []
            for name, url in backends:
                table += await run_backend(name, url, args, fake, base)
    print()
    print(
        f"{'backend':<10} {'subscr.':>8} | {'(a) cap 30/s: rate, %, 429s, unh.':<29} | "
        f"{'(b) no cap: rate, x base, CPU us, fake':<36} | {'(c) peak':<8} | dup. lost fail"
    )
    for line in table:
        print(line)
    print(
        f"\nbaseline: bare PTB (httpx, no database, no composing) to the same fake: {base:.0f} messages/s.\n"
        "CPU us: the bot process's CPU time per delivered message (composing, database, HTTP); its ceiling is 1e6 / "
        "that on a free core. fake: the fake Bot API's share of a core (it runs in this process).\n"
        "The kill is SIGKILL. A message Telegram accepted in the last milliseconds before the kill, whose record had "
        "not been committed yet, is sent again after the restart (Telegram has no idempotency key): that is the only "
        "way a duplicate can happen; a clean stop (SIGTERM, deploys) waits for messages in flight and has none."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--capped-seconds", type=float, default=30.0)
    parser.add_argument("--capped-rate", type=float, default=29.4)
    parser.add_argument("--baseline", type=int, default=3000)
    parser.add_argument("--only", choices=("a", "b"), default=None, help="run only the capped (a) or free (b) phase")
    parser.add_argument("--postgres", default=os.environ.get("WAYSTATION_TEST_POSTGRES_URL", ""))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(child(json.loads(args.child)))
        return
    if args.postgres:
        args.postgres = args.postgres.replace("postgresql://", "postgresql+asyncpg://", 1)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
