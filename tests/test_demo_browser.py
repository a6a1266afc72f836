"""One story through the demo page in a real browser (Debian's chromium, headless, driven
by Playwright): a parent reports two children absent by SMS and sees the confirmation;
writes a message, which reaches the class teacher's mailbox; the teacher replies by mail
and the reply reaches the parent's phone; an announcement goes out and its deliveries
are counted. A screenshot of each step goes to tests/artifacts/."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.test_demo import running_demo, stop

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
KJERSTI = "gd-001"  # SMS first; Ola (Fjellsiden 2A, with SFO) and Kari (5B)
TEACHER_2A = "st-01"  # Ola's class teacher, notify "both"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="chromium is not installed: run .ci/browser"
)


def test_parent_and_teacher_story(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with running_demo(tmp_path) as demo, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 950})
            page.goto(demo.url)
            expect(page.locator("body")).to_have_attribute("data-ready", "yes")
            page.select_option("#parent-select", KJERSTI)
            page.select_option("#staff-select", TEACHER_2A)
            phone = page.locator("#phone-log")

            # 1. Absence for both children by SMS: the confirmation names both.
            page.fill("#phone-text", "Ola og Kari er syke i dag")
            page.click("#phone-send")
            confirmation = phone.locator(".bubble:not(.mine)", has_text="ANGRE")
            expect(confirmation).to_be_visible(timeout=15_000)
            expect(confirmation).to_contain_text("Ola")
            expect(confirmation).to_contain_text("Kari")
            expect(confirmation).to_contain_text("SFO")
            page.screenshot(path=str(ARTIFACTS / "demo-1-absence-confirmed.png"))

            # 2. A message about Ola: his class teacher is notified by mail.
            page.fill("#phone-text", "Hei! Ola skal ha med kake på fredag, går det bra?")
            page.click("#phone-send")
            notice = page.locator("#mailbox .mail", has_text="Ola Nordmann")
            expect(notice).to_be_visible(timeout=15_000)
            notice.first.click()
            expect(page.locator("#mailbox .mail.selected .body")).to_contain_text("kake")
            page.screenshot(path=str(ARTIFACTS / "demo-2-teacher-notified.png"))

            # 3. The teacher replies to the notification; the reply reaches the phone,
            # without the quoted notification.
            expect(page.locator("#staff-reply")).to_be_visible()
            page.fill("#staff-text", "Det går fint, vi gleder oss!")
            page.click("#staff-send")
            reply = phone.locator(".bubble:not(.mine)", has_text="vi gleder oss")
            expect(reply).to_be_visible(timeout=15_000)
            expect(reply).not_to_contain_text("kake")
            page.screenshot(path=str(ARTIFACTS / "demo-3-reply-on-phone.png"))

            # 4. An announcement to 2A through the bridge's API: every delivery arrives.
            page.select_option("#announce-unit", "u-fjell")
            page.select_option("#announce-group", "g-fjell-2a")
            page.fill("#announce-text", "Husk gymtøy på mandag")
            page.click("#announce-send")
            card = page.locator("#announcements .announcement").first
            expect(card).to_contain_text("delivered", timeout=15_000)
            page.screenshot(path=str(ARTIFACTS / "demo-4-announcement.png"))
            expect(phone.locator(".bubble", has_text="gymtøy")).to_be_visible(timeout=15_000)
        finally:
            browser.close()
        status, _ = stop(demo)
        assert status == 0
