"""The demo page in a real browser (Playwright + Debian's chromium): the three journeys a visitor tries first.

Shares a location as the courier and sees the station list; files a help request as the person in difficulty (the
whole form); claims it in the staff pane and sees the requester's notification arrive. Saves a screenshot to
test-artifacts/demo.png. Skipped, with the reason, when chromium or the playwright package is missing.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot.sandbox.demo import Demo

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
STEP_TIMEOUT_MS = 10_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (install it with: apt-get install -y chromium)"
)
playwright_api = pytest.importorskip(
    "playwright.async_api", reason="the playwright package is not installed (pip install -e '.[demo]')"
)
expect: Any = playwright_api.expect
expect.set_options(timeout=STEP_TIMEOUT_MS)


@pytest.fixture
async def demo() -> AsyncIterator[Demo]:
    running = Demo(0)
    await running.start()
    try:
        yield running
    finally:
        rejected = list(running.fake.rejections)
        await running.stop()
    assert not rejected, f"the fake Bot API rejected calls: {rejected}"


@pytest.fixture
async def page(demo: Demo) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        problems: list[str] = []
        try:
            tab = await browser.new_page(viewport={"width": 1600, "height": 1000})
            tab.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            tab.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            await tab.goto(demo.url)
            await expect(tab.locator("body")).to_have_attribute("data-ready", "true")
            yield tab
        finally:
            await browser.close()
        assert not problems, problems


def last_bot(pane: Any) -> Any:
    return pane.locator(".msg.bot").last


async def tap_inline(pane: Any, label: str) -> None:
    """Tap a button under the newest bot message (after checking that message is the one expected)."""
    await last_bot(pane).get_by_role("button", name=label, exact=True).click()


async def test_courier_person_and_staff_in_one_page(page: Any) -> None:
    courier = page.locator('[data-pane="courier"]')
    person = page.locator('[data-pane="person"]')
    staff = page.locator('[data-pane="staff"]')

    # Courier: the main-menu button asks for a location; a preset place answers; the station list comes back.
    await courier.locator(".reply-keyboard").get_by_role("button", name="📍 Nearest stations").click()
    await courier.locator('.picker [data-place="hutang"]').click()
    await expect(courier.locator(".msg.me").last).to_have_attribute("data-kind", "location")
    listing = last_bot(courier)
    await expect(listing.locator(".body")).to_contain_text("Nearest care stations")
    await expect(listing.locator(".body b").first).to_be_visible()  # formatting rendered, not shown as tags
    await expect(listing.get_by_role("button", name=re.compile(r"^1\. "))).to_be_visible()
    assert "<b>" not in await listing.locator(".body").inner_text()

    # Person in difficulty: the whole form.
    await person.locator(".reply-keyboard").get_by_role("button", name="🆘 Ask for help").click()
    await expect(last_bot(person)).to_contain_text("is anyone in danger")
    await tap_inline(person, "No")
    await expect(last_bot(person)).to_contain_text("Are you under 18?")
    await tap_inline(person, "No")
    await expect(last_bot(person)).to_contain_text("What help do you need?")
    await tap_inline(person, "🍲 Food")
    await expect(last_bot(person).get_by_role("button", name="✅ 🍲 Food")).to_be_visible()
    await tap_inline(person, "Next ▶")
    await expect(last_bot(person)).to_contain_text("In a few words")
    composer = person.locator(".composer .text")
    await composer.fill("I lost my wallet and have <nowhere> to sleep")
    await composer.press("Enter")
    await expect(last_bot(person)).to_contain_text("Where are you?")
    await expect(person.locator(".msg.me").last).to_contain_text("have <nowhere> to sleep")
    await person.locator(".reply-keyboard").get_by_role("button", name="📍 Share my location").click()
    await person.locator(".picker svg.bigmap").click()  # a click on the drawn map
    await expect(person.locator(".msg.me").last).to_have_attribute("data-kind", "location")
    await expect(last_bot(person)).to_contain_text("How can staff reach you?")
    await person.locator(".reply-keyboard").get_by_role("button", name="📱 Share my phone number").click()
    await expect(last_bot(person)).to_contain_text("Optional: photos")
    await person.locator(".composer .attach").click()
    await person.locator('[data-attach="photo"]').click()
    await expect(person.locator(".msg.me img.photo").last).to_be_visible()
    await expect(last_bot(person)).to_contain_text("Received: 1 of 5.")
    await tap_inline(person, "Done ▶")
    await expect(last_bot(person)).to_contain_text("Before you send")
    await tap_inline(person, "✅ I agree")
    await expect(last_bot(person)).to_contain_text("Please check your request")
    await tap_inline(person, "📨 Submit")
    await expect(last_bot(person)).to_contain_text(re.compile(r"WS-\d{4}-\d{6}"))
    match = re.search(r"WS-\d{4}-\d{6}", await last_bot(person).inner_text())
    assert match
    reference = match.group()

    # Staff: the card arrives in the staff group; the responder claims it; the card is edited in place.
    card = staff.locator(".msg.bot", has_text=reference).last
    await expect(card).to_contain_text(f"🆕 New · {reference}")
    await card.get_by_role("button", name="✋ Claim").click()
    await expect(staff.locator(".toast")).to_have_text(f"You claimed {reference}.")
    await expect(card).to_contain_text(f"🟡 Being handled · {reference}")
    await expect(card.locator(".meta")).to_contain_text("edited")

    # The requester is told, in their chat.
    await expect(last_bot(person)).to_contain_text(f"Your request {reference} was picked up by Li Na.")

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "demo.png"))
