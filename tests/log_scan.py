"""pytest plugin: no personal data in the logs of the whole test session.

Every log record of the session (every logger, every level the loggers let through — the suite runs with the
production set-up of ``bot.logs.configure("DEBUG")``) is formatted as an operator would see it, with its arguments
and exception text, and kept with the id of the test that was running. The fake Bot API reports every personal value
a test user sends (``bot.sandbox.fake_telegram.personal_data_listeners``): names and usernames, phone numbers, typed
texts and captions, shared locations. At the end of the session no log line may contain any of them; a leak fails
the session and names the test that logged it.

What is not a personal value: commands ("/start …"), texts that are the bot's own labels (every msgid and translation
of the catalogs: a tapped menu button sends its label), and texts too short or too generic to identify anyone (under
eight characters in Latin script — "done", "skip" — or four in others, or digits only — counts and amounts).
Coordinates count from three decimals (about 100 m), in the forms code would print them (repr, 3 to 6 decimals).
"""

from __future__ import annotations

import bisect
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from babel.messages.pofile import read_po

from bot.sandbox import fake_telegram

LOCALES = Path(__file__).resolve().parent.parent / "bot" / "locales"
FORMAT = "%(levelname)s %(name)s: %(message)s"
MIN_TEXT = 8  # typed texts in Latin script: "done", "skip", "cancel" identify nobody (and match ordinary log words)
MIN_TEXT_OTHER_SCRIPTS = 4  # Chinese says a lot in four characters
MIN_PHONE_DIGITS = 7
MIN_DECIMALS = 3
OUTSIDE_TESTS = "(outside any test)"


@cache
def catalog_strings() -> frozenset[str]:
    """Every msgid and translation: texts a test sends by tapping the bot's own buttons."""
    found: set[str] = set()
    for path in LOCALES.glob("*/LC_MESSAGES/messages.po"):
        with path.open("rb") as fh:
            catalog = read_po(fh)
        for message in catalog:
            for value in (message.id, message.string):
                for text in value if isinstance(value, tuple | list) else (value,):
                    if isinstance(text, str) and text:
                        found.add(text.strip())
    return frozenset(found)


def _decimals(value: float) -> int:
    text = repr(value)
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text else 0


@dataclass
class Registry:
    """Personal values seen during the session: value -> (kind, id of the test that first sent it)."""

    values: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add(self, kind: str, value: object, test: str) -> None:
        for text in self.forms(kind, value):
            self.values.setdefault(text, (kind, test))

    @staticmethod
    def forms(kind: str, value: object) -> list[str]:
        """The strings to look for in the logs for one personal value (none when it identifies nobody)."""
        if kind == "location" and isinstance(value, tuple):
            out: list[str] = []
            for coordinate in value:
                if isinstance(coordinate, float | int) and _decimals(float(coordinate)) >= MIN_DECIMALS:
                    number = float(coordinate)
                    out += [repr(number), *(f"{number:.{places}f}" for places in range(3, 7))]
            return list(dict.fromkeys(out))
        if not isinstance(value, str):
            return []
        text = value.strip()
        if kind == "phone":
            digits = re.sub(r"\D", "", text)
            return [text, digits] if len(digits) >= MIN_PHONE_DIGITS else []
        if kind == "text" and (text.startswith("/") or text in catalog_strings()):
            return []
        if kind == "text" and len(text) < (MIN_TEXT if text.isascii() else MIN_TEXT_OTHER_SCRIPTS):
            return []
        if not text or text.isdigit() or not any(c.isalnum() for c in text):
            return []
        return [text]


@dataclass(frozen=True)
class Leak:
    test: str  # the test that was running when the line was logged
    line: str
    kind: str
    value: str
    sent_in: str  # the test whose user sent the value


def _bounded(text: str, start: int, end: int) -> bool:
    """The match is not part of a longer word or number ("Ann" in "Announcement" is not a leak)."""
    before = text[start - 1] if start > 0 else " "
    after = text[end] if end < len(text) else " "
    return not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_")


def scan(lines: list[tuple[str, str]], registry: Registry) -> list[Leak]:
    """Every (line, value) where a personal value appears in a log line as a whole word."""
    if not lines or not registry.values:
        return []
    joined = "\n".join(line for _test, line in lines)
    starts: list[int] = []
    position = 0
    for _test, line in lines:
        starts.append(position)
        position += len(line) + 1
    leaks: list[Leak] = []
    for value, (kind, sent_in) in registry.values.items():
        at = joined.find(value)
        while at != -1:
            if _bounded(joined, at, at + len(value)):
                index = bisect.bisect_right(starts, at) - 1
                test, line = lines[index]
                leaks.append(Leak(test, line, kind, value, sent_in))
            at = joined.find(value, at + 1)
    return leaks


class _Capture(logging.Handler):
    """Keeps every record, formatted with its arguments and exception text, with the running test's id."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter(FORMAT))
        self.lines: list[tuple[str, str]] = []
        self.test = OUTSIDE_TESTS

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a broken record must not break the test; keep what can be kept
            text = f"{record.levelname} {record.name}: {record.msg!r} {record.args!r}"
        self.lines.append((self.test, text))


class LogScan:
    def __init__(self) -> None:
        self.capture = _Capture()
        self.registry = Registry()
        self.leaks: list[Leak] = []
        self.scanned = False

    def _listen(self, kind: str, value: object) -> None:
        self.registry.add(kind, value, self.capture.test)

    def start(self) -> None:
        logging.getLogger().addHandler(self.capture)
        fake_telegram.personal_data_listeners.append(self._listen)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.capture)
        if self._listen in fake_telegram.personal_data_listeners:
            fake_telegram.personal_data_listeners.remove(self._listen)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_logstart(self, nodeid: str, location: object) -> None:
        self.capture.test = nodeid

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_logfinish(self, nodeid: str, location: object) -> None:
        self.capture.test = OUTSIDE_TESTS

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.stop()
        if session.config.option.collectonly:
            return
        self.leaks = scan(self.capture.lines, self.registry)
        self.scanned = True
        if self.leaks and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.scanned:
            return
        terminalreporter.write_line(
            f"log scan: {len(self.capture.lines)} lines, {len(self.registry.values)} personal values checked"
        )
        if not self.leaks:
            return
        terminalreporter.write_sep("=", f"personal data in the logs: {len(self.leaks)} leak(s)", red=True)
        for leak in report_order(self.leaks):
            terminalreporter.write_line(
                f"{leak.test}: a {leak.kind} ({leak.value!r}, sent in {leak.sent_in}) in log line: {leak.line[:300]!r}"
            )


def report_order(leaks: Iterable[Leak]) -> list[Leak]:
    return sorted(leaks, key=lambda leak: (leak.test, leak.kind, leak.value))


def pytest_configure(config: pytest.Config) -> None:
    plugin = LogScan()
    plugin.start()
    config.pluginmanager.register(plugin, "waystation-log-scan")
