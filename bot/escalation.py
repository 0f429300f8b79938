"""Escalation: an alert never dies silently (Grafana OnCall's lesson), and a claim never goes stale unnoticed.

Every new case gets a watch (``models.teams.EscalationTimer``), armed in the transaction that posts its cards. The
runner here looks for due watches every ``escalation.check_every_seconds`` (and at start-up, so nothing is lost by
a restart) and fires each one in its own transaction:

* **unclaimed** — the chain of the case's first team (its own, else ``escalation.chain``): at each step's time the
  group is reminded, the on-call person, the coordinators or the whole team are messaged directly, or the card goes
  to the default team too; after the last step, that step repeats every ``repeat_every_minutes``. Out of the team's
  duty hours the chain waits for duty to start (``out_of_hours = "wait"``). Waiting for the requester's answer
  (need info) is not "nobody answers": the chain pauses.
* **claimed** — a claim with no update for ``remind_claimer_after_hours``: the claimer is reminded; with still no
  update by ``release_claim_after_hours``, the claim is released, the case is back in the queue (the card says so)
  and a fresh chain starts.

Claiming or closing the case stops the chain at once: a firing re-reads the case and sends nothing for a claimed or
closed one. A firing is claimed by a conditional UPDATE and committed with its messages (all through the outbox)
and its case events, so it happens exactly once — with two runners, or across a crash and restart. All times come
from ``services.clock`` (frozen in tests).

Every day at ``teams.daily_check_at`` coordinators hear about teams with nobody on call today and members the bot
cannot write to; once per day (the outbox dedupe key carries the date).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.config import EscalationStep, Settings
from bot.i18n import Translator, translator
from handlers.case_views import when
from handlers.common import esc
from models import cases, outbox, teams, users
from models.cases import Case, CaseKind, CaseStatus
from models.teams import EscalationTimer, Phase, Team

if TYPE_CHECKING:
    from telegram.ext import Application

    from bot.services import Services

log = logging.getLogger("waystation.escalation")

# A watch with nothing scheduled (chain over, no repeats; a case waiting for the requester) looks again this often,
# so a late claim still gets its stale-claim watch and an answered question resumes the chain.
RECHECK = timedelta(minutes=15)
# The most steps one firing catches up on after a long outage (the repeats in between collapse into one message).
MAX_CATCH_UP = 1000
BOT_DATA_KEY = "escalation"

_chain_adapter = TypeAdapter(list[EscalationStep])


@dataclass(frozen=True)
class Step:
    after: timedelta
    notify: tuple[str, ...]


def chain_for(settings: Settings, team: Team | None) -> list[Step]:
    """The team's own chain, else the configured one (a stored chain that does not validate falls back too)."""
    steps: list[EscalationStep] = settings.escalation.chain
    if team is not None and team.escalation:
        try:
            steps = _chain_adapter.validate_python(team.escalation)
        except ValidationError:
            log.warning("team %s: its escalation chain is not valid; using the default chain", team.id)
    return [Step(timedelta(minutes=s.after_minutes), tuple(dict.fromkeys(s.notify))) for s in steps]


def validate_chain(raw: Any) -> list[dict[str, Any]]:
    """A chain given by an operator (JSON) → the list to store; raises ValueError naming the problem."""
    try:
        steps = _chain_adapter.validate_python(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "chain"
        raise ValueError(f"escalation {where}: {error['msg']}") from None
    times = [s.after_minutes for s in steps]
    if any(later <= earlier for earlier, later in itertools.pairwise(times)):
        raise ValueError("escalation: steps must come in increasing after_minutes")
    return [s.model_dump() for s in steps]


def step_offset(steps: list[Step], repeat: timedelta | None, index: int) -> timedelta | None:
    """How long after the chain began step `index` (0-based; past the chain: the repeats of its last step) is due;
    None: never."""
    if index < len(steps):
        return steps[index].after
    if not steps or repeat is None:
        return None
    return steps[-1].after + repeat * (index - len(steps) + 1)


def step_due(steps: list[Step], repeat: timedelta | None, base: datetime, index: int) -> datetime | None:
    offset = step_offset(steps, repeat, index)
    return base + offset if offset is not None else None


def _repeat(settings: Settings) -> timedelta | None:
    minutes = settings.escalation.repeat_every_minutes
    return timedelta(minutes=minutes) if minutes > 0 else None


async def arm(session: AsyncSession, svc: Services, case: Case, case_teams: list[Team]) -> None:
    """Start watching a new case (called while its first cards are enqueued, in the same transaction)."""
    if not svc.settings.escalation.enabled or case.id is None:
        return
    primary = case_teams[0] if case_teams else await teams.default_team(session, svc.settings.teams.default_team)
    now = svc.clock()
    steps = chain_for(svc.settings, primary)
    due = step_due(steps, _repeat(svc.settings), now, 0) or now + RECHECK
    await teams.arm(session, case.id, base_at=now, due_at=due)


# --- the runner ---------------------------------------------------------------------------------------------------


class EscalationRunner:
    """Fires due escalation watches and runs the daily check; one per Application (see start()/stop())."""

    def __init__(self, application: Application[Any, Any, Any, Any, Any, Any]) -> None:
        self.application = application
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._pass = asyncio.Lock()
        self._next_check: datetime | None = None

    @property
    def svc(self) -> Services:
        services: Services = self.application.bot_data["services"]
        return services

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="waystation-escalation")

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=10)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None

    def wake(self) -> None:
        """Look for due watches now (tests call this after moving the clock)."""
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except Exception as exc:  # one bad pass must not stop escalation for good; never log case data
                log.error("escalation pass failed: %s", type(exc).__name__)
            if self._stopping:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.svc.settings.escalation.check_every_seconds)
            self._wake.clear()

    async def tick(self) -> int:
        """One pass: fire every due watch, then the daily check. Returns how many watches fired."""
        async with self._pass:
            svc = self.svc
            now = svc.clock()
            async with svc.db.session() as session:
                due = await teams.due_timers(session, now)
            fired = 0
            for timer_id, seen in due:
                if await self._fire(timer_id, seen, now):
                    fired += 1
            await self._daily_check(now)
        return fired

    # -- one firing -------------------------------------------------------------------------------------------

    async def _fire(self, timer_id: int, seen: int, now: datetime) -> bool:
        svc = self.svc
        async with svc.db.session() as session:
            timer = await teams.claim_timer(session, timer_id, seen, now)
            if timer is None:
                return False  # another runner took this firing (or it is no longer due)
            previous = timer.updated_at
            case = await session.get(Case, timer.case_id, populate_existing=True)
            if case is None or not case.is_open:
                timer.phase, timer.due_at = Phase.DONE.value, None
            elif timer.phase == Phase.UNCLAIMED.value:
                await self._unclaimed(session, timer, case, now, previous)
            else:
                await self._claimed(session, timer, case, now, previous)
            timer.updated_at = now
            session.add(timer)
            await session.commit()
        svc.wake_outbox()
        return True

    async def _unclaimed(
        self, session: AsyncSession, timer: EscalationTimer, case: Case, now: datetime, previous: datetime
    ) -> None:
        settings = self.svc.settings
        assert case.id is not None
        if case.claimed_by is not None:
            await self._watch_claim(session, timer, case, now, previous)
            return
        case_teams = await teams.teams_of(session, case.id)
        primary = case_teams[0] if case_teams else await teams.default_team(session, settings.teams.default_team)
        steps, repeat = chain_for(settings, primary), _repeat(settings)
        if case.status == CaseStatus.NEED_INFO:
            # Waiting for the requester's answer is not "nobody answers": the chain's clock stops meanwhile.
            _delay(timer, now + RECHECK, now)
            return
        if self._postponed(timer, primary, now):
            return
        index, fire = timer.step, list[int]()
        while len(fire) < MAX_CATCH_UP:
            due = step_due(steps, repeat, timer.base_at, index)
            if due is None or due > now:
                break
            fire.append(index)
            index += 1
        if fire:
            await self._escalate(session, case, case_teams, primary, steps, fire, timer.fired, now)
        timer.step = index
        timer.due_at = step_due(steps, repeat, timer.base_at, index) or now + RECHECK

    def _postponed(self, timer: EscalationTimer, primary: Team | None, now: datetime) -> bool:
        """Off duty with out_of_hours = "wait": move the chain (its clock included) to when duty starts."""
        settings = self.svc.settings
        if settings.escalation.out_of_hours != "wait":
            return False
        state = teams.duty(primary, settings.timezone, now)
        if state.is_open or state.changes_at is None:
            return False  # on duty, or never on duty again (then nobody would ever hear of it: carry on)
        _delay(timer, state.changes_at, now)
        return True

    async def _watch_claim(
        self, session: AsyncSession, timer: EscalationTimer, case: Case, now: datetime, previous: datetime
    ) -> None:
        """The case was claimed since the last look: from now on, watch for a stale claim."""
        assert case.id is not None
        latest = await teams.latest_update(session, case.id)
        timer.phase, timer.step = Phase.CLAIMED.value, 0
        timer.mark = latest.id if latest is not None else None
        # The update's own time when it falls between the last look and now (always, when the bot's clock is the
        # real one); otherwise the update counts from now, when it was first seen.
        timer.base_at = latest.at if latest is not None and previous < latest.at <= now else now
        timer.due_at = timer.base_at + timedelta(hours=self.svc.settings.escalation.remind_claimer_after_hours)

    async def _claimed(
        self, session: AsyncSession, timer: EscalationTimer, case: Case, now: datetime, previous: datetime
    ) -> None:
        settings = self.svc.settings.escalation
        assert case.id is not None
        if case.claimed_by is None:  # referred, released, or back to new: unclaimed again → a fresh chain
            await self._restart_chain(session, timer, case, now)
            return
        latest = await teams.latest_update(session, case.id)
        if latest is not None and latest.id != timer.mark:
            await self._watch_claim(session, timer, case, now, previous)  # there was an update: the clock restarts
            if timer.due_at is not None and timer.due_at > now:
                return
        case_teams = await teams.teams_of(session, case.id)
        primary = (
            case_teams[0] if case_teams else await teams.default_team(session, self.svc.settings.teams.default_team)
        )
        if self._postponed(timer, primary, now):
            return
        remind, release = (
            timedelta(hours=settings.remind_claimer_after_hours),
            timedelta(hours=settings.release_claim_after_hours),
        )
        if timer.step == 0:
            release_at = max(timer.base_at + release, now + (release - remind))
            await self._remind_claimer(session, case, timer, release_at, now)
            timer.step, timer.due_at = 1, release_at
            return
        await self._release(session, timer, case, now)

    async def _restart_chain(self, session: AsyncSession, timer: EscalationTimer, case: Case, now: datetime) -> None:
        assert case.id is not None
        case_teams = await teams.teams_of(session, case.id)
        primary = (
            case_teams[0] if case_teams else await teams.default_team(session, self.svc.settings.teams.default_team)
        )
        steps = chain_for(self.svc.settings, primary)
        timer.phase, timer.step, timer.mark, timer.base_at = Phase.UNCLAIMED.value, 0, None, now
        timer.due_at = step_due(steps, _repeat(self.svc.settings), now, 0) or now + RECHECK

    # -- what a firing does --------------------------------------------------------------------------------------

    async def _escalate(
        self,
        session: AsyncSession,
        case: Case,
        case_teams: list[Team],
        primary: Team | None,
        steps: list[Step],
        fire: list[int],
        token: int,
        now: datetime,
    ) -> None:
        """Steps `fire` (0-based) are due: tell everyone they name, once each, and record every step on the case."""
        assert case.id is not None
        svc, settings = self.svc, self.svc.settings
        repeat = _repeat(settings)
        targets = list(dict.fromkeys(t for i in fire for t in steps[min(i, len(steps) - 1)].notify))
        last = fire[-1]
        offset = step_offset(steps, repeat, last) or timedelta(0)
        minutes = int(offset.total_seconds() // 60)  # time since the chain began (on duty, when it waits off duty)
        sent = _Recipients(token, case.id)
        team_ids = [t.id for t in case_teams if t.id is not None]
        for target in targets:
            if target == "group":
                for chat_id in await _case_chats(session, svc, case_teams):
                    await sent.message(session, chat_id, *self._group_text(case, minutes))
            elif target == "on_call":
                for team in case_teams or ([primary] if primary is not None else []):
                    on_call = await teams.on_call(session, team.id or 0, now, settings.timezone)
                    if on_call is not None:
                        t = await _language_of(session, svc, on_call)
                        text = t.gettext(
                            "⏰ You are on call for <b>{team}</b>: <b>{reference}</b> has waited {minutes} min and "
                            "nobody has claimed it."
                        ).format(team=_esc(team.name), reference=_esc(case.reference), minutes=minutes)
                        await sent.message(session, on_call, text, _buttons(t, case))
            elif target in ("coordinators", "team"):
                people = (
                    await teams.coordinators(session, team_ids)
                    if target == "coordinators"
                    else await teams.responders(session, team_ids)
                )
                names = ", ".join(_esc(t.name) for t in case_teams) or "—"
                for person in people:
                    t = await _language_of(session, svc, person.telegram_id)
                    text = t.gettext(
                        "⏰ Escalation: <b>{reference}</b> ({teams}) has waited {minutes} min and nobody has "
                        "claimed it."
                    ).format(reference=_esc(case.reference), teams=names, minutes=minutes)
                    await sent.message(session, person.telegram_id, text, _buttons(t, case))
            elif target == "default_team":
                await self._to_default_team(session, case, case_teams, sent, minutes)
        for index in fire:
            if index >= len(steps) and index != last:
                continue  # repeats missed during an outage: one event for the latest
            step = steps[min(index, len(steps) - 1)]
            # Stamped like every other case event (real time), so the timeline keeps its order.
            cases.add_event(
                session, case.id, "escalated", step=index + 1, notify=list(step.notify), repeat=index >= len(steps)
            )
        log.info("case %s: escalation step %s (%s)", case.id, last + 1, ",".join(targets))

    def _group_text(self, case: Case, minutes: int) -> tuple[str, dict[str, Any] | None]:
        t = translator(self.svc.settings.i18n.default_language)
        text = t.gettext(
            "⏰ <b>{reference}</b> has waited {minutes} min and nobody has claimed it. Can someone take it?"
        ).format(reference=_esc(case.reference), minutes=minutes)
        return text, _buttons(t, case)

    async def _to_default_team(
        self, session: AsyncSession, case: Case, case_teams: list[Team], sent: _Recipients, minutes: int
    ) -> None:
        """The card goes to the default team's group too (its staff may then act on it); if it is there already,
        a reminder is posted there instead."""
        from handlers import case_alerts  # the card renderer; imported here because it imports this module

        svc = self.svc
        assert case.id is not None
        fallback = await teams.default_team(session, svc.settings.teams.default_team)
        if fallback is not None and all(t.id != fallback.id for t in case_teams):
            await teams.assign(session, case.id, [fallback], "escalation")
            await case_alerts.enqueue_cards(session, svc, case, new=False)
            return
        for chat_id in await case_alerts.default_chats(session, svc):
            await sent.message(session, chat_id, *self._group_text(case, minutes))

    async def _remind_claimer(
        self, session: AsyncSession, case: Case, timer: EscalationTimer, release_at: datetime, now: datetime
    ) -> None:
        assert case.id is not None and case.claimed_by is not None
        svc = self.svc
        t = await _language_of(session, svc, case.claimed_by)
        idle = max(1, round((now - timer.base_at).total_seconds() / 3600))
        text = t.ngettext(
            "⏰ <b>{reference}</b> has had no update for {n} hour since you claimed it or last worked on it. "
            "Please add a note, ask for information, refer or resolve it; without an update it goes back to the "
            "queue at {time}.",
            "⏰ <b>{reference}</b> has had no update for {n} hours since you claimed it or last worked on it. "
            "Please add a note, ask for information, refer or resolve it; without an update it goes back to the "
            "queue at {time}.",
            idle,
        ).format(reference=_esc(case.reference), n=idle, time=when(t, release_at, svc.settings.timezone))
        await outbox.enqueue_message(
            session,
            case.claimed_by,
            text,
            reply_markup=_claimer_buttons(t, case),
            dedupe_key=f"esc:{case.id}:{timer.fired}:{case.claimed_by}",
        )
        cases.add_event(session, case.id, "claim_reminder", staff_id=case.claimed_by, hours=idle)
        log.info("case %s: stale claim, claimer reminded", case.id)

    async def _release(self, session: AsyncSession, timer: EscalationTimer, case: Case, now: datetime) -> None:
        from handlers import case_alerts

        assert case.id is not None and case.claimed_by is not None
        svc = self.svc
        claimer = case.claimed_by
        idle = round((now - timer.base_at).total_seconds() / 3600)
        if not await teams.release_claim(session, case.id, claimer, hours_idle=idle):
            await self._restart_chain(session, timer, case, now)  # it changed under us: look again from scratch
            return
        cases.add_event(session, case.id, "released", staff_id=claimer, hours=idle)
        await session.flush()
        released = await session.get(Case, case.id, populate_existing=True)
        assert released is not None
        await case_alerts.enqueue_cards(session, svc, released, new=False)
        t = await _language_of(session, svc, claimer)
        await outbox.enqueue_message(
            session,
            claimer,
            t.ngettext(
                "↩️ <b>{reference}</b> is back in the queue: it had no update for {n} hour. "
                "Claim it again on the card if you are still on it.",
                "↩️ <b>{reference}</b> is back in the queue: it had no update for {n} hours. "
                "Claim it again on the card if you are still on it.",
                idle,
            ).format(reference=_esc(case.reference), n=idle),
            dedupe_key=f"esc:{case.id}:{timer.fired}:{claimer}",
        )
        await self._restart_chain(session, timer, released, now)
        log.info("case %s: stale claim released", case.id)

    # -- the daily check -----------------------------------------------------------------------------------------

    async def _daily_check(self, now: datetime) -> None:
        """From daily_check_at on, every RECHECK: a gap that appears later in the day is reported too, and each
        warning goes out once per day (its outbox dedupe key carries the date)."""
        settings = self.svc.settings
        local = now.astimezone(settings.tz)
        hour, minute = (int(part) for part in settings.teams.daily_check_at.split(":"))
        if local.time() < time(hour, minute) or (self._next_check is not None and now < self._next_check):
            return
        self._next_check = now + RECHECK
        async with self.svc.db.session() as session:
            for team in await teams.list_all(session):
                await self._check_team(session, team, now, local.date())
            await session.commit()
        self.svc.wake_outbox()

    async def _check_team(self, session: AsyncSession, team: Team, now: datetime, day: date) -> None:
        """Tell the team's coordinators (once per day) about nobody on call today and members the bot cannot reach."""
        settings, svc = self.svc.settings, self.svc
        assert team.id is not None
        state = teams.duty(team, settings.timezone, now)
        on_duty_today = state.is_open or (
            state.changes_at is not None and state.changes_at.astimezone(settings.tz).date() == day
        )
        nobody_on_call = on_duty_today and await teams.on_call(session, team.id, now, settings.timezone) is None
        team_members = await teams.members(session, team.id)
        blocked = await teams.unreachable(session, [m.telegram_id for m in team_members])
        cut_off = [m for m in team_members if m.telegram_id in blocked]
        if not nobody_on_call and not cut_off:
            return
        username = self.application.bot.username
        for coordinator in await teams.coordinators(session, [team.id]):
            t = await _language_of(session, svc, coordinator.telegram_id)
            key = f"warn:{day.isoformat()}:{team.id}:{coordinator.telegram_id}"
            if nobody_on_call:
                text = t.gettext(
                    "⚠️ Nobody is on call today for <b>{team}</b>: escalations cannot reach an on-call person. "
                    "Set the rota with /rota."
                ).format(team=_esc(team.name))
                await outbox.enqueue_message(session, coordinator.telegram_id, text, dedupe_key=f"{key}:on_call")
            if cut_off:
                text = t.gettext(
                    "⚠️ I cannot write directly to these members of <b>{team}</b>: {names}. They need to open "
                    "@{bot} and press Start, or they will miss escalations."
                ).format(team=_esc(team.name), names=", ".join(_esc(m.name) for m in cut_off), bot=username)
                await outbox.enqueue_message(session, coordinator.telegram_id, text, dedupe_key=f"{key}:unreachable")
        log.info("team %s: daily check warned its coordinators", team.id)


class _Recipients:
    """Each chat hears a firing once, however many of its targets it belongs to."""

    def __init__(self, token: int, case_id: int) -> None:
        self.token, self.case_id = token, case_id
        self.done: set[int] = set()

    async def message(self, session: AsyncSession, chat_id: int, text: str, markup: dict[str, Any] | None) -> None:
        if chat_id in self.done:
            return
        self.done.add(chat_id)
        await outbox.enqueue_message(
            session, chat_id, text, reply_markup=markup, dedupe_key=f"esc:{self.case_id}:{self.token}:{chat_id}"
        )


def _delay(timer: EscalationTimer, until: datetime, now: datetime) -> None:
    """Move the watch's next firing to `until`, and its clock with it (the chain keeps its spacing)."""
    timer.base_at += until - (timer.due_at or now)
    timer.due_at = until


async def _case_chats(session: AsyncSession, svc: Services, case_teams: list[Team]) -> list[int]:
    from handlers import case_alerts

    return await case_alerts.staff_chats(session, svc, case_teams)


def _buttons(t: Translator, case: Case) -> dict[str, Any] | None:
    """Claim and Details, as on a request's card; other kinds of cases are acted on from their own card."""
    if case.kind != CaseKind.REQUEST.value or case.id is None:
        return None
    row = [
        InlineKeyboardButton(t.gettext("✋ Claim"), callback_data=f"cs|claim|{case.id}"),
        InlineKeyboardButton(t.gettext("📂 Details"), callback_data=f"cs|details|{case.id}"),
    ]
    return InlineKeyboardMarkup([row]).to_dict()


def _claimer_buttons(t: Translator, case: Case) -> dict[str, Any] | None:
    if case.kind != CaseKind.REQUEST.value or case.id is None:
        return None
    rows = [
        [
            InlineKeyboardButton(t.gettext("❓ Need info"), callback_data=f"cs|info|{case.id}"),
            InlineKeyboardButton(t.gettext("↪️ Refer"), callback_data=f"cs|refer|{case.id}"),
        ],
        [
            InlineKeyboardButton(t.gettext("✅ Resolve"), callback_data=f"cs|resolve|{case.id}"),
            InlineKeyboardButton(t.gettext("📂 Details"), callback_data=f"cs|details|{case.id}"),
        ],
    ]
    return InlineKeyboardMarkup(rows).to_dict()


async def _language_of(session: AsyncSession, svc: Services, telegram_id: int) -> Translator:
    stored = await users.get(session, telegram_id)
    return translator(stored.language if stored is not None else svc.settings.i18n.default_language)


def _esc(value: Any) -> str:
    return esc(value if value is not None else "")


# --- wiring -------------------------------------------------------------------------------------------------------


async def start(application: Application[Any, Any, Any, Any, Any, Any]) -> EscalationRunner:
    """Start the runner for this Application (idempotent); it fires what came due while the bot was down at once."""
    runner: EscalationRunner | None = application.bot_data.get(BOT_DATA_KEY)
    if runner is None:
        runner = application.bot_data[BOT_DATA_KEY] = EscalationRunner(application)
    await runner.start()
    return runner


async def stop(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    runner: EscalationRunner | None = application.bot_data.pop(BOT_DATA_KEY, None)
    if runner is not None:
        await runner.stop()


def runner_of(application: Application[Any, Any, Any, Any, Any, Any]) -> EscalationRunner | None:
    runner: EscalationRunner | None = application.bot_data.get(BOT_DATA_KEY)
    return runner
