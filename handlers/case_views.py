"""Rendering of cases: the staff alert card (edited in place), the requester's timeline and notifications.

Texts only; the handlers decide when to send them (through the outbox for everything that is not a direct reply).
"""

from __future__ import annotations

from datetime import datetime

from babel.dates import format_datetime
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.i18n import N_, Translator
from handlers.common import esc
from models.cases import Case, CaseEvent, CaseStatus

HELP_KIND_LABELS: dict[str, str] = {
    "food": N_("🍲 Food"),
    "bed": N_("🛏️ A bed tonight"),
    "medical": N_("🩺 Medical help"),
    "supplies": N_("🧤 Warm clothes or supplies"),
    "escort": N_("🚆 An escort or ticket home"),
    "job": N_("💼 A short-term job"),
    "paperwork": N_("🪪 Paperwork (residence permit, lost ID)"),
    "money": N_("💴 Money for an emergency"),
    "other": N_("❔ Something else"),
}

STATUS_LABELS: dict[str, str] = {
    CaseStatus.NEW: N_("🆕 New"),
    CaseStatus.CLAIMED: N_("🟡 Being handled"),
    CaseStatus.NEED_INFO: N_("❓ Waiting for more information"),
    CaseStatus.REFERRED: N_("↪️ Referred"),
    CaseStatus.RESOLVED: N_("✅ Resolved"),
    CaseStatus.CANCELLED: N_("⚪ Cancelled"),
}

CLOSING_LABELS: dict[str, str] = {
    "help_food": N_("food given"),
    "help_lodging": N_("lodging arranged"),
    "help_medical": N_("medical help arranged"),
    "help_escort": N_("escort or ticket home arranged"),
    "help_job": N_("short-term job found"),
    "help_paperwork": N_("paperwork done"),
    "help_supplies": N_("supplies handed out"),
    "help_money": N_("emergency money paid"),
    "no_help_wanted": N_("no help wanted"),
    "unreachable": N_("could not reach the person"),
    "duplicate": N_("duplicate of another request"),
    "out_of_scope": N_("outside what we can help with"),
}

CASE_PREFIX = "cs"  # staff card buttons: cs|<action>|<case id>


def kinds_text(t: Translator, kinds: list[str]) -> str:
    return ", ".join(t.gettext(HELP_KIND_LABELS.get(k, k)) for k in kinds) or "—"


def status_text(t: Translator, case: Case) -> str:
    return t.gettext(STATUS_LABELS.get(case.status, case.status))


def when(t: Translator, moment: datetime | None, tz: str) -> str:
    if moment is None:
        return "—"
    from zoneinfo import ZoneInfo

    return format_datetime(moment.astimezone(ZoneInfo(tz)), "d MMM HH:mm", locale=t.language)


def age_text(t: Translator, since: datetime, now: datetime) -> str:
    minutes = max(0, int((now - since).total_seconds() // 60))
    if minutes < 60:
        return t.ngettext("{n} minute ago", "{n} minutes ago", minutes).format(n=minutes)
    hours = minutes // 60
    return t.ngettext("{n} hour ago", "{n} hours ago", hours).format(n=hours)


def urgency_line(t: Translator, case: Case) -> str | None:
    """ "⚠️ Urgent: 🚨 someone in danger, 🧒 under 18", or None when neither applies."""
    flags = []
    if case.danger:
        flags.append(t.gettext("🚨 someone in danger"))
    if case.minor:
        flags.append(t.gettext("🧒 under 18"))
    return t.gettext("⚠️ Urgent: {flags}").format(flags=", ".join(flags)) if flags else None


def card_text(t: Translator, case: Case, *, now: datetime, tz: str, area: str | None) -> str:
    """The staff alert card: enough to decide, no more personal data than needed (details go by private message)."""
    lines = [f"{status_text(t, case)} · <b>{esc(case.reference)}</b>"]
    lines.append(t.gettext("🙋 Needs: {kinds}").format(kinds=kinds_text(t, case.categories)))
    urgency = urgency_line(t, case)
    if urgency:
        lines.append(urgency)
    lines.append(t.gettext("📍 Area: {area}").format(area=esc(area) if area else t.gettext("not given")))
    if case.description:
        short = case.description if len(case.description) <= 300 else case.description[:300] + "…"
        lines.append(t.gettext("📝 {text}").format(text=esc(short)))
    contact = t.gettext("Telegram and phone") if case.phone else t.gettext("Telegram only")
    lines.append(t.gettext("📞 Contact: {contact}").format(contact=contact))
    if case.documents:
        lines.append(
            t.ngettext("📎 {n} document", "📎 {n} documents", len(case.documents)).format(n=len(case.documents))
        )
    lines.append(
        t.gettext("🕒 Received {time} ({age})").format(
            time=when(t, case.created_at, tz), age=age_text(t, case.created_at, now)
        )
    )
    if case.claimed_by_name and case.status in (CaseStatus.CLAIMED, CaseStatus.NEED_INFO):
        lines.append(
            t.gettext("✋ Claimed by {name} at {time}").format(
                name=esc(case.claimed_by_name), time=when(t, case.claimed_at, tz)
            )
        )
    if case.status == CaseStatus.RESOLVED and case.closing_reason:
        lines.append(t.gettext("✅ Closed: {reason}").format(reason=t.gettext(CLOSING_LABELS[case.closing_reason])))
    if case.last_note:
        lines.append(t.gettext("💬 Last note: {note}").format(note=esc(case.last_note[:300])))
    return "\n".join(lines)


def card_keyboard(t: Translator, case: Case) -> InlineKeyboardMarkup | None:
    if not case.is_open:
        return None

    def button(label: str, action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(label, callback_data=f"{CASE_PREFIX}|{action}|{case.id}")

    first = [button(t.gettext("❓ Need info"), "info"), button(t.gettext("↪️ Refer"), "refer")]
    if case.status in (CaseStatus.NEW, CaseStatus.REFERRED):
        first.insert(0, button(t.gettext("✋ Claim"), "claim"))
    return InlineKeyboardMarkup(
        [first, [button(t.gettext("✅ Resolve"), "resolve"), button(t.gettext("📂 Details"), "details")]]
    )


EVENT_LABELS: dict[str, str] = {
    "submitted": N_("Request received"),
    "claimed": N_("Picked up by {name}"),
    "need_info": N_("Staff asked: {question}"),
    "info_added": N_("You added: {text}"),
    "referred": N_("Referred: {note}"),
    "resolved": N_("Resolved: {reason}"),
    "cancelled": N_("Cancelled by you"),
}


def event_text(t: Translator, event: CaseEvent) -> str:
    template = EVENT_LABELS.get(event.action)
    if template is None:
        return event.action
    detail = dict(event.detail)
    reason = detail.get("reason")
    return t.gettext(template).format(
        name=esc(event.actor_name or t.gettext("staff")),
        question=esc(detail.get("question", "")),
        text=esc(detail.get("text", "")),
        note=esc(detail.get("note", "")),
        reason=t.gettext(CLOSING_LABELS[reason]) if reason in CLOSING_LABELS else "",
    )


def timeline_text(t: Translator, case: Case, history: list[CaseEvent], tz: str) -> str:
    lines = [f"<b>{esc(case.reference)}</b> · {status_text(t, case)}"]
    lines.append(t.gettext("🙋 Needs: {kinds}").format(kinds=kinds_text(t, case.categories)))
    # Only what the requester should see: staff bookkeeping (escalations, reminders) is not their timeline.
    lines += [f"• {when(t, e.at, tz)} — {event_text(t, e)}" for e in history if e.action in EVENT_LABELS]
    if case.status == CaseStatus.RESOLVED and case.closing_note:
        lines.append(t.gettext("💬 {note}").format(note=esc(case.closing_note)))
    return "\n".join(lines)


def notification_text(t: Translator, case: Case, event: CaseEvent) -> str:
    """What the requester is told when their case changes (in their language)."""
    reference = f"<b>{esc(case.reference)}</b>"
    if event.action == "claimed":
        return t.gettext("Your request {reference} was picked up by {name}. They will contact you here.").format(
            reference=reference, name=esc(event.actor_name or "")
        )
    if event.action == "need_info":
        return t.gettext("Staff need more information about {reference}: {question}").format(
            reference=reference, question=esc(event.detail.get("question", ""))
        )
    if event.action == "referred":
        return t.gettext("Your request {reference} was passed on: {note}").format(
            reference=reference, note=esc(event.detail.get("note", ""))
        )
    if event.action == "resolved":
        reason = event.detail.get("reason")
        text = t.gettext("Your request {reference} is resolved: {reason}.").format(
            reference=reference, reason=t.gettext(CLOSING_LABELS[reason]) if reason in CLOSING_LABELS else ""
        )
        if event.detail.get("note"):
            text += "\n" + t.gettext("💬 {note}").format(note=esc(event.detail["note"]))
        return text
    return t.gettext("Your request {reference} was updated.").format(reference=reference)
