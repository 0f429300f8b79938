"""Access control end to end: every staff action × every role, on buttons, commands and forged callbacks alike.

The six roles: nobody (not staff), a station keeper, a responder of another team, a responder of the case's team, a
coordinator and a staff admin. Each action of the table below names the roles allowed to do it; the test drives it
over HTTP through the fake Bot API for every role — by tapping the real button (when that role can see it), by a
forged callback with the same data sent from the role's own private chat, and by command — and checks the effect in
the database (or in what the bot sent), never only the reply: allowed roles change the state, refused ones get a
clear refusal in their language (three of the six use Chinese) and change nothing. A second test removes or demotes
staff after the button was drawn (and in the middle of a typed step): the next tap is refused.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlmodel import select

from bot import weather_jobs
from bot.application import WaystationApplication
from bot.i18n import Translator, translator
from bot.sandbox.fake_telegram import NOT_MODIFIED, BotMessage, FakeGroup, FakeTelegram, FakeUser
from handlers import broadcast, case_staff, queue, report_staff, teams
from handlers.case_alerts import enqueue_cards
from models import cases, reports, staff, station_feedback, stations, weather
from models import teams as team_model
from models.cases import Case
from models.reports import ReportDetails
from models.staff import Role
from models.stations import Station, StationStatus
from models.teams import CodeKind, TeamCode
from models.weather import Broadcast, BroadcastStatus, Kind
from tests import conftest
from tests.conftest import make_settings
from tests.harness import BotHarness

ROLES = ("none", "keeper", "other_responder", "responder", "coordinator", "admin")
ZH_ROLES = frozenset({"none", "keeper", "other_responder"})  # their refusals must come in Chinese
NAMES = {
    "none": "Nora",
    "keeper": "Kai",
    "other_responder": "Otto",
    "responder": "Rita",
    "coordinator": "Cole",
    "admin": "Ada",
}
STAFF = frozenset(ROLES[1:])
ACTING = frozenset({"other_responder", "responder", "coordinator", "admin"})  # may act on cases (of some team)
CASE_TEAM = frozenset({"responder", "coordinator", "admin"})  # may act on a case of North
LEADERS = frozenset({"coordinator", "admin"})
ADMINS = frozenset({"admin"})
NOBODY: frozenset[str] = frozenset()

IN_NORTH, IN_SOUTH = (31.80, 119.95), (31.60, 120.30)
STATION_TEXT = "Sorry, only this station's staff can do that."
STATION_COMMAND = "This command is for station staff."
CASE_OTHER_TEAM = "This case belongs to another team: only that team or a coordinator can act on it."
NOT_MODIFIED_REJECTION = f"Bad Request: {NOT_MODIFIED}"

# role×action cells checked per backend (printed at the end of the run through tests/conftest.py).
CELLS: dict[str, set[tuple[str, str]]] = {"sqlite": set(), "postgresql": set()}
CHECKS: dict[str, int] = {"sqlite": 0, "postgresql": 0}


def _summary() -> None:
    total = sum(len(cells) for cells in CELLS.values())
    per = ", ".join(f"{name} {len(cells)}" for name, cells in CELLS.items() if cells)
    checks = sum(CHECKS.values())
    conftest.summary_lines["access matrix"] = (
        f"access matrix: {total} role×action cells ({per}; {checks} checks by tap, forged callback and command)"
    )


# -- the world -------------------------------------------------------------------------------------------------------


@dataclass
class Answer:
    text: str | None
    alert: bool


@dataclass
class Outcome:
    """What one attempt did: whether the effect happened, and what the person was told."""

    effect: bool
    reply: str | None


@dataclass
class Lab:
    """The bot, two teams with groups (North: the cases' team; South: the other team), a coordinators' group, two
    stations, one person per role and a requester."""

    bot: BotHarness
    fake: FakeTelegram
    backend: str
    users: dict[str, FakeUser]
    requester: FakeUser
    north_group: FakeGroup
    coord_group: FakeGroup
    north: int
    spare: int
    station: int  # the keeper's
    station_ext: str
    other_station: int
    other_station_ext: str
    forge_on: dict[str, BotMessage] = field(default_factory=dict)
    shared: dict[str, tuple[Case, BotMessage]] = field(default_factory=dict)

    @property
    def standing(self) -> Case:
        """An open North case nobody touches: /queue shows it first."""
        return self.shared["standing"][0]

    @property
    def svc(self) -> Any:
        return self.bot.services

    def t(self, role: str) -> Translator:
        return translator("zh_Hans" if role in ZH_ROLES else "en")

    async def forge(self, role: str, data: str) -> Answer:
        """A crafted callback with `data`, on a message of the role's own chat that carries no such button."""
        user = self.users[role]
        query = await user.send_callback(self.forge_on[role].message_id, data)
        return Answer(*await user.callback_answer(query))

    async def new_case(self) -> tuple[Case, BotMessage]:
        svc = self.svc
        async with svc.db.session() as session:
            case, created = await cases.create(
                session,
                Case(
                    requester_id=self.requester.id,
                    idempotency_key=uuid.uuid4().hex,
                    categories=["food"],
                    description="Cold <and> hungry",
                    lat=IN_NORTH[0],
                    lon=IN_NORTH[1],
                ),
            )
            assert created
            await enqueue_cards(session, svc, case, new=True)
            await session.commit()
        svc.wake_outbox()
        return case, await card_for(self.north_group, case)

    async def target(self, kind: str, role: str) -> tuple[Case, BotMessage]:
        """A fresh case (or report) and its card for a role that may act on it; one shared by the refused roles, since
        a refusal changes nothing (and if one did, the next refusal on it would not read as expected either)."""
        make = self.new_case if kind == "case" else self.new_report
        if role in CASE_TEAM:
            return await make()
        if kind not in self.shared:
            self.shared[kind] = await make()
        return self.shared[kind]

    async def new_report(self) -> tuple[Case, BotMessage]:
        svc = self.svc
        async with svc.db.session() as session:
            case, created = await reports.create(
                session,
                Case(
                    idempotency_key=uuid.uuid4().hex,
                    description="Someone asleep on a bench",
                    place_text="Under the bridge",
                    lat=IN_NORTH[0],
                    lon=IN_NORTH[1],
                ),
                ReportDetails(reporter_key="access-matrix"),
                now=svc.clock(),
            )
            assert created
            await enqueue_cards(session, svc, case, new=True)
            await session.commit()
        svc.wake_outbox()
        return case, await card_for(self.north_group, case)

    async def case(self, case_id: int | None) -> Case:
        assert case_id is not None
        async with self.svc.db.session() as session:
            found = await cases.get(session, case_id)
        assert found is not None
        return found

    async def actions(self, case_id: int | None) -> list[str]:
        assert case_id is not None
        async with self.svc.db.session() as session:
            return [e.action for e in await cases.events(session, case_id)]

    async def report(self, case_id: int | None) -> ReportDetails:
        assert case_id is not None
        async with self.svc.db.session() as session:
            found = await reports.get(session, case_id)
        assert found is not None
        return found

    async def station_row(self, station_id: int) -> Station:
        async with self.svc.db.session() as session:
            found = await stations.get(session, station_id)
        assert found is not None
        return found

    async def reset_station(self, station_id: int, *, code: str | None = None, verified: bool = True) -> None:
        async with self.svc.db.session() as session:
            status = StationStatus.OPEN
            await stations.set_status(session, station_id, status=status, alert_code=code)
            if not verified:
                row = await stations.get(session, station_id)
                assert row is not None
                row.last_verified = None
                session.add(row)
                await session.commit()

    async def new_draft(self) -> tuple[int, BotMessage]:
        """A broadcast waiting for approval, its card posted in the coordinators' group."""
        svc = self.svc
        async with svc.db.session() as session:
            draft, _created = await weather.create_broadcast(
                session,
                Broadcast(
                    kind=Kind.MANUAL.value,
                    text="Extra beds at the railway station tonight",
                    status=BroadcastStatus.DRAFT.value,
                    report_chats=[self.coord_group.id],
                ),
            )
            await weather_jobs.post_cards(session, svc, draft)
            await session.commit()
        svc.wake_outbox()
        assert draft.id is not None
        data = f"wb|approve|{draft.id}"
        card = await self.coord_group.wait_until(lambda ms: next((m for m in ms if data in callbacks(m)), None))
        return draft.id, card

    async def broadcast_row(self, broadcast_id: int) -> Broadcast:
        async with self.svc.db.session() as session:
            found = await weather.get_broadcast(session, broadcast_id)
        assert found is not None
        return found

    async def broadcasts_by(self, user_id: int) -> list[Broadcast]:
        async with self.svc.db.session() as session:
            statement = select(Broadcast).where(Broadcast.created_by == user_id)
            return list((await session.exec(statement)).all())

    async def codes_by(self, user_id: int, kind: CodeKind, role: str | None = None) -> int:
        async with self.svc.db.session() as session:
            statement = select(TeamCode).where(TeamCode.created_by == user_id, TeamCode.kind == kind.value)
            rows = (await session.exec(statement)).all()
        return sum(1 for row in rows if role is None or row.role == role)


def callbacks(message: BotMessage) -> list[str]:
    return [str(b["callback_data"]) for row in message.inline_keyboard for b in row if b.get("callback_data")]


async def card_for(group: FakeGroup, case: Case) -> BotMessage:
    return await group.wait_until(lambda ms: next((m for m in ms if f"· {case.reference}" in m.content), None))


async def arrives(
    reader: FakeUser | FakeGroup, after: int, check: Callable[[BotMessage], bool], timeout: float = 5.0
) -> BotMessage | None:
    """The first bot message after the first `after` ones that passes `check`, waiting up to `timeout`."""
    try:
        return await reader.wait_until(lambda ms: next((m for m in ms[after:] if check(m)), None), timeout)
    except AssertionError:
        return None


async def follows(user: FakeUser, after: int, check: Callable[[BotMessage], bool], answer: Answer) -> BotMessage | None:
    """What the bot sent the user after a callback: waited for unless the answer was a refusal (an alert), after
    which nothing may follow — so then only what is already there counts."""
    if not answer.alert:
        return await arrives(user, after, check)
    return next((m for m in user.messages[after:] if check(m)), None)


def mentions(reference: str | None) -> Callable[[BotMessage], bool]:
    return lambda m: reference is not None and reference in m.content


def has_data(prefix: str) -> Callable[[BotMessage], bool]:
    return lambda m: any(d.startswith(prefix) for d in callbacks(m))


async def press(user: FakeUser, message: BotMessage, data: str, chat: FakeGroup | None = None) -> Answer:
    """Tap the real button carrying `data` on `message` (it must be shown there now)."""
    assert data in callbacks(message), f"{data!r} is not a button of {message.summary()}"
    query = await user.send_callback(message.message_id, data, chat=chat)
    return Answer(*await user.callback_answer(query))


async def command(user: FakeUser, text: str, args: str = "", chat: FakeGroup | None = None) -> BotMessage | None:
    reader: FakeUser | FakeGroup = chat if chat is not None else user
    before = len(reader.messages)
    await user.send_command(text, args, chat=chat)
    return await arrives(reader, before, lambda _m: True)


async def edited_to(user: FakeUser, message: BotMessage, edits: int, prefix: str, answer: Answer) -> bool:
    """Did the message get edited to show buttons starting with `prefix`? (Refusals are alerts that edit nothing.)"""
    if not answer.alert:
        try:
            await user.wait_until(
                lambda _ms: message if message.edits > edits and has_data(prefix)(message) else None, 5.0
            )
        except AssertionError:
            return False
    return message.edits > edits and has_data(prefix)(message)


# -- the table -------------------------------------------------------------------------------------------------------

Run = Callable[[Lab, str, str], Awaitable[Outcome]]


@dataclass(frozen=True)
class Action:
    name: str
    allowed: frozenset[str]
    run: Run
    # "tap": the real button (allowed roles reach it by the normal path; refused ones only when `seen_by_all`),
    # "forged": crafted data from the role's own chat, "command": a typed command.
    paths: tuple[str, ...]
    refusal: Callable[[str], str | None]  # the msgid a refused role must be told (None: a silent, narrower view)
    seen_by_all: bool = False  # a card in a group: everyone there sees its buttons
    forge_when_allowed: bool = True

    def paths_for(self, role: str) -> list[str]:
        allowed = role in self.allowed
        chosen = []
        for path in self.paths:
            if path == "tap" and not allowed and not self.seen_by_all:
                continue
            if path == "forged" and allowed and not self.forge_when_allowed:
                continue
            chosen.append(path)
        return chosen


def refuse_case(role: str) -> str:
    return CASE_OTHER_TEAM if role in ACTING else case_staff.NOT_STAFF


def refuse_report(role: str) -> str:
    return report_staff.OTHER_TEAM if role in ACTING else report_staff.NOT_STAFF


def refuse_queue_case(role: str) -> str:
    return CASE_OTHER_TEAM if role in ACTING else queue.NOT_STAFF


def constant(msgid: str | None) -> Callable[[str], str | None]:
    return lambda _role: msgid


# Case (request) card: cs|<verb>|<case>, a fresh North case per attempt.


def case_action(verb: str) -> Run:
    async def run(lab: Lab, role: str, path: str) -> Outcome:
        user = lab.users[role]
        case, card = await lab.target("case", role)
        before = len(user.messages)
        data = f"cs|{verb}|{case.id}"
        answer = await (press(user, card, data, lab.north_group) if path == "tap" else lab.forge(role, data))
        sends = verb != "claim"  # Details and the steps write to the staff member privately
        prompt = await follows(user, before, mentions(case.reference), answer) if sends else None
        if verb == "claim":
            effect = (await lab.case(case.id)).claimed_by == user.id
        elif verb == "details":
            effect = prompt is not None and prompt.content.startswith("📂")
            if effect:  # the pin follows the answer
                await arrives(user, before, lambda m: m.kind == "location")
        elif verb in ("info", "refer"):
            if prompt is not None:
                after = len(user.messages)
                await user.send_text("Do you have an ID card with you?" if verb == "info" else "Wujin shelter")
                await arrives(user, after, lambda _m: True)
            effect = ("need_info" if verb == "info" else "referred") in await lab.actions(case.id)
        else:  # resolve: reason, then Skip the note, in the private chat
            if prompt is not None:
                after = len(user.messages)
                await press(user, prompt, f"cr|{case.id}|no_help_wanted")
                note = await arrives(user, after, has_data(f"cr|{case.id}|skip"))
                assert note is not None, "no closing-note step"
                after = len(user.messages)
                await press(user, note, f"cr|{case.id}|skip")
                await arrives(user, after, lambda _m: True)
            effect = (await lab.case(case.id)).status == "resolved"
        return Outcome(effect, answer.text)

    return run


# Report card: rs|<verb>|<case>, a fresh North report per attempt.


def report_action(verb: str) -> Run:
    async def run(lab: Lab, role: str, path: str) -> Outcome:
        user = lab.users[role]
        case, card = await lab.target("report", role)
        before = len(user.messages)
        if verb in ("keep", "out"):
            data = f"rs|keep|{case.id}" if verb == "keep" else f"rs|out|{case.id}|already_gone"
            if path == "tap":  # the outcome question, in the private chat after Resolve on the card
                await press(user, card, f"rs|resolve|{case.id}", lab.north_group)
                question = await arrives(user, before, has_data(f"rs|out|{case.id}|"))
                assert question is not None, "no outcome question"
                answer = await press(user, question, data)
            else:
                answer = await lab.forge(role, data)
            if verb == "keep":
                stays = lab.t(role).gettext("OK, the report stays open.")
                effect = answer.text == stays and (await lab.case(case.id)).is_open
            else:
                effect = (await lab.case(case.id)).status == "resolved"
            return Outcome(effect, answer.text)
        data = f"rs|{verb}|{case.id}"
        answer = await (press(user, card, data, lab.north_group) if path == "tap" else lab.forge(role, data))
        if verb == "going":
            effect = (await lab.case(case.id)).claimed_by == user.id
        elif verb in ("found", "notfound"):
            effect = (await lab.report(case.id)).found is (verb == "found")
        elif verb == "details":
            effect = (
                await follows(user, before, lambda m: m.content.startswith(f"📂 {case.reference}"), answer) is not None
            )
            if effect:  # the pin follows the answer
                await arrives(user, before, lambda m: m.kind == "location")
        else:  # resolve: the outcome is chosen privately
            question = await follows(user, before, has_data(f"rs|out|{case.id}|"), answer)
            if question is not None:
                await press(user, question, f"rs|out|{case.id}|helped_on_the_spot")
            effect = (await lab.case(case.id)).status == "resolved"
        return Outcome(effect, answer.text)

    return run


# /queue and its buttons.


async def queue_command(lab: Lab, role: str, _path: str) -> Outcome:
    reply = await command(lab.users[role], "/queue")
    return Outcome(reply is not None and has_data("qu|p|")(reply), reply.text if reply else None)


async def queue_lists_case(lab: Lab, role: str, _path: str) -> Outcome:
    reply = await command(lab.users[role], "/queue")
    shown = reply is not None and f"qu|o|{lab.standing.id}" in callbacks(reply)
    refused = reply is not None and not has_data("qu|p|")(reply)
    return Outcome(shown, reply.text if reply is not None and refused else None)


async def queue_page(lab: Lab, role: str, path: str) -> Outcome:
    user = lab.users[role]
    if path == "tap":
        listing = await command(user, "/queue")
        assert listing is not None
        answer = await press(user, listing, "qu|p|0")  # 🔄 Refresh: the same list, answered without an alert
        return Outcome(not answer.alert, answer.text)
    target = lab.forge_on[role]
    edits = target.edits
    answer = await lab.forge(role, "qu|p|0")
    return Outcome(await edited_to(user, target, edits, "qu|p|", answer), answer.text)


async def queue_open(lab: Lab, role: str, path: str) -> Outcome:
    user = lab.users[role]
    data = f"qu|o|{lab.standing.id}"
    before = len(user.messages)
    if path == "tap":
        listing = await command(user, "/queue")
        assert listing is not None
        before = len(user.messages)
        answer = await press(user, listing, data)
    else:
        answer = await lab.forge(role, data)
    opened = await follows(user, before, lambda m: m.content.startswith(f"📂 {lab.standing.reference}"), answer)
    return Outcome(opened is not None, answer.text)


# /station and its panel.


def station_command(which: str) -> Run:
    async def run(lab: Lab, role: str, _path: str) -> Outcome:
        station_id, ext = (
            (lab.station, lab.station_ext) if which == "own" else (lab.other_station, lab.other_station_ext)
        )
        reply = await command(lab.users[role], "/station", ext)
        return Outcome(reply is not None and f"sa|{station_id}|food" in callbacks(reply), reply.text if reply else None)

    return run


def station_panel(which: str) -> Run:
    async def run(lab: Lab, role: str, _path: str) -> Outcome:
        station_id = lab.station if which == "own" else lab.other_station
        user = lab.users[role]
        before = len(user.messages)
        answer = await lab.forge(role, f"sp|{station_id}")
        panel = await arrives(user, before, has_data(f"sa|{station_id}|"), 5.0 if not answer.alert else 0.0)
        return Outcome(panel is not None, answer.text)

    return run


def station_action(verb: str, which: str = "own") -> Run:
    async def run(lab: Lab, role: str, path: str) -> Outcome:
        user = lab.users[role]
        station_id, ext = (
            (lab.station, lab.station_ext) if which == "own" else (lab.other_station, lab.other_station_ext)
        )
        await lab.reset_station(
            station_id, code="food_box_empty" if verb == "normal" else None, verified=verb != "verify"
        )
        if verb == "reports":
            async with lab.svc.db.session() as session:
                await station_feedback.add(session, station_id, lab.requester.id, "The kettle is broken")
        data = f"sa|{station_id}|{verb}"
        if path == "tap":
            panel = await command(user, "/station", ext)
            assert panel is not None
            before = len(user.messages)
            answer = await press(user, panel, data)
        else:
            before = len(user.messages)
            answer = await lab.forge(role, data)
        if verb == "text":
            prompt = await follows(user, before, lambda _m: True, answer)
            if prompt is not None:
                after = len(user.messages)
                await user.send_text("Hot water until 22:00")
                await arrives(user, after, lambda _m: True)
        elif verb == "reports":
            await follows(user, before, lambda _m: True, answer)  # the list comes after the answer
        row = await lab.station_row(station_id)
        if verb == "food":
            effect = row.alert_code == "food_box_empty"
        elif verb == "closed":
            effect = row.status == StationStatus.TEMPORARILY_CLOSED.value
        elif verb == "normal":
            effect = row.alert_code is None and row.status == StationStatus.OPEN.value
        elif verb == "verify":
            effect = row.last_verified is not None
        elif verb == "text":
            effect = row.alert == "Hot water until 22:00"
        else:
            async with lab.svc.db.session() as session:
                effect = not await station_feedback.open_items(session, station_id)
                await station_feedback.mark_reviewed(session, station_id)  # the next attempt starts clean
        return Outcome(effect, answer.text)

    return run


# Cold weather: /broadcast, and the approval card wb|<verb>|<id>.


async def broadcast_command(lab: Lab, role: str, _path: str) -> Outcome:
    user = lab.users[role]
    text = f"Warm buses on route 5 all night ({uuid.uuid4().hex[:6]})"
    first = await command(user, "/broadcast")
    if first is not None and has_data("bc|cancel")(first):
        after = len(user.messages)
        await user.send_text(text)
        summary = await arrives(user, after, has_data("bc|send|"))
        assert summary is not None, "no preview"
        await press(user, summary, next(d for d in callbacks(summary) if d.startswith("bc|send|")))
    made = [b for b in await lab.broadcasts_by(user.id) if b.text == text]
    return Outcome(bool(made), first.text if first else None)


async def broadcast_forged_send(lab: Lab, role: str, _path: str) -> Outcome:
    user = lab.users[role]
    count = len(await lab.broadcasts_by(user.id))
    answer = await lab.forge(role, "bc|send|0123456789abcdef")
    return Outcome(len(await lab.broadcasts_by(user.id)) > count, answer.text)


def refuse_forged_send(role: str) -> str:
    return "This announcement was already sent." if role in LEADERS else broadcast.NOT_COORDINATOR


def approval_action(verb: str) -> Run:
    async def run(lab: Lab, role: str, path: str) -> Outcome:
        user = lab.users[role]
        broadcast_id, card = await lab.new_draft()
        before = len(user.messages)
        data = f"wb|{verb}|{broadcast_id}"
        answer = await (press(user, card, data, lab.coord_group) if path == "tap" else lab.forge(role, data))
        row = await lab.broadcast_row(broadcast_id)
        if verb == "approve":
            effect = row.status in (BroadcastStatus.SENDING, BroadcastStatus.DONE) and row.decided_by == user.id
        elif verb == "dismiss":
            effect = row.status == BroadcastStatus.DISMISSED and row.decided_by == user.id
        else:
            prompt = await follows(user, before, lambda _m: True, answer)
            if prompt is not None:
                after = len(user.messages)
                await user.send_text("Beds at the gym too")
                await arrives(user, after, lambda _m: True)
            effect = (await lab.broadcast_row(broadcast_id)).text == "Beds at the gym too"
        return Outcome(effect, answer.text)

    return run


# /teams, its buttons, and /linkteam in a group.


async def teams_command(lab: Lab, role: str, _path: str) -> Outcome:
    reply = await command(lab.users[role], "/teams")
    return Outcome(reply is not None and f"tm|v|{lab.north}" in callbacks(reply), reply.text if reply else None)


def teams_view(data_of: Callable[[Lab], str], shows: Callable[[Lab], str]) -> Run:
    """tm|l and tm|v|<team>: a view edited in place. The tap path opens /teams, then North, then the button."""

    async def run(lab: Lab, role: str, path: str) -> Outcome:
        user = lab.users[role]
        data = data_of(lab)
        if path == "tap":
            listing = await command(user, "/teams")
            assert listing is not None
            if data.startswith("tm|l"):
                edits = listing.edits
                await press(user, listing, f"tm|v|{lab.north}")
                assert await edited_to(user, listing, edits, "tm|i|", Answer(None, False))
            target = listing
        else:
            target = lab.forge_on[role]
        edits = target.edits
        answer = await (press(user, target, data) if path == "tap" else lab.forge(role, data))
        return Outcome(await edited_to(user, target, edits, shows(lab), answer), answer.text)

    return run


def invite_data(kind: str) -> Callable[[Lab], str]:
    return lambda lab: f"tm|i|{lab.north}|{kind}"


def teams_code(data_of: Callable[[Lab], str], kind: CodeKind, role_of_code: str | None) -> Run:
    async def run(lab: Lab, role: str, path: str) -> Outcome:
        user = lab.users[role]
        data = data_of(lab)
        count = await lab.codes_by(user.id, kind, role_of_code)
        if path == "tap":
            listing = await command(user, "/teams")
            assert listing is not None
            edits = listing.edits
            await press(user, listing, f"tm|v|{lab.north}")
            assert await edited_to(user, listing, edits, "tm|i|", Answer(None, False))
            before = len(user.messages)
            answer = await press(user, listing, data)
        else:
            before = len(user.messages)
            answer = await lab.forge(role, data)
        sent = await follows(user, before, lambda m: "t.me/" in m.content or "/linkteam" in m.content, answer)
        return Outcome(await lab.codes_by(user.id, kind, role_of_code) > count and sent is not None, answer.text)

    return run


async def linkteam(lab: Lab, role: str, _path: str) -> Outcome:
    user = lab.users[role]
    group = lab.fake.group(f"New group for {role}", members=[user])
    async with lab.svc.db.session() as session:
        code = await team_model.create_code(
            session,
            CodeKind.LINK,
            lab.spare,
            now=lab.svc.clock(),
            valid_for=timedelta(hours=1),
            created_by=lab.users["admin"].id,
        )
        await session.commit()
    reply = await command(user, "/linkteam", code.code, chat=group)
    async with lab.svc.db.session() as session:
        spare = await team_model.get(session, lab.spare)
    assert spare is not None
    return Outcome(spare.chat_id == group.id, reply.text if reply else None)


# /rota and its buttons.


async def rota_command(lab: Lab, role: str, _path: str) -> Outcome:
    reply = await command(lab.users[role], "/rota")
    return Outcome(reply is not None and has_data("rt|")(reply), reply.text if reply else None)


async def _rota_to(lab: Lab, user: FakeUser, steps: list[str]) -> BotMessage:
    """/rota, then tap through `steps` (each edits the same message)."""
    message = await command(user, "/rota")
    assert message is not None
    for step in steps:
        edits = message.edits
        await press(user, message, step)
        assert await edited_to(user, message, edits, "rt|", Answer(None, False)), step
    return message


def rota_view(data_of: Callable[[Lab], str], via: Callable[[Lab], list[str]], shows: Callable[[Lab], str]) -> Run:
    async def run(lab: Lab, role: str, path: str) -> Outcome:
        user = lab.users[role]
        target = await _rota_to(lab, user, via(lab)) if path == "tap" else lab.forge_on[role]
        edits = target.edits
        data = data_of(lab)
        answer = await (press(user, target, data) if path == "tap" else lab.forge(role, data))
        return Outcome(await edited_to(user, target, edits, shows(lab), answer), answer.text)

    return run


async def rota_set(lab: Lab, role: str, path: str) -> Outcome:
    user = lab.users[role]
    rita = lab.users["responder"].id
    async with lab.svc.db.session() as session:
        await team_model.set_on_call(session, lab.north, 0, None)
        await session.commit()
    data = f"rt|s|{lab.north}|0|{rita}"
    if path == "tap":
        picker = await _rota_to(lab, user, [f"rt|w|{lab.north}", f"rt|d|{lab.north}|0"])
        answer = await press(user, picker, data)
    else:
        answer = await lab.forge(role, data)
    async with lab.svc.db.session() as session:
        week = await team_model.rota(session, lab.north)
    return Outcome(week.get(0) == rita, answer.text)


# The requester's own buttons: staff (of any role) may not use them.


async def requester_answer(lab: Lab, role: str, _path: str) -> Outcome:
    user = lab.users[role]
    before = len(user.messages)
    answer = await lab.forge(role, f"ca|{lab.standing.id}")
    return Outcome(await follows(user, before, lambda _m: True, answer) is not None, answer.text)


async def reason_without_step(lab: Lab, role: str, _path: str) -> Outcome:
    answer = await lab.forge(role, f"cr|{lab.standing.id}|no_help_wanted")
    return Outcome(not (await lab.case(lab.standing.id)).is_open, answer.text)


TAP_FORGED = ("tap", "forged")


def table() -> dict[str, list[Action]]:
    cards = [
        Action(f"cs|{verb}", CASE_TEAM, case_action(verb), TAP_FORGED, refuse_case, seen_by_all=True)
        for verb in ("claim", "info", "refer", "resolve", "details")
    ]
    report_cards = [
        Action(f"rs|{verb}", CASE_TEAM, report_action(verb), TAP_FORGED, refuse_report, seen_by_all=True)
        for verb in ("going", "found", "notfound", "resolve", "details")
    ] + [
        # The outcome question is drawn in the private chat of whoever tapped Resolve: others can only forge it.
        Action(f"rs|{verb}", CASE_TEAM, report_action(verb), TAP_FORGED, refuse_report, forge_when_allowed=False)
        for verb in ("keep", "out")
    ]
    north = lambda lab: f"rt|w|{lab.north}"  # noqa: E731
    return {
        "case card": cards,
        "report card": report_cards,
        "queue": [
            Action("/queue", ACTING, queue_command, ("command",), constant(queue.NOT_STAFF)),
            Action(
                "/queue shows another team's case",
                CASE_TEAM,
                queue_lists_case,
                ("command",),
                lambda role: None if role in ACTING else queue.NOT_STAFF,
            ),
            Action("qu|p", ACTING, queue_page, TAP_FORGED, constant(queue.NOT_STAFF)),
            Action("qu|o", CASE_TEAM, queue_open, TAP_FORGED, refuse_queue_case),
        ],
        "station": [
            Action("/station (own)", STAFF, station_command("own"), ("command",), constant(STATION_COMMAND)),
            Action(
                "/station (another station)",
                ACTING,
                station_command("other"),
                ("command",),
                lambda role: STATION_TEXT if role == "keeper" else STATION_COMMAND,
            ),
            Action("sp (own)", STAFF, station_panel("own"), ("forged",), constant(STATION_TEXT)),
            Action("sp (another station)", ACTING, station_panel("other"), ("forged",), constant(STATION_TEXT)),
            *[
                Action(f"sa|{verb}", STAFF, station_action(verb), TAP_FORGED, constant(STATION_TEXT))
                for verb in ("food", "closed", "normal", "verify", "text")
            ],
            Action(
                "sa|reports",
                LEADERS,
                station_action("reports"),
                TAP_FORGED,
                lambda role: STATION_TEXT if role == "none" else "Sorry, only coordinators can read these reports.",
            ),
            Action(
                "sa|food (another station)", ACTING, station_action("food", "other"), TAP_FORGED, constant(STATION_TEXT)
            ),
        ],
        "cold weather": [
            Action("/broadcast", LEADERS, broadcast_command, ("command",), constant(broadcast.NOT_COORDINATOR)),
            Action("bc|send without a draft", NOBODY, broadcast_forged_send, ("forged",), refuse_forged_send),
            *[
                Action(
                    f"wb|{verb}",
                    LEADERS,
                    approval_action(verb),
                    TAP_FORGED,
                    constant(broadcast.NOT_COORDINATOR),
                    seen_by_all=True,
                )
                for verb in ("approve", "edit", "dismiss")
            ],
        ],
        "teams": [
            Action("/teams", ADMINS, teams_command, ("command",), constant(teams.ONLY_ADMINS)),
            Action(
                "tm|l",
                ADMINS,
                teams_view(lambda lab: "tm|l", lambda lab: "tm|v|"),
                TAP_FORGED,
                constant(teams.ONLY_ADMINS),
            ),
            Action(
                "tm|v",
                ADMINS,
                teams_view(lambda lab: f"tm|v|{lab.north}", lambda lab: "tm|i|"),
                TAP_FORGED,
                constant(teams.ONLY_ADMINS),
            ),
            *[
                Action(
                    f"tm|i ({kind})",
                    ADMINS,
                    teams_code(invite_data(kind), CodeKind.INVITE, kind),
                    TAP_FORGED,
                    constant(teams.ONLY_ADMINS),
                )
                for kind in ("responder", "coordinator")
            ],
            Action(
                "tm|g",
                ADMINS,
                teams_code(lambda lab: f"tm|g|{lab.north}", CodeKind.LINK, None),
                TAP_FORGED,
                constant(teams.ONLY_ADMINS),
            ),
            Action("/linkteam", ADMINS, linkteam, ("command",), constant(teams.ONLY_ADMINS)),
        ],
        "rota": [
            Action("/rota", LEADERS, rota_command, ("command",), constant(teams.ONLY_COORDINATORS)),
            Action(
                "rt|l",
                LEADERS,
                rota_view(lambda lab: "rt|l", lambda lab: [north(lab)], lambda lab: "rt|w|"),
                TAP_FORGED,
                constant(teams.ONLY_COORDINATORS),
            ),
            Action(
                "rt|w",
                LEADERS,
                rota_view(north, lambda lab: [], lambda lab: f"rt|d|{lab.north}|"),
                TAP_FORGED,
                constant(teams.ONLY_COORDINATORS),
            ),
            Action(
                "rt|d",
                LEADERS,
                rota_view(
                    lambda lab: f"rt|d|{lab.north}|0", lambda lab: [north(lab)], lambda lab: f"rt|s|{lab.north}|0|"
                ),
                TAP_FORGED,
                constant(teams.ONLY_COORDINATORS),
            ),
            Action("rt|s", LEADERS, rota_set, TAP_FORGED, constant(teams.ONLY_COORDINATORS)),
        ],
        "requester's buttons": [
            Action(
                "ca (answer a question)",
                NOBODY,
                requester_answer,
                ("forged",),
                constant("This request is not available."),
            ),
            Action(
                "cr (closing reason, no step)", NOBODY, reason_without_step, ("forged",), constant(case_staff.EXPIRED)
            ),
        ],
    }


FAMILIES = list(table())


# -- fixtures --------------------------------------------------------------------------------------------------------


def without_guard(app: WaystationApplication) -> None:
    """The application without the group -2 team guard: case_staff's own checks must scope by team."""
    for handler in list(app.handlers.get(-2, [])):
        if getattr(handler, "callback", None) is teams.scope_guard:
            app.remove_handler(handler, group=-2)


async def start_lab(
    database_url: str, fake: FakeTelegram, configure: Callable[[WaystationApplication], None] | None = None
) -> AsyncIterator[Lab]:
    users = {role: fake.user(NAMES[role], language_code="zh" if role in ZH_ROLES else "en") for role in ROLES}
    requester = fake.user("Req")
    north_group = fake.group("North team", members=list(users.values()))
    south_group = fake.group("South team", members=[users["other_responder"]])
    coord_group = fake.group("Coordinators", members=list(users.values()))
    settings = make_settings(
        fake,
        database_url,
        sections={"escalation": {"enabled": False}},
        group_max_per_minute=100_000,
        overall_max_rate=1000,
    )

    harness = BotHarness(settings, fake, configure=configure)
    harness.expected_rejections.add(NOT_MODIFIED_REJECTION)  # 🔄 Refresh of an unchanged list
    await harness.start()
    svc = harness.services
    async with svc.db.session() as session:
        north, _ = await team_model.save(session, "North")
        await team_model.set_area(session, north, center=IN_NORTH, radius_m=5000)
        south, _ = await team_model.save(session, "South")
        await team_model.set_area(session, south, center=IN_SOUTH, radius_m=5000)
        spare, _ = await team_model.save(session, "Spare")
        assert north.id is not None and south.id is not None and spare.id is not None
        await team_model.link_chat(session, north.id, north_group.id)
        await team_model.link_chat(session, south.id, south_group.id)
        await team_model.add_member(session, south, users["other_responder"].id, "Otto", Role.RESPONDER)
        await team_model.add_member(session, north, users["responder"].id, "Rita", Role.RESPONDER)
        await team_model.add_member(session, north, users["coordinator"].id, "Cole", Role.COORDINATOR)
        one = Station(external_id="acc-one", name_en="Access One", lat=IN_NORTH[0], lon=IN_NORTH[1])
        two = Station(external_id="acc-two", name_en="Access Two", lat=IN_SOUTH[0], lon=IN_SOUTH[1])
        session.add_all([one, two])
        await session.commit()
        ids = (north.id, spare.id, one.id, two.id)
    north_id, spare_id, one_id, two_id = ids
    assert one_id is not None and two_id is not None
    async with svc.db.session() as session:
        await staff.add(session, users["keeper"].id, "Kai", Role.KEEPER, station_id=one_id)
        await staff.add(session, users["admin"].id, "Ada", Role.ADMIN)
    lab = Lab(
        harness,
        fake,
        "postgresql" if database_url.startswith("postgresql") else "sqlite",
        users,
        requester,
        north_group,
        coord_group,
        north_id,
        spare_id,
        one_id,
        "acc-one",
        two_id,
        "acc-two",
    )
    lab.shared["standing"] = await lab.new_case()
    for role, user in users.items():  # a message of the bot in each private chat, to forge callbacks on
        reply = await command(user, "/help")
        assert reply is not None
        lab.forge_on[role] = reply
    try:
        yield lab
    finally:
        await harness.stop()
    harness.assert_clean()


@pytest.fixture
async def lab(database_url: str, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Lab]:
    monkeypatch.setattr(weather_jobs, "STARTUP_DELAY", 3600.0)
    async for made in start_lab(database_url, fake_telegram):
        yield made


# -- the matrix ------------------------------------------------------------------------------------------------------


async def run_matrix(lab: Lab, actions: list[Action], label: str = "") -> None:
    failures: list[str] = []
    english = translator("en")
    for action in actions:
        for role in ROLES:
            for path in action.paths_for(role):
                where = f"{action.name}{label} × {role} ({path})"
                outcome = await action.run(lab, role, path)
                CHECKS[lab.backend] += 1
                allowed = role in action.allowed
                if outcome.effect != allowed:
                    what = "had no effect" if allowed else "took effect"
                    failures.append(f"{where}: {what}; told {outcome.reply!r}")
                if allowed:
                    continue
                msgid = action.refusal(role)
                if msgid is None:
                    continue
                expected = lab.t(role).gettext(msgid)
                if outcome.reply != expected:
                    failures.append(f"{where}: told {outcome.reply!r}, expected {expected!r}")
                elif role in ZH_ROLES and expected == english.gettext(msgid):
                    failures.append(f"{where}: the refusal {msgid!r} has no Chinese translation")
            CELLS[lab.backend].add((action.name + label, role))
    _summary()
    assert not failures, "access matrix failures:\n  " + "\n  ".join(failures)


@pytest.mark.parametrize("family", FAMILIES)
async def test_access_matrix(lab: Lab, family: str) -> None:
    await run_matrix(lab, table()[family])


async def test_case_card_is_scoped_by_case_staff_itself_without_the_group_guard(
    database_url: str, fake_telegram: FakeTelegram, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The team scoping of the case card does not depend on handlers.teams' group -2 guard."""
    monkeypatch.setattr(weather_jobs, "STARTUP_DELAY", 3600.0)
    async for made in start_lab(database_url, fake_telegram, configure=without_guard):
        assert made.bot.runner is not None
        assert not any(
            getattr(h, "callback", None) is teams.scope_guard for h in made.bot.runner.app.handlers.get(-2, [])
        )
        await run_matrix(made, table()["case card"], " (no guard)")


# -- removed or demoted after the button was drawn ---------------------------------------------------------------


async def set_staff(lab: Lab, role_key: str, role: Role | None, *, station_id: int | None = None) -> None:
    """Change (or with None remove) someone's staff role, as `waystation staff add|remove` does."""
    user = lab.users[role_key]
    async with lab.svc.db.session() as session:
        if role is None:
            assert await staff.remove(session, user.id)
        else:
            await staff.add(session, user.id, NAMES[role_key], role, station_id=station_id)


async def set_membership(lab: Lab, role_key: str, team_id: int, role: Role | None) -> None:
    """Add someone to a team with a role, or (None) remove them from it."""
    user = lab.users[role_key]
    async with lab.svc.db.session() as session:
        team = await team_model.get(session, team_id)
        assert team is not None
        if role is None:
            assert await team_model.remove_member(session, team_id, user.id)
        else:
            await team_model.add_member(session, team, user.id, NAMES[role_key], role)
        await session.commit()


async def test_staff_removed_or_demoted_after_the_button_was_drawn_are_refused(lab: Lab) -> None:
    rita, cole, ada, kai = (lab.users[k] for k in ("responder", "coordinator", "admin", "keeper"))
    en = translator("en")

    # Claim on a card drawn while Rita was a North responder: removed from staff, demoted, or out of the team.
    for change, undo, told in (
        (lambda: set_staff(lab, "responder", None), lambda: set_staff(lab, "responder", Role.RESPONDER), "NOT_STAFF"),
        (
            lambda: set_staff(lab, "responder", Role.KEEPER),
            lambda: set_staff(lab, "responder", Role.RESPONDER),
            "NOT_STAFF",
        ),
        (
            lambda: set_membership(lab, "responder", lab.north, None),
            lambda: set_membership(lab, "responder", lab.north, Role.RESPONDER),
            "OTHER_TEAM",
        ),
    ):
        case, card = await lab.new_case()
        await change()
        answer = await press(rita, card, f"cs|claim|{case.id}", lab.north_group)
        expected = case_staff.NOT_STAFF if told == "NOT_STAFF" else CASE_OTHER_TEAM
        assert (answer.text, answer.alert) == (en.gettext(expected), True)
        assert (await lab.case(case.id)).claimed_by is None
        await undo()

    # In the middle of Resolve (the reason keyboard is in her private chat) she leaves the team: the reason is refused.
    case, card = await lab.new_case()
    before = len(rita.messages)
    await press(rita, card, f"cs|resolve|{case.id}", lab.north_group)
    reasons = await arrives(rita, before, has_data(f"cr|{case.id}|"))
    assert reasons is not None
    await set_membership(lab, "responder", lab.north, None)
    answer = await press(rita, reasons, f"cr|{case.id}|no_help_wanted")
    assert (answer.text, answer.alert) == (en.gettext(CASE_OTHER_TEAM), True)
    assert (await lab.case(case.id)).is_open
    await set_membership(lab, "responder", lab.north, Role.RESPONDER)

    # The same while typing a question (Need info) or a referral: the typed text is refused and nothing is sent.
    for verb, event in (("info", "need_info"), ("refer", "referred")):
        case, card = await lab.new_case()
        before = len(rita.messages)
        await press(rita, card, f"cs|{verb}|{case.id}", lab.north_group)
        assert await arrives(rita, before, mentions(case.reference)) is not None
        await set_membership(lab, "responder", lab.north, None)
        before = len(rita.messages)
        await rita.send_text("Do you have an ID card?")
        reply = await arrives(rita, before, lambda _m: True)
        assert reply is not None and reply.text == en.gettext(CASE_OTHER_TEAM), reply
        assert event not in await lab.actions(case.id)
        await set_membership(lab, "responder", lab.north, Role.RESPONDER)

    # A report's outcome question, answered after she left the team.
    report, card = await lab.new_report()
    before = len(rita.messages)
    await press(rita, card, f"rs|resolve|{report.id}", lab.north_group)
    question = await arrives(rita, before, has_data(f"rs|out|{report.id}|"))
    assert question is not None
    await set_membership(lab, "responder", lab.north, None)
    answer = await press(rita, question, f"rs|out|{report.id}|already_gone")
    assert (answer.text, answer.alert) == (en.gettext(report_staff.OTHER_TEAM), True)
    assert (await lab.case(report.id)).is_open
    await set_membership(lab, "responder", lab.north, Role.RESPONDER)

    # /queue drawn, then Rita is no longer staff: opening a case from it is refused.
    listing = await command(rita, "/queue")
    assert listing is not None
    await set_staff(lab, "responder", None)
    answer = await press(rita, listing, f"qu|o|{lab.standing.id}")
    assert (answer.text, answer.alert) == (en.gettext(queue.NOT_STAFF), True)
    await set_staff(lab, "responder", Role.RESPONDER)

    # Cole, demoted from coordinator to responder: the approval card, the note he is typing, his /broadcast preview.
    async def demote_cole() -> None:
        await set_staff(lab, "coordinator", Role.RESPONDER)
        await set_membership(lab, "coordinator", lab.north, Role.RESPONDER)

    async def restore_cole() -> None:
        await set_staff(lab, "coordinator", Role.COORDINATOR)
        await set_membership(lab, "coordinator", lab.north, Role.COORDINATOR)

    draft_id, card = await lab.new_draft()
    await demote_cole()
    answer = await press(cole, card, f"wb|approve|{draft_id}", lab.coord_group)
    assert (answer.text, answer.alert) == (en.gettext(broadcast.NOT_COORDINATOR), True)
    assert (await lab.broadcast_row(draft_id)).status == BroadcastStatus.DRAFT
    await restore_cole()
    before = len(cole.messages)
    await press(cole, card, f"wb|edit|{draft_id}", lab.coord_group)
    assert await arrives(cole, before, lambda _m: True) is not None
    await demote_cole()
    before = len(cole.messages)
    await cole.send_text("Beds at the gym too")
    reply = await arrives(cole, before, lambda _m: True)
    assert reply is not None and reply.text == en.gettext(broadcast.NOT_COORDINATOR)
    assert (await lab.broadcast_row(draft_id)).text == "Extra beds at the railway station tonight"
    await restore_cole()

    first = await command(cole, "/broadcast")
    assert first is not None and has_data("bc|cancel")(first)
    before = len(cole.messages)
    await cole.send_text("Warm buses all night")
    summary = await arrives(cole, before, has_data("bc|send|"))
    assert summary is not None
    await demote_cole()
    answer = await press(cole, summary, next(d for d in callbacks(summary) if d.startswith("bc|send|")))
    assert (answer.text, answer.alert) == (en.gettext(broadcast.NOT_COORDINATOR), True)
    assert not await lab.broadcasts_by(cole.id)

    # /rota drawn for Cole as coordinator, then demoted: choosing who is on call is refused.
    await restore_cole()
    picker = await _rota_to(lab, cole, [f"rt|w|{lab.north}", f"rt|d|{lab.north}|0"])
    await demote_cole()
    answer = await press(cole, picker, f"rt|s|{lab.north}|0|{rita.id}")
    assert (answer.text, answer.alert) == (en.gettext(teams.ONLY_COORDINATORS), True)
    async with lab.svc.db.session() as session:
        assert 0 not in await team_model.rota(session, lab.north)
    await restore_cole()

    # Ada's /teams view drawn while she was an admin; demoted to coordinator, her invite tap is refused.
    listing = await command(ada, "/teams")
    assert listing is not None
    edits = listing.edits
    await press(ada, listing, f"tm|v|{lab.north}")
    assert await edited_to(ada, listing, edits, "tm|i|", Answer(None, False))
    await set_staff(lab, "admin", Role.COORDINATOR)
    answer = await press(ada, listing, f"tm|i|{lab.north}|responder")
    assert (answer.text, answer.alert) == (en.gettext(teams.ONLY_ADMINS), True)
    assert await lab.codes_by(ada.id, CodeKind.INVITE) == 0
    await set_staff(lab, "admin", Role.ADMIN)

    # Kai's panel drawn while he kept station one; moved to station two, his tap on one's panel is refused; and the
    # notice he is typing when he stops being staff is refused too.
    zh = translator("zh_Hans")
    await lab.reset_station(lab.station)
    panel = await command(kai, "/station", lab.station_ext)
    assert panel is not None
    await set_staff(lab, "keeper", Role.KEEPER, station_id=lab.other_station)
    answer = await press(kai, panel, f"sa|{lab.station}|food")
    assert (answer.text, answer.alert) == (zh.gettext(STATION_TEXT), True)
    assert (await lab.station_row(lab.station)).alert_code is None
    await set_staff(lab, "keeper", Role.KEEPER, station_id=lab.station)
    before = len(kai.messages)
    await press(kai, panel, f"sa|{lab.station}|text")
    assert await arrives(kai, before, lambda _m: True) is not None
    await set_staff(lab, "keeper", None)
    before = len(kai.messages)
    await kai.send_text("Closed for cleaning")
    reply = await arrives(kai, before, lambda _m: True)
    assert reply is not None and reply.text == zh.gettext(STATION_TEXT)
    assert (await lab.station_row(lab.station)).alert is None
