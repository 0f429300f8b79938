"""Fuzzing: ≥ 10,000 updates from many people (staff of every role among them) into every state of every conversation.

The driver (tests/fuzz_driver.py) follows real paths by tapping the buttons the bot shows and mixes in junk of every
message type, stale and forged callback data, edits, forwards, group messages and redeliveries. Pass: no handler
error, no call the fake Bot API rejected, every private message and every callback query answered, redeliveries
ignored, no person's text in another person's chat. The count is printed at the end of the run (tests/conftest.py).

The bot runs in webhook mode: Telegram redelivers an update when a webhook's answer gets lost, which is how the fuzz
delivers the same update twice. `WAYSTATION_FUZZ_UPDATES` / `WAYSTATION_FUZZ_SEED` change the size and the seed.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from sqlmodel import select

from bot import weather_jobs
from bot.sandbox.fake_nominatim import FakeNominatim
from bot.sandbox.fake_open_meteo import FakeOpenMeteo
from bot.sandbox.fake_telegram import BotMessage, FakeTelegram
from handlers.errors import failing_handler
from models import cases, staff, station_import
from models import teams as team_model
from models.cases import Case
from models.staff import Role
from models.stations import Station
from tests import conftest
from tests.conftest import make_settings
from tests.fuzz_driver import Actor, Fuzzer, Tracer, callback_data
from tests.harness import BotHarness

# Read at import: the suite's isolation fixture removes WAYSTATION_* variables before each test.
UPDATES = int(os.environ.get("WAYSTATION_FUZZ_UPDATES", "10000"))
SEED = int(os.environ.get("WAYSTATION_FUZZ_SEED", "20250110"))
PEOPLE = 40
STAFF_ROLES = (Role.KEEPER, Role.RESPONDER, Role.RESPONDER, Role.COORDINATOR, Role.ADMIN)
LANGUAGES = ("en", "en", "zh", "zh", "zh-hans", None, "ar", "en-US")
HUTANG = (31.7035, 119.9719)
WUJIN = {
    "key": "wujin",
    "name": "Wujin",
    "names": {"zh_Hans": "武进区"},
    "lat": 31.74,
    "lon": 119.955,
    "polygon": [[31.85, 119.80], [31.85, 120.10], [31.60, 120.10], [31.60, 119.80]],
    "timezone": "Asia/Shanghai",
}
SECRET = "fuzz_Secret-1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def nominatim() -> AsyncIterator[FakeNominatim]:
    async with FakeNominatim() as server:
        yield server


@pytest.fixture
async def meteo() -> AsyncIterator[FakeOpenMeteo]:
    async with FakeOpenMeteo() as server:
        yield server


def backend_of(database_url: str) -> str:
    return "postgresql" if database_url.startswith("postgresql") else "sqlite"


async def start_world(
    database_url: str,
    fake: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    nominatim: FakeNominatim,
    meteo: FakeOpenMeteo,
    *,
    people: int,
    seed: int,
) -> tuple[BotHarness, Tracer, list[Actor]]:
    """The bot (webhook mode, demo stations, a North team with its group), people and staff of every role."""
    monkeypatch.setattr(weather_jobs, "STARTUP_DELAY", 3600.0)  # no forecast checks during the run
    rng = random.Random(seed)
    actors: list[Actor] = []
    for i in range(people):
        token = f"tok{i:04d}z"
        user = fake.user(f"P{i} {token}", language_code=rng.choice(LANGUAGES))
        actors.append(Actor(user, token, "none", random.Random(seed * 1000 + i)))
    for j, role in enumerate(STAFF_ROLES):
        token = f"stf{j:04d}z"
        user = fake.user(f"S{j} {token}", language_code=rng.choice(("en", "zh")))
        actors.append(Actor(user, token, role.value, random.Random(seed * 1000 + people + j)))
    staff_users = [a.user for a in actors if a.staff]
    north_group = fake.group("North team", members=[*staff_users, actors[0].user, actors[1].user])
    neighbours = fake.group("Neighbours", members=[a.user for a in actors[2:8]])
    for actor in actors:
        if actor.user.id in north_group.chat.members:
            actor.groups.append(north_group)
        if actor.user.id in neighbours.chat.members:
            actor.groups.append(neighbours)
    port = free_port()
    settings = make_settings(
        fake,
        database_url,
        sections={
            "geocoding": {"domain": nominatim.domain, "scheme": "http", "min_delay_seconds": 0},
            "weather": {"forecast_url": meteo.url, "areas": [WUJIN], "mode": "approval"},
            "escalation": {"enabled": False},
            "staff": {"alert_chat_ids": [north_group.id]},
            "help": {"hotline": "0519-12345"},
        },
        mode="webhook",
        webhook={
            "listen": "127.0.0.1",
            "port": port,
            "url": f"http://127.0.0.1:{port}/telegram",
            "secret_token": SECRET,
        },
        overall_max_rate=100_000,  # no pacing: the fake enforces no flood limits here
        group_max_per_minute=100_000,
    )
    harness = BotHarness(settings, fake)
    tracer = Tracer(fake, harness)
    tracer.install(monkeypatch)
    await harness.start()
    async with harness.services.db.session() as session:
        report = await station_import.import_stations(session, station_import.DEMO_FILE)
        assert report.ok
        station = (await session.exec(select(Station).order_by(Station.id))).first()  # type: ignore[arg-type]
        assert station is not None
        north, _ = await team_model.save(session, "North")
        await team_model.set_area(session, north, center=HUTANG, radius_m=30_000)
        await session.commit()
        assert north.id is not None
        await team_model.link_chat(session, north.id, north_group.id)
        for actor in actors:
            if actor.role == Role.KEEPER.value:
                await staff.add(session, actor.user.id, actor.user.first_name, Role.KEEPER, station_id=station.id)
            elif actor.role == Role.ADMIN.value:
                await staff.add(session, actor.user.id, actor.user.first_name, Role.ADMIN)
            elif actor.staff:
                await team_model.add_member(session, north, actor.user.id, actor.user.first_name, Role(actor.role))
        await session.commit()
    return harness, tracer, actors


@pytest.mark.timeout(900)
async def test_fuzz(
    database_url: str,
    fake_telegram: FakeTelegram,
    monkeypatch: pytest.MonkeyPatch,
    nominatim: FakeNominatim,
    meteo: FakeOpenMeteo,
) -> None:
    backend = backend_of(database_url)
    harness, tracer, actors = await start_world(
        database_url, fake_telegram, monkeypatch, nominatim, meteo, people=PEOPLE, seed=SEED
    )
    fuzzer = Fuzzer(fake_telegram, tracer, actors, budget=UPDATES)
    started = time.monotonic()
    try:
        await fuzzer.run()
    finally:
        await harness.stop()
    elapsed = time.monotonic() - started
    delivered = sum(len(runs) for runs in tracer.runs.values())
    errors = len(harness.errors)
    line = (
        f"fuzz: {delivered} updates, {len(actors)} users, {errors} handler errors "
        f"({backend}, seed {SEED}, {elapsed:.0f} s; {len(tracer.reached)}/{len(tracer.defined)} conversation states "
        f"reached; {fuzzer.answered_edits}/{fuzzer.kinds['edited']} edits and "
        f"{fuzzer.answered_in_groups}/{fuzzer.group_messages} group messages answered)"
    )
    conftest.summary_lines[f"fuzz {backend}"] = line
    print(line)
    print(f"  by kind: {dict(fuzzer.kinds.most_common())}")
    print(f"  states never reached: {sorted(map(str, tracer.defined - tracer.reached))}")
    for group in {g.id: g for a in actors for g in a.groups}.values():  # what the bot said in groups (under -s)
        said = Counter(m.content.split("\n")[0][:70] for m in group.messages)
        print(f"  in {group.title!r}: {sum(said.values())} bot messages, e.g. {said.most_common(6)}")
    findings = fuzzer.findings + fuzzer.leaks()
    counts = {kind: sum(1 for f in findings if f.kind == kind) for kind in sorted({f.kind for f in findings})}
    shown: dict[str, int] = {}
    details = []
    for finding in findings:
        shown[finding.kind] = shown.get(finding.kind, 0) + 1
        if shown[finding.kind] <= 12:
            details.append(f"{finding.kind}: {finding.detail}")
    details += [f"any rejection: {r.method} {r.description}" for r in fake_telegram.rejections[:3]]
    details += [f"any handler error: {failing_handler(e)} {type(e).__name__}" for e in harness.errors[:3]]
    assert not findings and not harness.errors and not fake_telegram.rejections, (
        f"{line}\nfindings: {counts}; all rejections: {len(fake_telegram.rejections)}\n  " + "\n  ".join(details)
    )
    assert delivered >= UPDATES, line


# -- regressions: one focused test per defect the fuzz found ------------------------------------------------------


async def test_button_nobody_handles_is_answered(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    """Forged or retired callback data used to get no answer at all: the client's spinner never stopped."""
    ann = fake_telegram.user("Ann")
    await ann.send_command("/help")
    menu = await ann.receive()
    for data in ("ёёё", "wx|s", "\x00", "lan"):
        query = await ann.send_callback(menu.message_id, data)
        assert await ann.callback_answer(query) == ("This button is no longer valid.", True)


@pytest.mark.parametrize("payload", ["station_99999999999999999999", "station_²", "station_0"])
async def test_deep_link_with_an_impossible_station_id_greets(
    bot: BotHarness, fake_telegram: FakeTelegram, payload: str
) -> None:
    """/start station_<30 digits> crashed in the database driver (SQLite: OverflowError; PostgreSQL: int32 range);
    "²" passes str.isdigit() and crashed in int()."""
    ann = fake_telegram.user("Ann")
    await ann.send_command("/start", payload)
    assert (await ann.receive()).content.startswith("Hello, Ann!")


SEARCH_AGAIN = "This button is no longer valid. Please search again."


@pytest.mark.parametrize(
    ("data", "refusal"),
    [
        ("sc|²", SEARCH_AGAIN),
        ("sc|99999999999999999999", SEARCH_AGAIN),
        ("fb|2147483648", SEARCH_AGAIN),
        ("my|show|99999999999999999999", "This request is not available."),
    ],
)
async def test_forged_ids_in_station_and_request_buttons_are_refused(
    bot: BotHarness, fake_telegram: FakeTelegram, data: str, refusal: str
) -> None:
    """The same ids in callback data: a refusal, not a handler error."""
    ann = fake_telegram.user("Ann")
    await ann.send_command("/help")
    query = await ann.send_callback((await ann.receive()).message_id, data)
    assert await ann.callback_answer(query) == (refusal, True)


async def test_typed_address_is_not_logged_by_the_geocoding_library(
    database_url: str, fake_telegram: FakeTelegram, nominatim: FakeNominatim, caplog: pytest.LogCaptureFixture
) -> None:
    """geopy logged every request URL at DEBUG, and the arguments of a retried call at WARNING: the query is what the
    person typed, under the production set-up."""
    caplog.set_level(logging.DEBUG)
    settings = make_settings(
        fake_telegram,
        database_url,
        sections={"geocoding": {"domain": nominatim.domain, "scheme": "http", "min_delay_seconds": 0}},
    )
    harness = BotHarness(settings, fake_telegram)
    await harness.start()
    try:
        ann = fake_telegram.user("Ann")
        await ann.send_command("/find")
        await ann.receive()
        await ann.send_text("Hutang behind Blue Door Laundry")
        await ann.receive()
        nominatim.fail_next = 1  # one retry by geopy's rate limiter
        await ann.send_command("/find")
        await ann.receive()
        await ann.send_text("Changzhou railway station by the Green Laundry")
        await ann.receive()
    finally:
        await harness.stop()
    harness.assert_clean()
    assert nominatim.requests, "the geocoder was never asked: the check would prove nothing"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Laundry" not in logged


async def test_back_tapped_on_a_message_without_buttons_edits_nothing(
    database_url: str, fake_telegram: FakeTelegram
) -> None:
    """A step's Back on a message that has no buttons (a second tap once the first removed them, or forged data)
    asked Telegram to remove buttons that were not there: 400 "message is not modified"."""
    settings = make_settings(fake_telegram, database_url, sections={"weather": {"areas": [WUJIN]}})
    harness = BotHarness(settings, fake_telegram)
    await harness.start()
    try:
        ann = fake_telegram.user("Ann")
        await ann.send_command("/subscribe")
        await ann.receive_all(2)
        await ann.send_command("/help")
        plain = await ann.receive()
        assert not plain.inline_keyboard
        query = await ann.send_callback(plain.message_id, "ws|back")
        await ann.callback_answer(query)
    finally:
        await harness.stop()
    harness.assert_clean()


async def test_toggle_on_an_older_copy_of_the_keyboard_edits_only_when_it_changes(
    database_url: str, fake_telegram: FakeTelegram
) -> None:
    """/subscribe's kinds toggle redrew the keyboard even when the tapped (older) copy already showed the new choice:
    400 "message is not modified". The same pattern is fixed in /request's kinds, /broadcast's areas, the resolve
    step's "what was given" and /patrol's items."""
    settings = make_settings(fake_telegram, database_url, sections={"weather": {"areas": [WUJIN]}})
    harness = BotHarness(settings, fake_telegram)
    await harness.start()
    try:
        ann = fake_telegram.user("Ann")

        def shown(data: str, before: int) -> Callable[[list[BotMessage]], BotMessage | None]:
            return lambda ms: next((m for m in ms[before:] if data in callback_data(m)), None)

        await ann.send_command("/subscribe")
        areas = await ann.wait_until(shown("ws|area|wujin", 0))
        before = len(ann.messages)
        await ann.tap_inline("Wujin", message=areas)
        first = await ann.wait_until(shown("ws|kind|all", before))
        before = len(ann.messages)
        await ann.send_command("/subscribe")  # starting over leaves the first copy of the keyboard in the chat
        areas = await ann.wait_until(shown("ws|area|wujin", before))
        before = len(ann.messages)
        await ann.tap_inline("Wujin", message=areas)
        second = await ann.wait_until(shown("ws|kind|all", before))
        assert first.inline_keyboard == second.inline_keyboard
        for message in (second, first):  # the second tap turns it back: the first copy already shows that
            await ann.callback_answer(await ann.send_callback(message.message_id, "ws|kind|all"))
        assert first.edits == 0 and second.edits == 1
    finally:
        await harness.stop()
    harness.assert_clean()


async def test_refresh_with_nothing_new_edits_nothing(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    """/queue's 🔄 Refresh on an unchanged list (and a station panel button tapped twice) re-sent the same text:
    400 "message is not modified"."""
    cole = fake_telegram.user("Cole")
    async with bot.services.db.session() as session:
        await staff.add(session, cole.id, "Cole", Role.COORDINATOR)
    await cole.send_command("/queue")
    listing = await cole.wait_until(lambda ms: next((m for m in ms if "qu|p|0" in callback_data(m)), None))
    for _ in range(2):
        await cole.callback_answer(await cole.send_callback(listing.message_id, "qu|p|0"))
    assert listing.edits == 0


async def test_status_in_a_group_lists_nothing_there(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    """/status sent in a group listed the sender's requests for help (references, statuses, buttons to their
    timelines) to everyone in it, under a main-menu keyboard meant for the private chat."""
    ann = fake_telegram.user("Ann")
    group = fake_telegram.group("Neighbours", members=[ann])
    async with bot.services.db.session() as session:
        case, _created = await cases.create(
            session, Case(requester_id=ann.id, idempotency_key=uuid.uuid4().hex, categories=["food"])
        )
        await session.commit()
    await ann.send_command("/status", chat=group)
    reply = await group.receive()
    assert reply.text == "Please send this command in a private chat with me."
    assert reply.reply_markup is None  # no buttons to the timeline, no main-menu keyboard for the whole group
    await ann.send_command("/status")
    assert (await ann.receive()).button_texts[0].startswith(str(case.reference))


async def test_list_button_forged_onto_a_map_pin_sends_the_list(bot: BotHarness, fake_telegram: FakeTelegram) -> None:
    """A station-list button (filters, More) with data forged onto a message without text — the venue pin of a
    station card — asked Telegram to edit text that is not there: 400 and a handler error."""
    ann = fake_telegram.user("Ann")
    async with bot.services.db.session() as session:
        assert (await station_import.import_stations(session, station_import.DEMO_FILE)).ok
    await ann.send_command("/start", "station_1")
    pin = await ann.receive(kind="venue")
    before = len(ann.messages)
    await ann.callback_answer(await ann.send_callback(pin.message_id, "nf|31.69964|119.96767|256|0|0"))
    listing = await ann.wait_until(lambda ms: next((m for m in ms[before:] if m.kind == "text"), None))
    assert "nf|" in " ".join(callback_data(listing)) and pin.edits == 0


@pytest.mark.parametrize("data", ["cs|claim|2147483648", "rs|details|2147483648", "ca|2147483648", "qu|o|2147483648"])
async def test_case_ids_beyond_32_bits_are_refused(bot: BotHarness, fake_telegram: FakeTelegram, data: str) -> None:
    """Case buttons with an id above 2³¹−1 crashed on PostgreSQL ("value out of int32 range") in every handler that
    loads a case (card, report card, the requester's answer, the queue) and left the tap unanswered."""
    cole = fake_telegram.user("Cole")
    async with bot.services.db.session() as session:
        await staff.add(session, cole.id, "Cole", Role.COORDINATOR)
    await cole.send_command("/help")
    query = await cole.send_callback((await cole.receive()).message_id, data)
    text, alert = await cole.callback_answer(query)
    assert alert and text
