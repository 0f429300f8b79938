"""The error handler: log where it failed (never what the person wrote) and reassure them."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from telegram import Update
from telegram.error import Forbidden, TelegramError

from handlers.common import Context, tr

log = logging.getLogger("waystation.errors")

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


def failing_handler(error: BaseException) -> str:
    """The innermost frame of our own code in the traceback, e.g. "handlers/start.py:42 start"."""
    where = "unknown"
    for frame in traceback.extract_tb(error.__traceback__):
        path = Path(frame.filename).resolve()
        if _PROJECT_ROOT in path.parents and ".venv" not in path.parts:
            where = f"{path.relative_to(_PROJECT_ROOT)}:{frame.lineno} {frame.name}"
    return where


def safe_frames(error: BaseException) -> str:
    """File, line and function of every frame, without the exception message (it may quote user input)."""
    return " <- ".join(
        f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(traceback.extract_tb(error.__traceback__))
    )


async def on_error(update: object, context: Context) -> None:
    error = context.error
    if error is None:
        return
    update_id = update.update_id if isinstance(update, Update) else None
    log.error(
        "update %s failed in %s: %s [%s]",
        update_id,
        failing_handler(error),
        type(error).__name__,
        safe_frames(error),
    )
    if not isinstance(update, Update) or update.effective_chat is None or isinstance(error, Forbidden):
        return
    t = tr(update, context)
    text = t.gettext(
        "Sorry, something went wrong on our side. What you entered so far is kept: please try again, "
        "or send /cancel to start over."
    )
    try:
        await context.bot.send_message(update.effective_chat.id, text)
    except TelegramError as exc:
        log.warning("could not tell chat about update %s failing: %s", update_id, type(exc).__name__)
