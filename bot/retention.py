"""The daily retention run: anonymise closed cases older than ``privacy.retention_days`` (models/privacy.py).

Scheduled on PTB's JobQueue at ``privacy.purge_at`` local time. Nothing needs re-arming after a restart: the purge
works from what the database says (closed when, anonymised or not), so a missed day is caught up by the next run.
Form drafts it deletes are dropped from the running Application's memory too, or the next update would write them
back.
"""

from __future__ import annotations

import logging
from datetime import time, timedelta
from typing import Any, cast

from telegram.ext import Application, ContextTypes, ConversationHandler

from bot.services import Services
from models import privacy

log = logging.getLogger("waystation.retention")

JOB_NAME = "privacy-retention"


def _services(application: Application[Any, Any, Any, Any, Any, Any]) -> Services:
    return cast(Services, application.bot_data["services"])


def schedule(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    """Arm the daily run (calling it again replaces the job)."""
    job_queue = application.job_queue
    if job_queue is None:
        raise RuntimeError("python-telegram-bot's job queue is missing (install python-telegram-bot[job-queue])")
    for job in job_queue.get_jobs_by_name(JOB_NAME):
        job.schedule_removal()
    settings = _services(application).settings
    hour, minute = (int(part) for part in settings.privacy.purge_at.split(":"))
    job_queue.run_daily(_job, time(hour, minute, tzinfo=settings.tz), name=JOB_NAME)


def stop(application: Application[Any, Any, Any, Any, Any, Any]) -> None:
    if application.job_queue is not None:
        for job in application.job_queue.get_jobs_by_name(JOB_NAME):
            job.schedule_removal()


async def _job(context: ContextTypes.DEFAULT_TYPE) -> None:
    await run(context.application)


async def run(application: Application[Any, Any, Any, Any, Any, Any], *, dry_run: bool = False) -> privacy.Purged:
    """One retention run (the job; tests call it directly)."""
    svc = _services(application)
    settings = svc.settings
    async with svc.db.session() as session:
        purged = await privacy.purge(
            session,
            timedelta(days=settings.privacy.retention_days),
            now=svc.clock(),
            geocode_max_age=timedelta(days=settings.geocoding.cache_days),
            dry_run=dry_run,
        )
    if not dry_run:
        forget_in_memory(application, purged.form_owners, purged.conversation_keys)
    log.info(
        "retention: %s closed case(s) anonymised, %s form(s), %s user(s), %s geocoder answer(s) deleted%s",
        purged.cases,
        purged.forms,
        purged.users,
        purged.geocode,
        " (dry run)" if dry_run else "",
    )
    return purged


def forget_in_memory(
    application: Application[Any, Any, Any, Any, Any, Any],
    owners: set[int],
    conversation_keys: list[tuple[str, tuple[int | str, ...]]],
) -> None:
    """Drop deleted user data and conversation steps from the running Application as well."""
    for owner in owners:
        if owner in application.user_data:
            application.drop_user_data(owner)
        if owner in application.chat_data:
            application.drop_chat_data(owner)
    if not conversation_keys:
        return
    by_name: dict[str, set[tuple[int | str, ...]]] = {}
    for name, key in conversation_keys:
        by_name.setdefault(name, set()).add(key)
    for handler in conversation_handlers(application):
        for key in by_name.get(handler.name or "", set()):
            # PTB has no public API to end one conversation; popping the tracked key also deletes it on the next
            # persistence write.
            handler._conversations.pop(key, None)


def conversation_handlers(application: Application[Any, Any, Any, Any, Any, Any]) -> list[ConversationHandler[Any]]:
    return [h for group in application.handlers.values() for h in group if isinstance(h, ConversationHandler)]
