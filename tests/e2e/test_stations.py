"""Journey 1 end to end: nearest stations, filters, cards, venues, typed places, staff updates, wrong-info reports."""

from __future__ import annotations

import csv
import re
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from geopy.distance import geodesic

from bot.sandbox.fake_nominatim import FakeNominatim
from bot.sandbox.fake_telegram import BotMessage, FakeTelegram, FakeUser
from models import staff, station_import, stations
from models.staff import Role
from tests.conftest import make_settings
from tests.harness import BotHarness

# A Wednesday night in Changzhou: overnight stations are open, day stations closed until tomorrow.
FROZEN = datetime(2026, 11, 25, 23, 30, tzinfo=ZoneInfo("Asia/Shanghai"))
HUTANG = (31.7170, 119.9580)


def demo_rows() -> list[dict[str, str]]:
    with station_import.DEMO_FILE.open(encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def expected_order(lat: float, lon: float, *, amenity: str | None = None) -> list[str]:
    """The demo stations by geodesic distance, computed independently of the bot (closed ones excluded)."""
    rows = [r for r in demo_rows() if r["status"] != "closed"]
    if amenity:
        rows = [r for r in rows if amenity in r["amenities"].split(";")]
    rows.sort(key=lambda r: (geodesic((lat, lon), (float(r["lat"]), float(r["lon"]))).meters, r["id"]))
    return [r["id"] for r in rows]


def english_name(station_id: str) -> str:
    row = next(r for r in demo_rows() if r["id"] == station_id)
    return row["name_en"] or row["name"]


def station_buttons(message: BotMessage) -> list[str]:
    return [b for b in message.button_texts if re.match(r"^\d+\. ", b)]


@pytest.fixture
async def nominatim() -> AsyncIterator[FakeNominatim]:
    async with FakeNominatim() as server:
        yield server


@pytest.fixture
async def city(database_url: str, fake_telegram: FakeTelegram, nominatim: FakeNominatim) -> AsyncIterator[BotHarness]:
    """The bot with the demo stations, a frozen clock and the fake geocoder."""
    settings = make_settings(
        fake_telegram,
        database_url,
        sections={"geocoding": {"domain": nominatim.domain, "scheme": "http", "min_delay_seconds": 0}},
    )
    harness = BotHarness(settings, fake_telegram)
    await harness.start()
    async with harness.services.db.session() as session:
        report = await station_import.import_stations(session, station_import.DEMO_FILE)
    assert report.ok and report.created == 40
    harness.services.clock = lambda: FROZEN
    try:
        yield harness
    finally:
        await harness.stop()
    harness.assert_clean()


async def station_id(harness: BotHarness, external_id: str) -> int:
    async with harness.services.db.session() as session:
        station = await stations.get_by_external_id(session, external_id)
    assert station is not None and station.id is not None
    return station.id


async def search_from(user: FakeUser, lat: float, lon: float) -> BotMessage:
    await user.send_location(lat, lon)
    return await user.receive()


async def test_location_gives_nearest_five_in_geodesic_order(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    courier = fake_telegram.user("Courier")
    reply = await search_from(courier, *HUTANG)
    expected = expected_order(*HUTANG)[:5]
    assert station_buttons(reply) == [f"{i}. {english_name(sid)}" for i, sid in enumerate(expected, 1)]
    assert reply.text.startswith("Nearest care stations")
    assert "More ▶" in reply.button_texts


async def test_open_states_for_a_frozen_clock(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    courier = fake_telegram.user("Courier")
    reply = await search_from(courier, 31.7155, 119.9600)  # beside the riders' corner (18:00-08:00)
    text = reply.text
    assert "Huimin Mart Riders' Corner" in text
    assert re.search(r"Huimin Mart Riders' Corner — \d+ m\n\s+🟢 open · closes tomorrow 08:00", text)
    assert re.search(r"Hutang Night Warm Station — \d+ m\n\s+🟢 open · closes tomorrow 07:00", text)
    assert re.search(
        r"Hutang Outdoor Workers' Station \(Renmin Rd\) — \d+ m\n\s+🔴 closed · opens tomorrow 07:00", text
    )
    # Temporarily closed with its notice; unknown hours say so (Sanjing fridge has no hours).
    reply = await search_from(courier, 31.7119, 119.9535)
    assert re.search(r"Good Neighbour Noodles Free Meals — \d+ m\n\s+⛔ temporarily closed: ", reply.text)
    reply = await search_from(courier, 31.8125, 119.9818)
    assert re.search(r"Sanjing Community Fridge — \d+ m\n\s+⚪ hours unknown", reply.text)
    # The closed-for-good station never appears.
    assert "Heping Rd" not in (await search_from(courier, 31.7748, 119.9627)).text


async def test_filters_toggle_in_place_and_more_pages(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    courier = fake_telegram.user("Courier")
    reply = await search_from(courier, *HUTANG)
    await courier.tap_inline("🔥 Heating", message=reply)
    edited = await courier.wait_edit(reply.message_id)
    assert "Only: 🔥 Heating" in edited.text
    heated = expected_order(*HUTANG, amenity="heating")[:5]
    assert station_buttons(edited) == [f"{i}. {english_name(sid)}" for i, sid in enumerate(heated, 1)]
    assert "✓ 🔥 Heating" in edited.button_texts

    await courier.tap_inline("🟢 Open now", message=edited)
    edited = await courier.wait_edit(reply.message_id)
    assert "Only: 🔥 Heating, 🟢 Open now" in edited.text
    assert "closed" not in edited.text.split("Only:")[1]

    await courier.tap_inline("✓ 🔥 Heating", message=edited)
    await courier.tap_inline("✓ 🟢 Open now", message=await courier.wait_edit(reply.message_id))
    plain = await courier.wait_edit(reply.message_id)
    assert "Only:" not in plain.text
    await courier.tap_inline("More ▶", message=plain)
    second = await courier.wait_edit(reply.message_id)
    expected = expected_order(*HUTANG)[5:10]
    assert station_buttons(second) == [f"{i}. {english_name(sid)}" for i, sid in enumerate(expected, 6)]
    assert "◀ Nearer" in second.button_texts


async def test_second_tap_on_same_button_is_harmless(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    courier = fake_telegram.user("Courier")
    reply = await search_from(courier, *HUTANG)
    data = next(b["callback_data"] for row in reply.inline_keyboard for b in row if b["text"] == "🔥 Heating")
    await courier.send_callback(reply.message_id, data)
    await courier.wait_edit(reply.message_id)
    query = await courier.send_callback(reply.message_id, data)  # an old button tapped again
    await courier.callback_answer(query)
    await courier.send_command("/help")
    await courier.receive()


async def test_card_venue_and_deep_link(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    courier = fake_telegram.user("Courier")
    reply = await search_from(courier, 31.7186, 119.9562)
    await courier.tap_inline("1. Hutang Outdoor Workers' Station (Renmin Rd)", message=reply)
    card = await courier.receive()
    venue = await courier.receive(kind="venue")
    assert card.text.startswith("Hutang Outdoor Workers' Station (Renmin Rd)\n湖塘镇户外劳动者服务站（人民中路）")
    for part in ("🕒 Hours: Mo-Su 07:00-22:00", "📍 Address:", "📞 Phone: 0519-", "♨️ Hot water", "🔥 Heating"):
        assert part in card.text
    assert "🧭 Directions" in card.button_texts and "✏️ Report wrong info" in card.button_texts
    assert "🛠 Update status (staff)" not in card.button_texts
    assert (venue.latitude, venue.longitude) == pytest.approx((31.7186, 119.9562))
    assert venue.title == "Hutang Outdoor Workers' Station (Renmin Rd)"

    sid = await station_id(city, "cz-001")
    assert f"https://t.me/waystation_test_bot?start=station_{sid}" in card.text
    reader = fake_telegram.user("李", language_code="zh")
    await reader.send_command("/start", args=f"station_{sid}")
    card_zh = await reader.receive()
    assert card_zh.text.startswith("湖塘镇户外劳动者服务站（人民中路）")
    assert "🕒 开放时间：Mo-Su 07:00-22:00" in card_zh.text
    assert (await reader.receive(kind="venue")).title == "湖塘镇户外劳动者服务站（人民中路）"


async def test_typed_address_is_geocoded_and_cached(
    city: BotHarness, fake_telegram: FakeTelegram, nominatim: FakeNominatim
) -> None:
    li = fake_telegram.user("Li", language_code="zh")
    await li.send_command("/find")
    assert "您在哪里？" in (await li.receive()).text
    await li.send_sticker()
    assert "请用下方按钮发送您的位置" in (await li.receive()).text
    await li.send_text("火星基地")
    assert "没有找到这个地点" in (await li.receive()).text
    await li.send_text("湖塘镇")
    reply = await li.receive()
    assert "📍 位于 湖塘镇, 武进区" in reply.text
    assert station_buttons(reply)[0].startswith("1. ")
    requests = len(nominatim.requests)

    await li.send_command("/find")
    await li.receive()
    await li.send_text("  湖塘镇 ")  # the same place again: answered from the cache
    await li.receive()
    assert len(nominatim.requests) == requests

    nominatim.fail_next = 5
    await li.send_command("/find")
    await li.receive()
    await li.send_text("常州火车站")
    assert "地图服务暂时没有响应" in (await li.receive()).text
    await li.send_location(*HUTANG)  # still in the same step: a location works
    assert station_buttons(await li.receive())


async def test_find_step_survives_restart(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    ann = fake_telegram.user("Ann")
    await ann.send_command("/find")
    await ann.receive()
    await city.restart()
    city.services.clock = lambda: FROZEN
    await ann.send_text("Hutang")
    assert "📍 near Hutang, Wujin District" in (await ann.receive()).text


async def test_staff_update_shows_in_next_search(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    keeper = fake_telegram.user("Keeper Wang")
    courier = fake_telegram.user("Courier")
    sid = await station_id(city, "cz-004")
    async with city.services.db.session() as session:
        await staff.add(session, keeper.id, "Wang", Role.KEEPER, sid)
    await keeper.send_command("/station")
    panel = await keeper.receive()
    assert panel.text.startswith("Huimin Mart Riders' Corner")
    await keeper.tap_inline("⛔ Closed today", message=panel)
    saved = await keeper.wait_edit(panel.message_id)
    assert "✅ Saved" in saved.text and "⛔ temporarily closed: Closed today." in saved.text

    reply = await search_from(courier, 31.7158, 119.9607)
    assert re.search(r"Huimin Mart Riders' Corner — \d+ m\n\s+⛔ temporarily closed: Closed today\.", reply.text)

    await keeper.tap_inline("✏️ Write a notice", message=saved)
    assert "Type the notice" in (await keeper.receive()).text
    await keeper.send_text("Back at 9 <b>tomorrow</b> & warm")
    assert "✅ Saved" in (await keeper.receive()).text
    reply = await search_from(courier, 31.7158, 119.9607)
    assert "⛔ temporarily closed: Back at 9 <b>tomorrow</b> & warm" in reply.text

    await keeper.send_command("/station")
    panel = await keeper.receive()
    await keeper.tap_inline("✅ Back to normal", message=panel)
    await keeper.wait_edit(panel.message_id)
    reply = await search_from(courier, 31.7158, 119.9607)
    assert re.search(r"Huimin Mart Riders' Corner — \d+ m\n\s+🟢 open · closes tomorrow 08:00", reply.text)


async def test_forged_and_stale_staff_callbacks_are_refused(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    stranger = fake_telegram.user("Stranger")
    other_keeper = fake_telegram.user("Other keeper")
    sid = await station_id(city, "cz-004")
    other_sid = await station_id(city, "cz-001")
    async with city.services.db.session() as session:
        await staff.add(session, other_keeper.id, "Zhao", Role.KEEPER, other_sid)

    await stranger.send_command("/station")
    assert "only for station staff" in (await stranger.receive()).text.replace("is for", "only for")
    replies = {user.id: await search_from(user, *HUTANG) for user in (stranger, other_keeper)}
    for user, data in (
        (stranger, f"sa|{sid}|closed"),
        (stranger, f"sp|{sid}"),
        (other_keeper, f"sa|{sid}|closed"),
        (other_keeper, f"sp|{sid}"),
        (stranger, "sa|not-a-number|closed"),
        (stranger, f"sa|{sid}|../../drop"),
    ):
        query = await user.send_callback(replies[user.id].message_id, data)
        text, alert = await user.callback_answer(query)
        assert alert and text == "Sorry, only this station's staff can do that.", data

    # A staff button drawn while someone was staff does nothing once they are removed.
    async with city.services.db.session() as session:
        await staff.remove(session, other_keeper.id)
    query = await other_keeper.send_callback(replies[other_keeper.id].message_id, f"sa|{other_sid}|closed")
    assert (await other_keeper.callback_answer(query))[0] == "Sorry, only this station's staff can do that."

    async with city.services.db.session() as session:
        for station in (await stations.get(session, sid), await stations.get(session, other_sid)):
            assert station is not None and station.status == "open"


async def test_no_station_within_radius_names_the_nearest(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    traveller = fake_telegram.user("Traveller")
    reply = await search_from(traveller, 43.8256, 87.6168)  # Ürümqi: thousands of km from any demo station
    assert "There is no station within 50 km. The nearest one is" in reply.text
    nearest = expected_order(43.8256, 87.6168)[0]
    assert station_buttons(reply) == [f"1. {english_name(nearest)}"]


async def test_wrong_info_report_reaches_coordinator(city: BotHarness, fake_telegram: FakeTelegram) -> None:
    courier = fake_telegram.user("Courier")
    coordinator = fake_telegram.user("Coordinator")
    async with city.services.db.session() as session:
        await staff.add(session, coordinator.id, "Chen", Role.COORDINATOR)
    reply = await search_from(courier, 31.7186, 119.9562)
    await courier.tap_inline("1. Hutang Outdoor Workers' Station (Renmin Rd)", message=reply)
    card = await courier.receive()
    await courier.receive(kind="venue")
    await courier.tap_inline("✏️ Report wrong info", message=card)
    assert "What is wrong on this card?" in (await courier.receive()).text
    await courier.send_photo()
    assert "Please describe what is wrong in words" in (await courier.receive()).text
    await courier.send_text("x" * 1500)
    assert "please shorten it to 1000" in (await courier.receive()).text
    await courier.send_text("Closes at 21:00 now <not 22:00>")
    assert "Thank you!" in (await courier.receive()).text

    sid = await station_id(city, "cz-001")
    await coordinator.send_command("/station", args="cz-001")
    panel = await coordinator.receive()
    assert "📝 1 report of wrong info" in panel.text
    await coordinator.tap_inline("📝 Read reports", message=panel)
    reports = await coordinator.receive()
    assert "Closes at 21:00 now <not 22:00>" in reports.text
    await coordinator.tap_inline("✔ Still correct", message=panel)
    assert "marked as checked today" in (await coordinator.wait_edit(panel.message_id)).text
    assert sid
