"""Journey 6 end to end: cold-weather subscriptions, forecast checks against a fake Open-Meteo over HTTP, cold events,
approval and auto mode, personalised alerts per subscriber and language, stand-down, manual broadcasts with preview,
blocked subscribers, quiet hours, a restart mid-broadcast and a provider outage."""

from __future__ import annotations

import asyncio
import csv
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from geopy.distance import geodesic
from opening_hours import OpeningHours  # type: ignore[attr-defined]
from sqlalchemy import update

from bot import weather_jobs
from bot.application import WaystationApplication
from bot.i18n import translator
from bot.sandbox.fake_open_meteo import FakeOpenMeteo
from bot.sandbox.fake_telegram import BotMessage, FakeTelegram, FakeUser
from models import outbox, staff, station_import, weather
from models.outbox import OutboxItem
from models.staff import Role
from tests.conftest import make_settings
from tests.harness import BotHarness

SHANGHAI = ZoneInfo("Asia/Shanghai")
# A Thursday afternoon in January: the cold night ahead starts at 22:00.
FROZEN = datetime(2027, 1, 14, 15, 0, tzinfo=SHANGHAI)
NIGHT = datetime(2027, 1, 14, 22, 0, tzinfo=SHANGHAI)
HUTANG = (31.7160, 119.9585)  # next to the Hutang night warm station (cz-024)
NORTH = (31.7800, 119.9540)  # the north of Wujin, near Nandajie
SARTU = (46.5950, 125.1150)  # Daqing
WUJIN = {
    "key": "wujin",
    "name": "Wujin",
    "names": {"zh_Hans": "武进区"},
    "lat": 31.74,
    "lon": 119.955,
    "polygon": [[31.85, 119.80], [31.85, 120.10], [31.60, 120.10], [31.60, 119.80]],
    "timezone": "Asia/Shanghai",
}
DAQING = {
    "key": "daqing",
    "name": "Daqing",
    "names": {"zh_Hans": "大庆"},
    "lat": 46.59,
    "lon": 125.10,
    "trigger": {"min_temperature_c": -25.0, "apparent_temperature_c": -32.0, "min_hours": 3},
}
HOTLINE = "0519-12345"


@dataclass
class City:
    """The bot with the demo stations, two weather areas, a fake forecast server and a frozen clock."""

    bot: BotHarness
    fake: FakeTelegram
    meteo: FakeOpenMeteo
    bob: FakeUser  # coordinator
    alice: FakeUser  # responder: staff, but may not broadcast
    now: datetime = FROZEN

    @property
    def app(self) -> WaystationApplication:
        assert self.bot.runner is not None
        return self.bot.runner.app

    def set_clock(self, moment: datetime) -> None:
        self.now = moment
        self.bot.services.clock = lambda: self.now
        self.meteo.clock = lambda: self.now

    async def start(self) -> None:
        await self.bot.start()  # the runner arms the weather jobs
        self.set_clock(self.now)

    async def restart(self) -> None:
        await self.bot.restart()
        self.set_clock(self.now)

    async def check(self) -> None:
        await weather_jobs.check_forecasts(self.app)

    def cold_night(self, area: dict[str, Any], temperature: float = -18.0, apparent: float = -26.0) -> None:
        self.meteo.set_weather(area["lat"], area["lon"], NIGHT, 8, temperature=temperature, apparent=apparent, wind=30)

    async def subscribe(
        self,
        user: FakeUser,
        *,
        location: tuple[float, float] | None = None,
        area: str | None = None,
        announcements: bool = False,
        quiet: str = "🔔 No quiet hours",
    ) -> BotMessage:
        await user.send_command("/subscribe")
        await user.receive_all(2)
        if location is not None:
            await user.tap_reply_button(label(user, "📍 Share my location"), location=location)
        else:
            assert area is not None
            await user.tap_inline(area)
        await user.receive()  # saved
        kinds = await user.receive()
        if announcements:
            await user.tap_inline(label(user, "▫️ 📣 All announcements"), message=kinds)
            await user.wait_edit(kinds.message_id)
        await user.tap_inline(label(user, "Next ▶"), message=kinds)
        await user.receive()  # quiet hours
        if quiet.startswith("🌙") or quiet.startswith("🔔"):
            await user.tap_inline(label(user, quiet) if quiet.startswith("🔔") else quiet)
        else:
            await user.send_text(quiet)
        done = await user.receive()
        assert "subscribed" in done.text or "订阅" in done.text, done.text
        return done

    async def subscription(self, user: FakeUser) -> weather.Subscription | None:
        async with self.bot.services.db.session() as session:
            return await weather.get_subscription(session, user.id)

    async def broadcasts(self) -> list[weather.Broadcast]:
        async with self.bot.services.db.session() as session:
            from sqlmodel import select

            return list(await session.exec(select(weather.Broadcast).order_by(weather.Broadcast.id)))

    async def events(self) -> list[weather.ColdEvent]:
        async with self.bot.services.db.session() as session:
            from sqlmodel import select

            return list(await session.exec(select(weather.ColdEvent).order_by(weather.ColdEvent.id)))

    async def wait_done(self, broadcast_id: int | None, timeout: float = 20.0) -> weather.Broadcast:
        """Until the broadcast is finished (everyone sent, failed or blocked) — driven by the real jobs."""
        assert broadcast_id is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            async with self.bot.services.db.session() as session:
                found = await weather.get_broadcast(session, broadcast_id)
            assert found is not None
            if found.status == weather.BroadcastStatus.DONE:
                return found
            if loop.time() > deadline:
                raise AssertionError(f"broadcast {broadcast_id} not done after {timeout}s: {found}")
            await asyncio.sleep(0.05)


def label(user: FakeUser, msgid: str) -> str:
    """A button label as the user sees it (their language)."""
    return translator("zh_Hans" if user.language_code == "zh" else "en").gettext(msgid)


@pytest.fixture
async def meteo() -> AsyncIterator[FakeOpenMeteo]:
    async with FakeOpenMeteo() as server:
        yield server


def city_settings(fake: FakeTelegram, database_url: str, meteo: FakeOpenMeteo, **weather_options: Any) -> Any:
    return make_settings(
        fake,
        database_url,
        sections={
            "weather": {
                "forecast_url": meteo.url,
                "areas": [WUJIN, DAQING],
                "retries": 2,
                "retry_backoff_seconds": 0,
                "timeout_seconds": 2,
                "report_interval_seconds": 0.1,
                "mode": "auto",
                **weather_options,
            },
            "help": {"hotline": HOTLINE},
        },
    )


@pytest.fixture
async def city_factory(
    database_url: str, fake_telegram: FakeTelegram, meteo: FakeOpenMeteo, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setattr(weather_jobs, "STARTUP_DELAY", 3600.0)  # the tests run the checks themselves
    made: list[City] = []

    async def make(**weather_options: Any) -> City:
        settings = city_settings(fake_telegram, database_url, meteo, **weather_options)
        harness = BotHarness(settings, fake_telegram)
        bob, alice = fake_telegram.user("Bob"), fake_telegram.user("Alice")
        city = City(harness, fake_telegram, meteo, bob, alice)
        await city.start()
        made.append(city)
        async with harness.services.db.session() as session:
            report = await station_import.import_stations(session, station_import.DEMO_FILE)
            assert report.ok
            await staff.add(session, bob.id, "Bob Coordinator", Role.COORDINATOR)
            await staff.add(session, alice.id, "Alice Responder", Role.RESPONDER)
        return city

    try:
        yield make
    finally:
        for city in made:
            await city.bot.stop()
        for city in made:
            city.bot.assert_clean()


@pytest.fixture
async def city(city_factory: Callable[..., Any]) -> City:
    made: City = await city_factory()
    return made


# --- helpers computed independently of the bot ------------------------------------------------------------------


def demo_rows() -> list[dict[str, str]]:
    with station_import.DEMO_FILE.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def warm_expected(lat: float, lon: float, starts: datetime, ends: datetime, k: int = 3) -> list[dict[str, str]]:
    """Stations with heating, open (status) and open at some hour of [starts, ends), nearest first: from the CSV,
    opening-hours-py and geopy, not from the bot's code."""
    found = []
    for row in demo_rows():
        if "heating" not in row["amenities"].split(";") or row["status"] != "open" or not row["opening_hours"]:
            continue
        hours = OpeningHours(row["opening_hours"], timezone=SHANGHAI)
        moments = [starts + timedelta(hours=n) for n in range(int((ends - starts).total_seconds() // 3600))]
        if any(hours.is_open(m.astimezone(SHANGHAI)) for m in moments):
            distance = geodesic((lat, lon), (float(row["lat"]), float(row["lon"]))).meters
            if distance <= 15_000:
                found.append((distance, row["id"], row))
    return [row for _, _, row in sorted(found)[:k]]


def station_lines(text: str) -> list[str]:
    return re.findall(r"^\d\. (.+?) — ", text, flags=re.MULTILINE)


# --- subscriptions ------------------------------------------------------------------------------------------------


async def test_subscribe_edit_and_unsubscribe_with_bad_input_and_a_restart(city: City) -> None:
    ann = city.fake.user("Ann")
    await ann.send_command("/subscribe")
    ask, areas = await ann.receive_all(2)
    assert "Where should I watch the weather" in ask.text
    assert areas.button_texts[:2] == ["Wujin", "Daqing"]

    # Bad input at the first step: a sticker, a far-away place, a 10,000-character text, a forged button.
    await ann.send_sticker()
    assert "share your location" in (await ann.receive()).text
    await ann.receive_all(2)  # the step again
    await ann.send_location(39.9, 116.4)  # Beijing: outside both areas
    far = await ann.receive()
    assert "outside the areas I check (Wujin, Daqing)" in far.text
    await ann.send_text("x" * 10_000)
    assert "share your location" in (await ann.receive()).text
    forged = await ann.send_callback(areas.message_id, "ws|area|nowhere")
    assert "no longer valid" in (await ann.callback_answer(forged))[0]

    # A restart in the middle keeps the step.
    await city.restart()
    await ann.tap_reply_button("📍 Share my location", location=HUTANG)
    assert (await ann.receive()).text == "📍 Saved: Wujin."
    kinds = await ann.receive()
    assert kinds.button_texts[:2] == ["✅ ❄️ Cold-weather alerts", "▫️ 📣 All announcements"]
    await ann.tap_inline("✅ ❄️ Cold-weather alerts", message=kinds)
    await ann.wait_edit(kinds.message_id)
    query = await ann.tap_inline("Next ▶", message=kinds)
    assert "at least one" in (await ann.callback_answer(query))[0]
    await ann.tap_inline("▫️ 📣 All announcements", message=kinds)
    await ann.wait_edit(kinds.message_id)
    await ann.tap_inline("Next ▶", message=kinds)
    assert "Quiet hours?" in (await ann.receive()).text
    await ann.send_text("25:00 till late")
    assert "like 22:30-06:30" in (await ann.receive()).text
    await ann.send_text("22:30-06:30")
    done = await ann.receive()
    assert "You are subscribed" in done.text
    assert "Wujin, near the location you shared" in done.text and "🌙 Quiet hours: 22:30–06:30" in done.text
    stored = await city.subscription(ann)
    assert stored is not None and stored.active and stored.area_key == "wujin"
    assert (stored.lat, stored.lon) == (31.716, 119.959)  # kept to ~100 m
    assert (stored.cold_alerts, stored.announcements, stored.quiet_start, stored.quiet_end) == (False, True, 1350, 390)
    assert stored.language == "en"

    # /subscribe again: the settings, each changeable.
    await ann.send_command("/subscribe")
    menu = await ann.receive()
    assert "Your cold-weather alerts" in menu.text and "all announcements" in menu.text
    await ann.tap_inline("🌙 Quiet hours", message=menu)
    await ann.receive()
    await ann.tap_inline("🔔 No quiet hours")
    menu = await ann.receive()
    assert "🔔 No quiet hours" in menu.text
    await ann.tap_inline("📍 Place", message=menu)
    await ann.receive_all(2)
    await ann.tap_inline("Daqing")
    await ann.receive()
    menu = await ann.receive()
    assert "📍 Daqing" in menu.text and "near the location" not in menu.text
    stored = await city.subscription(ann)
    assert stored is not None and (stored.area_key, stored.lat, stored.quiet_start) == ("daqing", None, None)
    await ann.tap_inline("✅ Done", message=menu)
    assert "stay as they are" in (await ann.receive()).text

    # One step to stop; again: nothing to stop.
    await ann.send_command("/unsubscribe")
    assert "You are unsubscribed" in (await ann.receive()).text
    assert await city.subscription(ann) is None
    await ann.send_command("/unsubscribe")
    assert "You are not subscribed" in (await ann.receive()).text


# --- cold spells, auto mode, personalised alerts -------------------------------------------------------------------


async def test_a_cold_spell_alerts_each_subscriber_once_with_their_own_warm_stations(city: City) -> None:
    ann = city.fake.user("Ann")  # English, shares her location in Hutang
    li = city.fake.user("Li", language_code="zh")  # Chinese, in the north of Wujin
    carl = city.fake.user("Carl")  # picks the area, no location
    dan = city.fake.user("Dan")  # in Daqing: not this area's alert
    await city.subscribe(ann, location=HUTANG)
    await city.subscribe(li, location=NORTH)
    await city.subscribe(carl, area="Wujin")
    await city.subscribe(dan, location=SARTU)

    city.cold_night(WUJIN)
    for _ in range(3):  # every check sees the same spell: one event, one alert
        await city.check()
    events = await city.events()
    assert [(e.area_key, e.is_open) for e in events] == [("wujin", True)]
    assert events[0].starts_at == NIGHT and events[0].ends_at == NIGHT + timedelta(hours=8)
    assert (events[0].min_temperature_c, events[0].min_apparent_c) == (-18.0, -26.0)
    (alert,) = await city.broadcasts()
    assert (alert.kind, alert.urgent, alert.area_keys) == ("alert", True, ["wujin"])
    done = await city.wait_done(alert.id)
    assert (done.recipients, done.sent, done.failed, done.blocked) == (3, 3, 0, 0)

    ends = NIGHT + timedelta(hours=8)
    for user, where, english in ((ann, HUTANG, True), (li, NORTH, False)):
        (message,) = [m for m in user.messages if "❄️" in m.text and "·" in m.text.splitlines()[0]]
        expected = warm_expected(*where, NIGHT, ends)
        assert expected, "the demo data has warm stations open tonight near both"
        names = [(row["name_en"] or row["name"]) if english else row["name"] for row in expected]
        assert station_lines(message.text) == names
        assert message.inline_keyboard == [
            [{"text": label(user, "📍 Nearest warm station"), "callback_data": "wx|near"}],
            [{"text": label(user, "👀 Report someone in the cold"), "callback_data": "report|start"}],
        ]
        assert HOTLINE in message.text
    ann_alert = next(m for m in ann.messages if "Cold-weather alert" in m.text)
    assert ann_alert.text.splitlines()[0] == "❄️ Cold-weather alert · Wujin"
    assert "Thu, Jan 14 22:00 – Fri, Jan 15 06:00" in ann_alert.text
    assert "🌡 down to -18 °C · 🥶 feels like -26 °C · 💨 wind up to 30 km/h" in ann_alert.text
    assert "Warm stations open near you" in ann_alert.text
    assert "Hutang Night Warm Station" in station_lines(ann_alert.text)[0]
    li_alert = next(m for m in li.messages if "❄️" in m.text and "武进区" in m.text)
    zh = translator("zh_Hans")
    assert li_alert.text.splitlines()[0] == zh.gettext("❄️ <b>Cold-weather alert · {area}</b>").format(
        area="武进区"
    ).replace("<b>", "").replace("</b>", "")
    carl_alert = next(m for m in carl.messages if "Cold-weather alert" in m.text)
    assert "Warm stations open in Wujin" in carl_alert.text
    centre = warm_expected(WUJIN["lat"], WUJIN["lon"], NIGHT, ends)  # type: ignore[arg-type]
    assert station_lines(carl_alert.text) == [row["name_en"] or row["name"] for row in centre]
    assert not any("Cold-weather alert" in m.text for m in dan.messages)
    for user in (ann, li, carl):
        assert len([m for m in user.messages if m.inline_keyboard and "wx|near" in str(m.inline_keyboard)]) == 1

    # The coordinator's card followed the delivery.
    card = await city.bob.wait_until(lambda ms: next((m for m in ms if "Finished" in m.text), None))
    assert "❄️ Cold-weather alert · Wujin" in card.text and "📬 sent 3 of 3" in card.text

    # "📍 Nearest warm station": stations with heating near where Ann subscribed.
    await ann.tap_inline("📍 Nearest warm station", message=ann_alert)
    listing = await ann.wait_until(lambda ms: next((m for m in ms if "Nearest care stations" in m.text), None))
    assert "Only: 🔥 Heating" in listing.text and "Hutang Night Warm Station" in listing.text


async def test_approval_flow_edit_approve_dismiss_and_refusals(city_factory: Callable[..., Any]) -> None:
    city: City = await city_factory(mode="approval")
    group = city.fake.group("Relief coordinators", members=[city.bob, city.alice])
    city.bot.settings.weather.coordinator_chat_ids.append(group.id)
    ann = city.fake.user("Ann")
    dan = city.fake.user("Dan")
    await city.subscribe(ann, location=HUTANG)
    await city.subscribe(dan, location=SARTU)

    city.cold_night(WUJIN)
    await city.check()
    card = await group.receive()
    assert card.text.startswith("❄️ Cold-weather alert · Wujin")
    assert "Waiting for approval. It will go to 1 subscriber." in card.text
    assert "Hutang Night Warm Station" in card.text  # the draft, as at the centre of the area
    assert card.button_texts == ["✅ Approve and send", "✏️ Edit note", "🗑 Dismiss"]
    assert not any("Cold-weather alert" in m.text for m in ann.messages)

    # A responder is not a coordinator; forged data is refused.
    refused = await city.alice.tap_inline("✅ Approve and send", message=card, chat=group)
    assert "only coordinators" in (await city.alice.callback_answer(refused))[0]
    forged = await city.bob.send_callback(card.message_id, "wb|approve|99999", chat=group)
    assert "not valid" in (await city.bob.callback_answer(forged))[0]

    # Edit: the note is asked for privately, and the card shows the new draft.
    await city.bob.tap_inline("✏️ Edit note", message=card, chat=group)
    ask = await city.bob.receive()
    assert "Send the note to add to this alert" in ask.text
    await city.bob.send_sticker()
    assert "type the note as text" in (await city.bob.receive()).text
    await city.bob.send_text("Extra beds at the railway station <b>tonight</b> & tomorrow")
    assert "Note saved" in (await city.bob.receive()).text
    edited = await group.wait_edit(card.message_id)
    assert "📝 Extra beds at the railway station <b>tonight</b> & tomorrow" in edited.text

    await city.bob.tap_inline("✅ Approve and send", message=card, chat=group)
    (alert,) = await city.broadcasts()
    done = await city.wait_done(alert.id)
    assert (done.status, done.decided_by, done.sent) == ("done", city.bob.id, 1)
    message = next(m for m in ann.messages if "Cold-weather alert" in m.text)
    assert "📝 Extra beds at the railway station <b>tonight</b> & tomorrow" in message.text  # escaped, shown as typed
    final = await group.wait_until(lambda ms: next((m for m in ms if "Finished" in m.text), None))
    assert "✅ Approved by Bob Coordinator." in final.text and final.button_texts == []
    again = await city.bob.send_callback(card.message_id, f"wb|approve|{alert.id}", chat=group)
    assert "already approved" in (await city.bob.callback_answer(again))[0]

    # Daqing's cold night: dismissed, so nothing is sent there.
    city.cold_night(DAQING, temperature=-30.0, apparent=-38.0)
    await city.check()
    daqing_card = await group.wait_until(lambda ms: next((m for m in ms if "Daqing" in m.text), None))
    await city.bob.tap_inline("🗑 Dismiss", message=daqing_card, chat=group)
    dismissed = await group.wait_edit(daqing_card.message_id)
    assert "🗑 Dismissed by Bob Coordinator." in dismissed.text and dismissed.button_texts == []
    await asyncio.sleep(0.5)  # the pump and progress jobs run several times meanwhile
    assert not any("Cold-weather alert" in m.text for m in dan.messages)
    assert [b.status for b in await city.broadcasts()] == ["done", "dismissed"]


async def test_stand_down_when_the_spell_ends_and_an_unapproved_alert_expires(city_factory: Callable[..., Any]) -> None:
    city: City = await city_factory(mode="auto")
    ann = city.fake.user("Ann")
    await city.subscribe(ann, location=HUTANG)
    city.cold_night(WUJIN)
    await city.check()
    (alert,) = await city.broadcasts()
    await city.wait_done(alert.id)

    # Still cold at 23:00: the event goes on. The next morning it is clear: stand-down.
    city.set_clock(NIGHT + timedelta(hours=1))
    await city.check()
    assert [e.is_open for e in await city.events()] == [True]
    city.set_clock(NIGHT + timedelta(hours=10))
    await city.check()
    (event,) = await city.events()
    assert not event.is_open and event.standdown_broadcast_id is not None
    standdown = await city.wait_done(event.standdown_broadcast_id)
    assert (standdown.kind, standdown.urgent, standdown.sent) == ("standdown", False, 1)
    over = next(m for m in ann.messages if "over" in m.text)
    assert over.text.startswith("☀️ Cold-weather alert over · Wujin")
    assert over.button_texts == ["👀 Report someone in the cold"]

    # Another night, in approval mode, nobody approves before it is over: the card says so, nothing is sent.
    city.bot.settings.weather.mode = "approval"
    city.meteo.clear()
    next_night = NIGHT + timedelta(days=2)
    city.meteo.set_weather(WUJIN["lat"], WUJIN["lon"], next_night, 6, temperature=-20, apparent=-28)
    await city.check()
    events = await city.events()
    assert len(events) == 2 and events[1].is_open
    card = await city.bob.wait_until(lambda ms: next((m for m in ms if "Waiting for approval" in m.text), None))
    city.meteo.clear()
    await city.check()
    expired = await city.bob.wait_edit(card.message_id)
    assert "Not sent: the cold spell ended before anyone approved it." in expired.text
    assert [b.status for b in await city.broadcasts()] == ["done", "done", "dismissed"]
    assert len([m for m in ann.messages if "over" in m.text]) == 1  # no stand-down for what was never sent


# --- manual broadcasts, blocked subscribers, quiet hours ------------------------------------------------------------


async def test_manual_broadcast_with_preview_reaches_the_right_subscribers(city: City) -> None:
    ann = city.fake.user("Ann")  # Wujin, all announcements
    carl = city.fake.user("Carl")  # Wujin, cold alerts only
    dan = city.fake.user("Dan")  # Daqing, all announcements
    await city.subscribe(ann, location=HUTANG, announcements=True)
    await city.subscribe(carl, area="Wujin")
    await city.subscribe(dan, location=SARTU, announcements=True)

    await city.alice.send_command("/broadcast")
    assert "only coordinators" in (await city.alice.receive()).text

    bob = city.bob
    await bob.send_command("/broadcast")
    assert "New announcement" in (await bob.receive()).text
    await bob.send_sticker()
    assert "type the announcement as text" in (await bob.receive()).text
    await bob.receive()  # the step again
    text = "Free hot soup at every station <tonight> & tomorrow."
    await bob.send_text(text)
    areas = await bob.receive()
    assert "Who should get it?" in areas.text
    await bob.tap_inline("Wujin", message=areas)
    await bob.wait_edit(areas.message_id)
    assert areas.button_texts[0] == "✅ Wujin"
    await bob.tap_inline("Next ▶", message=areas)
    heading, preview, summary = await bob.receive_all(3)
    assert heading.text == "Preview — subscribers will get exactly this:"
    assert preview.text == f"📣 Announcement from the care stations\n\n{text}"
    assert "It will go to 1 subscriber in: Wujin." in summary.text
    await bob.tap_inline("🔔 Make it urgent", message=summary)
    _, _, summary = await bob.receive_all(3)
    assert "It will go to 2 subscribers in: Wujin." in summary.text and "Urgent: yes" in summary.text
    send_data = summary.inline_keyboard[0][0]["callback_data"]
    send = await bob.tap_inline("✅ Send now", message=summary)
    await bob.callback_answer(send)
    sending = await bob.receive()
    assert "Sending" in sending.text
    (sent,) = await city.broadcasts()
    done = await city.wait_done(sent.id)
    assert (done.kind, done.urgent, done.sent, done.area_keys) == ("manual", True, 2, ["wujin"])
    for user in (ann, carl):
        assert [m.text for m in user.messages if m.text.startswith("📣")] == [preview.text]
        assert next(m for m in user.messages if m.text.startswith("📣")).html.count("&lt;tonight&gt;") == 1
    assert not any(m.text.startswith("📣") for m in dan.messages)
    report = await bob.wait_until(lambda ms: next((m for m in ms if "Finished" in m.text), None))
    assert "📣 Announcement · Wujin" in report.text and "📬 sent 2 of 2" in report.text
    again = await bob.send_callback(summary.message_id, send_data)
    assert "already sent" in (await bob.callback_answer(again))[0]
    assert len(await city.broadcasts()) == 1


async def test_blocked_subscribers_are_deactivated(city: City) -> None:
    city.bot.expected_rejections.add("Forbidden: bot was blocked by the user")
    ann, li = city.fake.user("Ann"), city.fake.user("Li", language_code="zh")
    await city.subscribe(ann, location=HUTANG)
    await city.subscribe(li, location=NORTH)
    city.fake.block(li)
    city.cold_night(WUJIN)
    await city.check()
    (alert,) = await city.broadcasts()
    done = await city.wait_done(alert.id)
    assert (done.sent, done.blocked, done.failed) == (1, 1, 0)
    stopped = await city.subscription(li)
    assert stopped is not None and (stopped.active, stopped.inactive_reason) == (False, "blocked")
    card = await city.bob.wait_until(lambda ms: next((m for m in ms if "Finished" in m.text), None))
    assert "⛔ blocked 1" in card.text

    # The next broadcast does not try them again.
    calls_before = len([c for c in city.fake.calls_to("sendMessage") if c.params.get("chat_id") == str(li.id)])
    async with city.bot.services.db.session() as session:
        manual, _ = await weather.create_broadcast(
            session, weather.Broadcast(kind="manual", text="Soup tonight", urgent=True, status="sending")
        )
        await session.commit()
    done = await city.wait_done(manual.id)
    assert (done.recipients, done.sent) == (1, 1)
    calls_after = len([c for c in city.fake.calls_to("sendMessage") if c.params.get("chat_id") == str(li.id)])
    assert calls_after == calls_before


async def test_quiet_hours_urgent_alerts_arrive_silently_announcements_wait(city: City) -> None:
    ann = city.fake.user("Ann")
    await city.subscribe(ann, location=HUTANG, announcements=True, quiet="14:00-18:00")  # it is 15:00
    city.cold_night(WUJIN)
    await city.check()
    (alert,) = await city.broadcasts()
    await city.wait_done(alert.id)
    alert_call = next(
        c
        for c in city.fake.calls_to("sendMessage")
        if c.params.get("chat_id") == str(ann.id) and "wx|near" in str(c.params)
    )
    assert alert_call.params.get("disable_notification") in (True, "true", "True")

    async with city.bot.services.db.session() as session:
        notice, _ = await weather.create_broadcast(
            session,
            weather.Broadcast(
                kind="manual", text="Library open late", urgent=False, status="sending", report_chats=[city.bob.id]
            ),
        )
        await session.commit()
    card = await city.bob.wait_until(lambda ms: next((m for m in ms if "waiting for quiet hours 1" in m.text), None))
    assert "📣 Announcement" in card.text
    assert not any("Library open late" in m.text for m in ann.messages)
    async with city.bot.services.db.session() as session:
        connection = await session.connection()
        table = OutboxItem.__table__  # type: ignore[attr-defined]
        row = (
            await connection.execute(table.select().where(table.c.dedupe_key == f"broadcast:{notice.id}:to:{ann.id}"))
        ).one()
        wait = row.not_before - outbox.utcnow()
        assert timedelta(hours=2, minutes=55) < wait <= timedelta(hours=3)  # until 18:00 on the services clock
        # Time passes: the quiet hours are over.
        await connection.execute(
            update(table).where(table.c.id == row.id).values(not_before=None, next_attempt_at=outbox.utcnow())
        )
        await session.commit()
    city.bot.services.wake_outbox()
    done = await city.wait_done(notice.id)
    assert done.sent == 1
    assert any("Library open late" in m.text for m in ann.messages)


# --- a restart mid-broadcast, a provider outage --------------------------------------------------------------------


async def test_restart_mid_broadcast_sends_everyone_exactly_once(city_factory: Callable[..., Any]) -> None:
    city: City = await city_factory()
    city.bot.settings.telegram.overall_max_rate = 60.0  # about four seconds for everyone: time to restart midway
    people = [city.fake.user(f"P{i}", language_code="zh" if i % 3 == 0 else "en") for i in range(240)]
    async with city.bot.services.db.session() as session:
        for i, person in enumerate(people):
            await weather.save_subscription(
                session,
                person.id,
                language="zh_Hans" if i % 3 == 0 else "en",
                area_key="wujin",
                lat=31.70 + (i % 20) * 0.005,
                lon=119.93 + (i // 20) * 0.005,
                cold_alerts=True,
                announcements=False,
                quiet_start=None,
                quiet_end=None,
            )
    await city.restart()  # the rate limiter is built at start-up
    city.cold_night(WUJIN)
    await city.check()
    (alert,) = await city.broadcasts()

    midway_reached = asyncio.Event()

    def on_change(_chat_id: int) -> None:
        if sum(1 for p in people if p.messages) >= 60:
            midway_reached.set()

    city.fake.add_listener(on_change)
    await asyncio.wait_for(midway_reached.wait(), timeout=20)
    async with city.bot.services.db.session() as session:
        midway = await weather.get_broadcast(session, alert.id)
    assert midway is not None and not midway.fanned_out, "the restart must come while the fan-out is running"
    await city.restart()
    done = await city.wait_done(alert.id, timeout=30)
    assert (done.recipients, done.sent, done.failed) == (240, 240, 0)
    counts = [len([m for m in p.messages if "❄️" in m.text]) for p in people]
    assert counts == [1] * 240, f"duplicates: {sum(c > 1 for c in counts)}, losses: {counts.count(0)}"


async def test_provider_outage_is_retried_and_reported(city: City) -> None:
    bob = city.bob
    # Two failures, then an answer: retried within the check, nobody is bothered.
    city.meteo.fail(2, "drop")
    await city.check()
    assert [r.status for r in city.meteo.requests] == [0, 0, 200, 200]  # Wujin: 2 dropped + 1; Daqing: 1
    assert not bob.messages

    # An outage: every attempt fails. Wujin's forecast is not stale yet (fetched just now): no notice.
    city.meteo.requests.clear()
    city.meteo.fail(3, "500")
    await city.check()
    assert [r.status for r in city.meteo.requests] == [500, 500, 500, 200]
    async with city.bot.services.db.session() as session:
        row = await weather.get_forecast(session, "wujin")
    assert row is not None and (row.failures, row.last_error) == (1, "server_error:500")
    assert not bob.messages

    # Thirteen hours later it still fails: coordinators are told, once.
    city.set_clock(FROZEN + timedelta(hours=13))
    city.meteo.fail(6, "500")
    await city.check()
    notices = await bob.receive_all(2)
    assert {n.text.splitlines()[0] for n in notices} == {
        "⚠️ No fresh forecast for Wujin",
        "⚠️ No fresh forecast for Daqing",
    }
    assert "has not answered since Thu, Jan 14 15:00 (server_error:500)" in notices[0].text
    city.meteo.fail(6, "garbage")
    await city.check()
    await asyncio.sleep(0.3)
    assert len(bob.messages) == 2

    # It answers again: coordinators hear that too.
    await city.check()
    back = await bob.receive_all(2)
    assert {m.text for m in back} == {
        "✅ Forecasts for Wujin are coming in again.",
        "✅ Forecasts for Daqing are coming in again.",
    }


async def test_start_offers_cold_alerts_once_and_the_nearest_button_without_a_location(
    city_factory: Callable[..., Any],
) -> None:
    city: City = await city_factory()
    eve = city.fake.user("Eve")
    await eve.send_command("/start")
    hello, offer = await eve.receive_all(2)
    assert hello.text.startswith("Hello, Eve!")
    assert "Want a message when a cold night is coming" in offer.text
    assert offer.button_texts == ["🔔 Get cold-weather alerts"]
    await eve.send_command("/start")
    await eve.receive()
    await asyncio.sleep(0.3)
    assert len(eve.messages) == 3  # offered once only

    await eve.tap_inline("🔔 Get cold-weather alerts", message=offer)
    ask, _ = await eve.receive_all(2)
    assert "Where should I watch the weather" in ask.text
    await eve.tap_inline("Wujin")
    await eve.receive()
    kinds = await eve.receive()
    await eve.tap_inline("Next ▶", message=kinds)
    await eve.receive()
    await eve.tap_inline("🌙 22:00–07:00")
    assert "You are subscribed" in (await eve.receive()).text

    # "📍 Nearest warm station" on an old alert: Eve gave no location, so the area's centre is used.
    city.cold_night(WUJIN)
    await city.check()
    message = await eve.receive()
    assert "Warm stations open in Wujin" in message.text
    await eve.tap_inline("📍 Nearest warm station", message=message)
    listing = await eve.receive()
    assert "Nearest care stations" in listing.text and "Only: 🔥 Heating" in listing.text

    # Without a subscription the button asks for a location instead.
    await eve.send_command("/unsubscribe")
    await eve.receive()
    await eve.tap_inline("📍 Nearest warm station", message=message)
    assert "Share your location" in (await eve.receive()).text
