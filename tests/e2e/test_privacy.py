"""Privacy end to end: /forgetme (summary, confirmation, deletion in one go, idempotent second tap, Keep, Chinese),
what is left in the database afterwards (nothing that points to the person), the staff side of a withdrawn request,
the daily retention job, and team scoping of case details and documents (buttons and forged callback data)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from sqlalchemy import func, update
from sqlalchemy import select as sa_select
from sqlmodel import SQLModel, select
from telegram.ext import CommandHandler

import models.registry  # noqa: F401  (every table in SQLModel.metadata, for the whole-database check)
from bot import replay, retention
from bot.application import WaystationApplication
from bot.i18n import translator
from bot.sandbox.fake_telegram import TINY_JPEG, BotMessage, FakeGroup, FakeTelegram, FakeUser
from handlers import forgetme
from models import cases, conversation_store, privacy, reports, staff, weather
from models.cases import Case, CaseEvent, CaseStatus
from models.conversation_store import DataBlob
from models.reports import ReportDetails
from models.staff import Role
from tests.conftest import make_settings
from tests.e2e.test_request_form import fill_until_review, tap
from tests.e2e.test_teams import IN_SOUTH, Ops, card_for
from tests.harness import BotHarness

WORDS = "Lost my wallet near Hongmei park, sleeping at the west gate"
PHONE = "+8613912345678"
PIN = (31.7160, 119.9590)  # what fill_until_review shares
ZH = translator("zh_Hans")


def wire(app: WaystationApplication) -> None:
    """Register /forgetme as bot/application.py will (before the catch-all answer); nothing once it is there."""
    registered = (h for group in app.handlers.values() for h in group)
    if any(isinstance(h, CommandHandler) and "forgetme" in h.commands for h in registered):
        return
    app.add_handlers(forgetme.handlers())


@dataclass
class Desk:
    bot: BotHarness
    fake: FakeTelegram
    group: FakeGroup
    alice: FakeUser  # responder

    @property
    def db(self) -> Any:
        return self.bot.services.db

    async def case(self, case_id: int | None) -> Case:
        async with self.db.session() as session:
            found = await cases.get(session, case_id or 0)
        assert found is not None
        return found


@pytest.fixture
async def desk(database_url: str, fake_telegram: FakeTelegram) -> AsyncIterator[Desk]:
    alice = fake_telegram.user("Alice")
    group = fake_telegram.group("Hutang staff", members=[alice])
    settings = make_settings(fake_telegram, database_url, sections={"staff": {"alert_chat_ids": [group.id]}})
    harness = BotHarness(settings, fake_telegram, configure=wire)
    await harness.start()
    async with harness.services.db.session() as session:
        await staff.add(session, alice.id, "Alice", Role.RESPONDER)
    await alice.send_command("/help")  # Alice has opened the bot (details go to her privately)
    await alice.receive()
    try:
        yield Desk(harness, fake_telegram, group, alice)
    finally:
        await harness.stop()
    harness.assert_clean()


async def submit_request(desk: Desk, user: FakeUser, text: str = WORDS) -> tuple[Case, BotMessage]:
    review = await fill_until_review(user, text=text)
    done = await tap(user, "📨 Submit")
    assert "Reference:" in done.text
    card = await desk.group.receive()
    async with desk.db.session() as session:
        mine = await cases.for_requester(session, user.id)
    assert mine and review is not None
    return mine[0], card


async def closed_case_with_documents(desk: Desk, user: FakeUser) -> Case:
    """An older request of the same person, resolved with a note (made through the domain)."""
    async with desk.db.session() as session:
        case, _ = await cases.create(
            session,
            Case(
                requester_id=user.id,
                idempotency_key=uuid.uuid4().hex,
                categories=["paperwork"],
                description="My residence permit was stolen at Hutang station",
                phone=PHONE,
                place_text="Hutang old bridge",
                lat=31.70123,
                lon=119.94567,
                documents=["photo-file-id-1", "photo-file-id-2"],
            ),
        )
        assert case.id is not None
        await cases.ask_info(session, case.id, desk.alice.id, "Alice", "Which office issued the permit?")
        await cases.add_info(session, case.id, user.id, "The Wujin office, last March")
        await cases.resolve(session, case.id, desk.alice.id, "Alice", "help_paperwork", note="Met at the west gate")
        await session.commit()
    return case


async def handled(db: Any, timeout: float = 10.0) -> None:
    """Wait until no update is being handled (no reply journal is left in persistence_data)."""
    blobs = DataBlob.__table__  # type: ignore[attr-defined]
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with db.session() as session:
            connection = await session.connection()
            left = (
                await connection.execute(sa_select(func.count()).select_from(blobs).where(blobs.c.kind == replay.KIND))
            ).scalar_one()
        if not left:
            return
        assert asyncio.get_running_loop().time() < deadline, "the bot is still handling an update"
        await asyncio.sleep(0.05)


async def traces(db: Any, user: FakeUser, needles: list[str], coordinates: set[float]) -> list[str]:
    """Every value in every table that points to the person: their id, a text they typed, an exact coordinate."""
    found = []
    async with db.session() as session:
        connection = await session.connection()
        for table in SQLModel.metadata.sorted_tables:
            for row in (await connection.execute(table.select())).mappings():
                for column, value in row.items():
                    if isinstance(value, bytes):
                        continue
                    text = json.dumps(value, ensure_ascii=False, default=str)
                    hit = (
                        (isinstance(value, int) and not isinstance(value, bool) and value == user.id)
                        or (isinstance(value, float) and value in coordinates)
                        or any(needle in text for needle in needles)
                        or f'"{user.id}"' in text
                        or f"[{user.id}]" in text
                    )
                    if hit:
                        found.append(f"{table.name}.{column} = {text[:80]}")
    return found


async def test_forgetme_shows_what_is_kept_and_deletes_it_all_in_one_go(desk: Desk) -> None:
    ann = desk.fake.user("Ann", last_name="Lin", username="ann_lin_88", phone_number=PHONE)
    old = await closed_case_with_documents(desk, ann)
    case, card = await submit_request(desk, ann)
    assert WORDS in card.text
    query = await desk.alice.tap_inline("✋ Claim", message=card, chat=desk.group)
    assert await desk.alice.callback_answer(query) == (f"You claimed {case.reference}.", False)
    await ann.receive()  # "picked up by Alice"
    async with desk.db.session() as session:
        await weather.save_subscription(
            session,
            ann.id,
            language="en",
            area_key=None,
            lat=31.7712,
            lon=119.9488,
            cold_alerts=True,
            announcements=False,
            quiet_start=None,
            quiet_end=None,
        )
    # An unfinished second request: a draft in user_data and a conversation step.
    await ann.send_command("/request")
    await ann.receive()

    await ann.send_command("/forgetme")
    summary = await ann.receive()
    assert summary.text.startswith("What I keep about you")
    for part in (
        "• Your language setting and when you last wrote to me",
        "• 2 help requests:",
        f"{old.reference} · ✅ Resolved — your words, a place, a location, a phone number, 2 documents",
        f"{case.reference} · 🟡 Being handled — your words, a location, a phone number",
        "• Your cold-weather alert subscription (with your location)",
        "• What you typed in a form you have not finished",
        "Your open request is cancelled",
    ):
        assert part in summary.text, part
    assert WORDS not in summary.text and PHONE not in summary.text  # says what is kept, not the values
    assert summary.button_texts == ["🗑 Delete everything", "✋ Keep my data"]

    await ann.tap_inline("🗑 Delete everything", message=summary)
    confirm = await ann.wait_edit(summary.message_id)
    assert confirm.text.startswith("Delete everything I keep about you? This cannot be undone.")
    yes = await ann.tap_inline("🗑 Yes, delete everything", message=confirm)
    assert await ann.callback_answer(yes) == (None, False)
    done = await ann.wait_until(lambda _m: summary if summary.text.startswith("✅ Done.") else None)
    assert "Your open request was cancelled." in done.text and not done.inline_keyboard

    # Nothing in any table points to Ann any more (once the bot has finished handling the tap: until then its reply
    # journal, bot/replay.py, holds that update's answers; it goes in the transaction that marks the update handled).
    await handled(desk.db)
    needles = [WORDS, PHONE, "8613912345678", "Hongmei", "residence permit", "Hutang old bridge", "Wujin office"]
    needles += ["west gate", "photo-file-id", "ann_lin_88"]
    assert await traces(desk.db, ann, needles, {PIN[0], PIN[1], 31.70123, 119.94567, 31.7712}) == []
    # The cases stay as anonymous statistics.
    now_case, now_old = await desk.case(case.id), await desk.case(old.id)
    assert now_case.status == CaseStatus.CANCELLED and now_old.status == CaseStatus.RESOLVED
    assert (now_case.lat, now_case.lon) == (31.72, 119.96) and now_case.categories == ["food", "bed"]
    assert now_old.closing_reason == "help_paperwork" and now_old.categories == ["paperwork"]
    assert now_case.claimed_by == desk.alice.id and now_case.claimed_by_name == "Alice"  # the staff side stays
    async with desk.db.session() as session:
        history = [e.action for e in await cases.events(session, old.id or 0)]
    assert history == ["submitted", "need_info", "info_added", "resolved", "anonymised"]

    # Staff: the card lost the personal details and shows the cancellation; the group is told why.
    note = await desk.group.receive()
    assert f"{case.reference} was withdrawn: the person asked for their data to be deleted" in note.text
    edited = await desk.group.wait_until(lambda _m: card if card.text.startswith("⚪ Cancelled") else None)
    assert WORDS not in edited.text and not edited.inline_keyboard
    query = await desk.alice.send_callback(card.message_id, f"cs|details|{case.id}", chat=desk.group)
    assert await desk.alice.callback_answer(query) == ("I have sent you the details privately.", False)
    details = await desk.alice.receive()
    assert details.text.startswith(f"📂 {case.reference} · ⚪ Cancelled")
    assert WORDS not in details.text and "Phone" not in details.text and "open a chat" not in details.text
    assert "🗺 Location: 31.72000, 119.96000" in details.text  # rounded to about a kilometre: an area, no more
    await desk.alice.receive(kind="location")

    # A second tap on the same button: nothing left, and it says so.
    again = await ann.send_callback(summary.message_id, "pv|yes")
    assert await ann.callback_answer(again) == ("Already done: nothing about you is stored any more.", True)
    # The unfinished form is gone from memory too: a text now is not an answer to it.
    await ann.send_text("Another thing I wanted to add")
    assert (await ann.receive()).text.startswith("Sorry, I did not understand that.")
    async with desk.db.session() as session:
        assert await cases.for_requester(session, ann.id) == []
        assert await weather.get_subscription(session, ann.id) is None


async def test_keep_changes_nothing_and_chinese_works(desk: Desk) -> None:
    mei = desk.fake.user("美", language_code="zh")
    async with desk.db.session() as session:
        await weather.save_subscription(
            session,
            mei.id,
            language="zh_Hans",
            area_key="wujin",
            lat=None,
            lon=None,
            cold_alerts=True,
            announcements=False,
            quiet_start=None,
            quiet_end=None,
        )
    await mei.send_command("/forgetme")
    summary = await mei.receive()
    title = ZH.gettext("<b>What I keep about you</b>").replace("<b>", "").replace("</b>", "")
    assert title != "What I keep about you" and summary.text.startswith(title)
    assert (
        ZH.gettext("• Your cold-weather alert subscription ({where})").format(where=ZH.gettext("for an area you chose"))
        in summary.text
    )
    keep, delete = ZH.gettext("✋ Keep my data"), ZH.gettext("🗑 Delete everything")
    assert summary.button_texts == [delete, keep]

    await mei.tap_inline(keep, message=summary)
    kept = await mei.wait_edit(summary.message_id)
    assert kept.text == ZH.gettext("OK, nothing was deleted.") and not kept.inline_keyboard
    async with desk.db.session() as session:
        assert await weather.get_subscription(session, mei.id) is not None

    await mei.send_command("/forgetme")
    summary = await mei.receive()
    await mei.tap_inline(delete, message=summary)
    confirm = await mei.wait_edit(summary.message_id)
    await mei.tap_inline(ZH.gettext("🗑 Yes, delete everything"), message=confirm)
    done = await mei.wait_until(lambda _m: summary if summary.text.startswith("✅") else None)
    assert done.text == ZH.gettext(
        "✅ Done. Everything I kept about you is deleted. If you write to me again, I keep only your language "
        "setting until you send /forgetme again."
    )
    assert done.text.startswith("✅ 已完成")
    async with desk.db.session() as session:
        assert await weather.get_subscription(session, mei.id) is None


async def test_forgetme_in_a_group_points_to_the_private_chat(desk: Desk) -> None:
    await desk.alice.send_command("/forgetme", chat=desk.group)
    assert (await desk.group.receive()).text == "Please send /forgetme to me in a private chat."


async def test_open_report_stays_open_without_the_reporter(desk: Desk) -> None:
    """A report is about someone out in the cold: outreach still needs it, only the reporter goes."""
    ben = desk.fake.user("Ben")
    key = reports.reporter_key(desk.bot.settings.require_token(), ben.id)
    now = datetime.now(UTC)
    async with desk.db.session() as session:
        report, _ = await reports.create(
            session,
            Case(
                requester_id=ben.id,
                idempotency_key=uuid.uuid4().hex,
                description="A man asleep under the Yanling bridge",
                lat=31.77812,
                lon=119.95723,
                phone=PHONE,
            ),
            ReportDetails(reporter_key=key, may_contact=True, wants_outcome=True, people=1),
            now=now - timedelta(hours=3),
        )
        await session.commit()
    await ben.send_command("/forgetme")
    summary = await ben.receive()
    assert "• 1 report with your contact:" in summary.text and "stay open for outreach" in summary.text
    await ben.tap_inline("🗑 Delete everything", message=summary)
    await ben.tap_inline("🗑 Yes, delete everything", message=await ben.wait_edit(summary.message_id))
    await ben.wait_until(lambda _m: summary if summary.text.startswith("✅ Done.") else None)
    kept = await desk.case(report.id)
    assert kept.is_open and kept.description == "A man asleep under the Yanling bridge" and kept.lat == 31.77812
    assert kept.requester_id is None and kept.phone is None
    async with desk.db.session() as session:
        details = await reports.get(session, report.id or 0)
    assert details is not None and details.reporter_key != key and not details.wants_outcome


async def test_daily_retention_job_anonymises_old_closed_cases(desk: Desk) -> None:
    app = desk.bot.runner.app if desk.bot.runner else None
    assert app is not None
    retention.schedule(app)  # what bot/runner.py will do at start-up
    jobs = app.job_queue.get_jobs_by_name(retention.JOB_NAME) if app.job_queue else []
    assert len(jobs) == 1 and jobs[0].next_t is not None
    assert jobs[0].next_t.astimezone(desk.bot.settings.tz).time() == time(3, 30)

    cora = desk.fake.user("Cora")
    old = await closed_case_with_documents(desk, cora)
    recent = await closed_case_with_documents(desk, cora)
    async with desk.db.session() as session:
        still_open, _ = await cases.create(
            session, Case(requester_id=cora.id, idempotency_key=uuid.uuid4().hex, description="Still waiting here")
        )
        await session.commit()
        long_ago = datetime.now(UTC) - timedelta(days=91)
        for case_id in (old.id, still_open.id):
            await session.exec(update(Case).where(Case.id == case_id).values(updated_at=long_ago))  # type: ignore[call-overload]
        await session.commit()

    dry = await retention.run(app, dry_run=True)
    assert (dry.cases, dry.case_ids) == (1, [old.id])
    assert (await desk.case(old.id)).description is not None  # a dry run changes nothing
    purged = await retention.run(app)
    assert purged.cases == 1
    gone, kept, waiting = await desk.case(old.id), await desk.case(recent.id), await desk.case(still_open.id)
    assert (gone.description, gone.phone, gone.requester_id, gone.documents) == (None, None, None, [])
    assert (gone.lat, gone.lon) == (31.70, 119.95) and gone.closing_reason == "help_paperwork"
    assert kept.description is not None and waiting.description == "Still waiting here"
    async with desk.db.session() as session:
        statement = select(CaseEvent).where(CaseEvent.case_id == old.id)
        details = [e.detail for e in (await session.exec(statement)).all()]
    assert "Which office issued the permit?" not in json.dumps(details) and {"why": "retention"} in details
    assert (await retention.run(app)).cases == 0  # done once


async def test_stale_form_is_purged_from_the_database_and_from_memory(desk: Desk) -> None:
    dora = desk.fake.user("Dora")
    await dora.send_command("/request")
    await dora.receive()
    app = desk.bot.runner.app if desk.bot.runner else None
    assert app is not None and dora.id in app.user_data
    for _ in range(100):  # the persistence is written right after the reply
        async with desk.db.session() as session:
            blob = await session.get(conversation_store.DataBlob, ("user", dora.id))
            if blob is not None and await privacy._conversation_rows(session, dora.id):
                break
        await asyncio.sleep(0.02)
    async with desk.db.session() as session:
        blob = await session.get(conversation_store.DataBlob, ("user", dora.id))
        assert blob is not None
        blob.updated_at = datetime.now(UTC) - timedelta(days=100)
        session.add(blob)
        for row in await privacy._conversation_rows(session, dora.id):
            row.updated_at = datetime.now(UTC) - timedelta(days=100)
            session.add(row)
        await session.commit()
    purged = await retention.run(app)
    assert dora.id in purged.form_owners and purged.forms >= 2
    assert dora.id not in app.user_data
    await dora.send_text("No")  # would have been the danger answer: the form is gone
    assert (await dora.receive()).text.startswith("Sorry, I did not understand that.")
    async with desk.db.session() as session:
        assert await session.get(conversation_store.DataBlob, ("user", dora.id)) is None
        assert await privacy._conversation_rows(session, dora.id) == []


# -- team scoping of details and documents ---------------------------------------------------------------------------


@pytest.fixture
async def ops(database_url: str, fake_telegram: FakeTelegram) -> AsyncIterator[Ops]:
    from tests.e2e.test_teams import Clock, start_ops

    async for desk in start_ops(database_url, fake_telegram, Clock(datetime.now(UTC).replace(microsecond=0))):
        yield desk


async def test_a_responder_of_team_a_sees_no_details_or_documents_of_team_b(ops: Ops) -> None:
    files = ops.fake.world.files
    photo = files.add(TINY_JPEG, "photo", extension=".jpg", width=2, height=2)
    document = files.add(b"%PDF-1.4 permit", "document", file_name="permit.pdf", mime_type="application/pdf")
    eve = ops.fake.user("Eve")
    south_case = await ops.new_case(
        eve, lat=IN_SOUTH[0], lon=IN_SOUTH[1], phone=PHONE, documents=[photo.file_id, document.file_id]
    )
    card = await card_for(ops.south_group, south_case)
    before = len(ops.alice.messages)
    # Alice (North responder): the Details button in South's group, and forged data from her private chat.
    query = await ops.alice.tap_inline("📂 Details", message=card, chat=ops.south_group)
    assert (await ops.alice.callback_answer(query))[1] is True
    own = ops.alice.messages[-1]
    for data in (f"cs|details|{south_case.id}", f"qu|o|{south_case.id}"):
        query = await ops.alice.send_callback(own.message_id, data)
        text, alert = await ops.alice.callback_answer(query)
        assert alert is True and "another team" in (text or ""), data
    # A South report with a photo: its Details are refused to Alice too.
    async with ops.bot.services.db.session() as session:
        report, _ = await reports.create(
            session,
            Case(idempotency_key=uuid.uuid4().hex, lat=IN_SOUTH[0], lon=IN_SOUTH[1], description="Under the bridge"),
            ReportDetails(reporter_key="k" * 64, photo_file_id=photo.file_id),
            now=datetime.now(UTC),
        )
        from handlers.case_alerts import enqueue_cards

        await enqueue_cards(session, ops.bot.services, report, new=True)
        await session.commit()
    ops.bot.services.wake_outbox()
    query = await ops.alice.send_callback(own.message_id, f"rs|details|{report.id}")
    text, alert = await ops.alice.callback_answer(query)
    assert alert is True and "another team" in (text or "")
    assert len(ops.alice.messages) == before  # not a word, pin or file reached her
    assert not any(m.file_id in (photo.file_id, document.file_id) for m in ops.alice.messages)

    # Bob (South responder) gets them.
    query = await ops.bob.tap_inline("📂 Details", message=card, chat=ops.south_group)
    assert await ops.bob.callback_answer(query) == ("I have sent you the details privately.", False)
    details = await ops.bob.receive()
    assert PHONE in details.text
    await ops.bob.receive(kind="location")
    sent = [await ops.bob.receive(), await ops.bob.receive()]
    assert [m.file_id for m in sent] == [photo.file_id, document.file_id]
