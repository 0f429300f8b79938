"""Privacy in the domain and the tooling: forget() (every table, one transaction, idempotent, reports and the rate
limit), the retention purge (cases, forms, users, geocoder answers, dry run), `waystation privacy purge`, the webhook
secret being required, and the log scan itself (what counts as personal, whole-word matching, a leaky test named)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import select

from bot import cli
from bot.config import ConfigError, load_settings
from bot.database import Database
from models import cases, conversation_store, outbox, privacy, reports, staff, station_feedback, users, weather
from models.cases import Case, CaseEvent, CaseStatus
from models.geocode_cache import GeocodeEntry
from models.outbox import OutboxItem
from models.reports import ReportDetails
from models.staff import Role
from models.stations import Station
from tests.log_scan import Registry, catalog_strings, scan

ROOT = Path(__file__).resolve().parents[2]
USER, STAFF_ID, OTHER = 700_000_101, 700_000_900, 700_000_555
NOW = datetime.now(UTC).replace(microsecond=0)
KEY = "a" * 64


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    await database.upgrade()
    try:
        yield database
    finally:
        await database.dispose()


async def _case(db: Database, requester: int | None, **fields: object) -> Case:
    async with db.session() as session:
        values: dict[str, object] = {"categories": ["food"], "description": "Cold at the north gate", **fields}
        case, _ = await cases.create(
            session,
            Case(requester_id=requester, idempotency_key=uuid.uuid4().hex, **values),  # type: ignore[arg-type]
        )
        await session.commit()
        return case


async def _report(db: Database, requester: int | None, key: str, *, age: timedelta, open_: bool = True) -> Case:
    async with db.session() as session:
        case, _ = await reports.create(
            session,
            Case(requester_id=requester, idempotency_key=uuid.uuid4().hex, description="Asleep by the canal"),
            ReportDetails(reporter_key=key, seen="typed", seen_text="around 9 pm", photo_file_id="photo-1"),
            now=NOW - age,
        )
        assert case.id is not None
        if not open_:
            await reports.resolve(session, case.id, STAFF_ID, "Sam", "taken_to_shelter")
        await session.commit()
        return case


async def _everything(db: Database) -> dict[str, Case]:
    """A person with a bit of everything; returns their cases by name."""
    made: dict[str, Case] = {}
    async with db.session() as session:
        await users.touch(session, USER, "en")
        await staff.add(session, STAFF_ID, "Sam", Role.RESPONDER)
        station = Station(external_id="s-1", name="Hutang", lat=31.7, lon=119.9)
        session.add(station)
        await session.commit()
        assert station.id is not None
        await station_feedback.add(session, station.id, USER, "The kettle is broken, ask for Mr Zhou")
        await weather.save_subscription(
            session,
            USER,
            language="en",
            area_key=None,
            lat=31.7712,
            lon=119.9488,
            cold_alerts=True,
            announcements=False,
            quiet_start=None,
            quiet_end=None,
        )
        await conversation_store.save_blob(session, "user", USER, {"request_draft": {"text": "half typed"}})
        await conversation_store.save_conversation(session, "request_form", (USER, USER), 3)
        await conversation_store.save_conversation(session, "case_staff", (USER,), 1)
        await conversation_store.save_conversation(session, "request_form", (OTHER, OTHER), 2)
    made["open"] = await _case(db, USER, phone="+8613900000001", lat=31.716789, lon=119.959123, place_text="Gate 3")
    made["closed"] = await _case(db, USER, documents=["doc-1"], last_note="I sleep at gate 3")
    async with db.session() as session:
        closed_id = made["closed"].id or 0
        await cases.ask_info(session, closed_id, STAFF_ID, "Sam", "Where exactly are you?")
        await cases.add_info(session, closed_id, USER, "Behind the bus stop at gate 3")
        await cases.resolve(session, closed_id, STAFF_ID, "Sam", "help_food", note="Gave food to Mr Li", amount=20.0)
        open_id = made["open"].id or 0
        card = f"case:{open_id}:chat:-100123"
        item = await outbox.enqueue_message(session, -100123, "📝 Cold at the north gate", card_key=card)
        await session.commit()
        claimed = await outbox.claim(session, item.id or 0, lease=timedelta(minutes=1))
        assert claimed is not None
        await outbox.mark_sent(session, claimed, 55)
        await outbox.enqueue_message(session, USER, "Your request was picked up", dedupe_key=f"case:{open_id}:event:1")
        await outbox.enqueue_message(
            session, STAFF_ID, "the requester answered: gate 3", dedupe_key=f"case:{closed_id}:event:9:staff"
        )
        await session.commit()
    made["old_report"] = await _report(db, None, KEY, age=timedelta(hours=3), open_=False)
    made["recent_report"] = await _report(db, None, KEY, age=timedelta(minutes=10))
    made["other"] = await _case(db, OTHER)
    return made


async def test_forget_removes_everything_in_one_transaction_and_is_idempotent(db: Database) -> None:
    made = await _everything(db)
    async with db.session() as session:
        found = await privacy.summary(session, USER, reporter_key=KEY, now=NOW)
        assert [c.id for c in found.requests] == [made["open"].id, made["closed"].id]
        assert found.open_requests[0].phone and found.open_requests[0].location and found.open_requests[0].place
        assert (found.anonymous_reports, found.limit_codes) == (1, 1)  # the recent one keeps its code for the limit
        assert (found.feedback, found.forms, found.messages) == (1, 3, 1)
        assert found.subscription is not None and found.profile is not None and not found.is_empty

        # Not committed by forget(): a rollback leaves everything as it was.
        await privacy.forget(session, USER, reporter_key=KEY, now=NOW)
        await session.rollback()
        assert not (await privacy.summary(session, USER, reporter_key=KEY, now=NOW)).is_empty

        done = await privacy.forget(session, USER, reporter_key=KEY, now=NOW)
        await session.commit()
    assert [c.id for c in done.cancelled] == [made["open"].id]
    assert {c.id for c in done.anonymised} == {made["open"].id, made["closed"].id, made["old_report"].id}
    assert done.unlinked == []  # the recent anonymous report: nothing of the reporter in it but the code
    assert done.deleted["users"] == done.deleted["weather_subscriptions"] == done.deleted["station_feedback"] == 1
    assert done.deleted["conversation_states"] == 2 and done.deleted["persistence_data"] == 1

    async with db.session() as session:
        after = await privacy.summary(session, USER, reporter_key=KEY, now=NOW)
        assert after.is_empty and after.staff_role is None and after.limit_codes == 1
        later = await privacy.summary(session, USER, reporter_key=KEY, now=NOW + timedelta(hours=1))
        assert later.anonymous_reports == 1  # once the hour is over, /forgetme can unlink it too
        opened = await cases.get(session, made["open"].id or 0)
        closed = await cases.get(session, made["closed"].id or 0)
        assert opened is not None and closed is not None
        assert opened.status == CaseStatus.CANCELLED and (opened.lat, opened.lon) == (31.72, 119.96)
        assert (opened.phone, opened.place_text, opened.description, opened.requester_id) == (None, None, None, None)
        assert (closed.documents, closed.last_note, closed.closing_note) == ([], None, None)
        assert (closed.closing_reason, closed.aid_amount, closed.claimed_by) == ("help_food", 20.0, None)
        events = await cases.events(session, made["closed"].id or 0)
        assert [e.action for e in events] == ["submitted", "need_info", "info_added", "resolved", "anonymised"]
        assert [e.detail for e in events] == [{}, {}, {}, {"reason": "help_food", "amount": 20.0}, {"why": "forgetme"}]
        assert all(e.actor_id != USER for e in events) and events[1].actor_name == "Sam"
        # Reports: the closed one anonymised (photo and typed time gone), the recent one open and keyed for an hour.
        old = await reports.get(session, made["old_report"].id or 0)
        recent = await reports.get(session, made["recent_report"].id or 0)
        assert old is not None and recent is not None
        assert (old.photo_file_id, old.seen_text, old.reporter_key != KEY) == (None, None, True)
        assert recent.reporter_key == KEY and recent.photo_file_id == "photo-1"  # about the person in the cold
        limit = await reports.limit(session, KEY, now=NOW, max_per_hour=3)
        assert limit.sent == 1  # /forgetme does not reset the per-hour report limit
        # The outbox: the sent card lost its text, the pending message to the person and the relayed answer went.
        rows = (await session.exec(select(OutboxItem))).all()
        assert [(r.chat_id, r.payload) for r in rows] == [(-100123, {"anonymised": True})]
        # Someone else's data is untouched.
        assert (await cases.get(session, made["other"].id or 0)) is not None
        assert await conversation_store.load_conversations(session, "request_form") == {(OTHER, OTHER): 2}
        assert (await staff.get(session, STAFF_ID)) is not None

        events_before = len((await session.exec(select(CaseEvent))).all())
        again = await privacy.forget(session, USER, reporter_key=KEY, now=NOW)
        await session.commit()
        assert again.changed_cases == [] and not any(again.deleted.values())
        assert len((await session.exec(select(CaseEvent))).all()) == events_before


async def test_purge_anonymises_old_closed_cases_and_deletes_what_serves_nobody(db: Database) -> None:
    made = await _everything(db)
    long_ago = NOW - timedelta(days=100)
    async with db.session() as session:
        for name in ("closed", "open"):
            case = await cases.get(session, made[name].id or 0)
            assert case is not None
            case.updated_at = long_ago
            session.add(case)
        for telegram_id in (USER, OTHER, 700_000_777):
            await users.touch(session, telegram_id, "en")
            stored = await users.get(session, telegram_id)
            assert stored is not None
            stored.last_seen = long_ago
            session.add(stored)
        session.add(GeocodeEntry(key="en|gate 3 hutang", found=True, lat=31.7, lon=119.9, created_at=long_ago))
        session.add(GeocodeEntry(key="en|fresh", found=False, created_at=NOW))
        blob = await session.get(conversation_store.DataBlob, ("user", USER))
        assert blob is not None
        blob.updated_at = long_ago
        session.add(blob)
        await session.commit()

        dry = await privacy.purge(
            session, timedelta(days=90), now=NOW, geocode_max_age=timedelta(days=30), dry_run=True
        )
        # Only "closed" was closed long enough ago (the resolved report closed just now).
        assert (dry.cases, dry.case_ids, dry.geocode, dry.forms) == (1, [made["closed"].id], 1, 1)
        # USER is subscribed and has an open case, OTHER has an open case: only the third one goes.
        assert dry.users == 1
        still = await session.get(Case, made["closed"].id or 0, populate_existing=True)
        assert still is not None and still.last_note == "Behind the bus stop at gate 3"  # a dry run changes nothing

        purged = await privacy.purge(session, timedelta(days=90), now=NOW, geocode_max_age=timedelta(days=30))
        assert (purged.cases, purged.users, purged.geocode, purged.forms) == (1, 1, 1, 1)
        assert purged.form_owners == {USER}
        closed = await session.get(Case, made["closed"].id or 0, populate_existing=True)
        opened = await session.get(Case, made["open"].id or 0, populate_existing=True)
        assert closed is not None and opened is not None
        assert (closed.last_note, closed.requester_id, closed.documents) == (None, None, [])
        assert opened.phone == "+8613900000001"  # open cases are never purged, however old
        assert await users.get(session, 700_000_777) is None and await users.get(session, USER) is not None
        assert await session.get(GeocodeEntry, "en|fresh") is not None
        assert await session.get(GeocodeEntry, "en|gate 3 hutang") is None
        again = await privacy.purge(session, timedelta(days=90), now=NOW, geocode_max_age=timedelta(days=30))
        assert again.total == 0


def test_purge_command(database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    async def setup() -> int:
        database = Database(database_url)
        await database.upgrade()
        case = await _case(database, USER, phone="+8613900000002")
        async with database.session() as session:
            await cases.cancel_by_requester(session, case.id or 0, USER)
            stored = await cases.get(session, case.id or 0)
            assert stored is not None
            stored.updated_at = NOW - timedelta(days=40)
            session.add(stored)
            await session.commit()
        await database.dispose()
        return case.id or 0

    case_id = asyncio.run(setup())
    config = tmp_path / "config.toml"
    config.write_text(f'[database]\nurl = "{database_url}"\n\n[privacy]\nretention_days = 60\n')
    assert cli.main(["--config", str(config), "privacy", "purge", "--dry-run"]) == 0
    assert "would anonymise 0 case(s) closed more than 60 day(s) ago" in capsys.readouterr().out
    assert cli.main(["--config", str(config), "privacy", "purge", "--days", "30", "--dry-run"]) == 0
    assert "would anonymise 1 case(s) closed more than 30 day(s) ago" in capsys.readouterr().out
    assert cli.main(["--config", str(config), "privacy", "purge", "--days", "30"]) == 0
    out = capsys.readouterr().out
    assert "anonymised 1 case(s) closed more than 30 day(s) ago" in out and "+86139" not in out
    assert cli.main(["--config", str(config), "privacy", "purge", "--days", "0"]) == 2

    async def check() -> Case | None:
        database = Database(database_url)
        async with database.session() as session:
            found = await cases.get(session, case_id)
        await database.dispose()
        return found

    found = asyncio.run(check())
    assert found is not None and found.phone is None and found.requester_id is None


# -- the webhook secret ------------------------------------------------------------------------------------------


def test_webhook_mode_requires_the_secret_token(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[telegram]\nmode = "webhook"\n[telegram.webhook]\nurl = "https://bot.example.org/telegram"\n')
    with pytest.raises(ConfigError, match=r"^telegram: expected webhook\.secret_token in webhook mode"):
        load_settings(path)
    path.write_text(path.read_text() + 'secret_token = "s3cret-Token_1"\n')
    assert load_settings(path).telegram.webhook.secret_token is not None
    assert load_settings(None).telegram.mode == "polling"  # polling needs no secret


# -- the log scan ------------------------------------------------------------------------------------------------


def test_what_counts_as_a_personal_value() -> None:
    assert "📍 Nearest stations" in catalog_strings()
    assert Registry.forms("text", "/start station_42") == []
    assert Registry.forms("text", "📍 Nearest stations") == []  # a tapped menu button is the bot's own label
    assert Registry.forms("text", "yes") == [] and Registry.forms("text", "200") == []
    assert Registry.forms("text", "done") == []  # a note typed as "done" is in "broadcast 3 done: 0 sent"
    assert Registry.forms("text", "我在桥下") == ["我在桥下"]
    assert Registry.forms("text", "Lost my wallet") == ["Lost my wallet"]
    assert Registry.forms("name", "Lu") == ["Lu"]  # names count however short
    assert Registry.forms("phone", "+86 139-0000-0001") == ["+86 139-0000-0001", "8613900000001"]
    assert Registry.forms("location", (31.82, 119.95)) == []  # two decimals: an area
    assert Registry.forms("location", (31.82, 119.959)) == ["119.959", "119.9590", "119.95900", "119.959000"]


def test_scan_matches_whole_words_and_names_the_test() -> None:
    registry = Registry()
    registry.add("name", "Ann", "t::sender")
    registry.add("text", "Lost my wallet", "t::sender")
    registry.add("location", (31.7163, 1.0), "t::sender")
    lines = [
        ("t::a", "INFO waystation: Announcements sent to 3 chats"),
        ("t::b", "INFO waystation.cases: case 4: claimed by Ann"),
        ("t::c", "DEBUG x: got 'Lost my wallet!' from update 9"),
        ("t::d", "INFO y: at 31.716300 (rounded 31.72)"),
        ("t::e", "INFO y: 131.7163 is no coordinate of ours"),
    ]
    leaks = scan(lines, registry)
    assert [(leak.test, leak.kind) for leak in leaks] == [("t::b", "name"), ("t::c", "text"), ("t::d", "location")]
    assert all(leak.sent_in == "t::sender" for leak in leaks)


LEAKY = """
import logging

from bot.sandbox.fake_telegram import FakeTelegram


def test_clean() -> None:
    FakeTelegram().user("Quentin", phone_number="+8613700001111")
    logging.getLogger("waystation").warning("user 1 started")


def test_leaky() -> None:
    FakeTelegram().user("Zelda")
    logging.getLogger("waystation.leaky").warning("hello %s", "Zelda")
"""


@pytest.mark.parametrize("leak", [True, False])
def test_the_plugin_fails_the_session_and_names_the_test(tmp_path: Path, leak: bool) -> None:
    source = LEAKY if leak else LEAKY.split("def test_leaky")[0]
    (tmp_path / "test_sample.py").write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.log_scan", "-p", "no:cacheprovider", "test_sample.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert "log scan: " in result.stdout and "personal values checked" in result.stdout, result.stdout
    if leak:
        assert result.returncode == 1, result.stdout
        assert "test_sample.py::test_leaky: a name ('Zelda'" in result.stdout
        assert "test_clean" not in result.stdout.split("personal data in the logs")[1]
    else:
        assert result.returncode == 0, result.stdout
