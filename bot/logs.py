"""Logging set-up: levels, and a filter that keeps the bot token out of every log line.

Personal data never reaches the logs in the first place (handlers log ids and handler names only); the token
filter is a second line of defence because HTTP client libraries log request URLs, and the token is in the URL.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, "[REDACTED]")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def configure(level: str = "INFO", secrets: list[str] | None = None) -> None:
    logging.basicConfig(level=level, format=FORMAT)
    # httpx logs every request URL at INFO, and each URL contains the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # At DEBUG these log every Bot API call with its parameters — message texts and names included.
    for noisy in ("telegram", "httpcore", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, logging.getLevelName(level)))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    # geopy logs the address a person typed: in each request URL (DEBUG) and in the arguments of a retried call
    # (WARNING). bot/geocoding.py logs its failures without the address.
    logging.getLogger("geopy").setLevel(logging.ERROR)
    redact = RedactSecrets(secrets or [])
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)
