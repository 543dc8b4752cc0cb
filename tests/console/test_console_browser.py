"""The console in a real browser: Debian's chromium driven by Playwright against a live server.

Sign in, open a generation attributed by the real engine, hover a token and
read its top client and share in the inspector, take a screenshot of the
page, and download a report PDF. Chromium comes from the system
(`apt-get update && apt-get install -y chromium`), never from
`playwright install`; without it these tests are skipped, saying so.
"""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from audits.models import AttributionRun
from console.models import Membership
from console.periods import Period
from console.services import report_build
from console_data import PASSWORD, make_user
from django.db import connections
from django.utils import timezone

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed: apt-get update && apt-get install -y chromium"),
]


@pytest.fixture
def browser_page(monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the ORM calls made in the test
    # between browser steps are plain synchronous calls and safe here.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(30_000)
        yield page
        context.close()
        browser.close()
        # Django keeps connections per asyncio context (asgiref.Local), and Playwright's loop is a
        # context of its own: close the connections the test opened in it, or they outlive the test database.
        connections.close_all()


@pytest.fixture
def auditor(engine_generation):
    user = make_user("eve")
    Membership.objects.create(user=user, federation=engine_generation.federation, role="auditor")
    return user


def _sign_in(page, base_url: str, next_path: str) -> None:
    page.goto(base_url + next_path)
    assert "/login/" in page.url  # anonymous: sent to sign in, then back
    page.fill("input[name=username]", "eve")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + next_path)


def test_it_shows_a_tokens_top_client_on_hover(live_server, browser_page, engine_generation, auditor, tmp_path):
    run = AttributionRun.objects.get(generation=engine_generation)
    rows = list(run.token_rows.select_related("top_client").order_by("position"))
    page = browser_page
    _sign_in(page, live_server.url, f"/f/engine-fed/generations/{engine_generation.pk}/")
    tokens = page.locator("#tokens .tok")
    assert tokens.count() == len(rows) == run.num_tokens
    assert page.locator("#tokens").inner_text() == engine_generation.response
    target = rows[1]
    tokens.nth(1).hover()
    assert page.locator("#insp-top").inner_text() == target.top_client.client_id
    assert page.locator("#insp-share").inner_text() == f"{target.top_share * 100:.1f}%"
    assert tokens.nth(1).get_attribute("title") == f"{target.top_client.client_id} · {target.top_share * 100:.1f}%"
    assert page.locator("#insp-bars li").count() == len(run.client_ids)
    # Keyboard users get the same: focus the last token.
    tokens.nth(len(rows) - 1).focus()
    assert page.locator("#insp-pos").inner_text() == f"#{len(rows) - 1}"
    shot = tmp_path / "generation.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = Path(__file__).parent.parent.parent / "var" / "console-screenshots"  # for a person to look at
    keep.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, keep / "generation.png")


def test_it_downloads_a_report_pdf(live_server, browser_page, engine_generation, auditor, tmp_path):
    today = timezone.now().date()
    report = report_build(federation=engine_generation.federation, period=Period(today - timedelta(days=6), today))
    page = browser_page
    _sign_in(page, live_server.url, f"/f/engine-fed/reports/{report.pk}/")
    assert page.frame_locator("iframe.report-frame").locator("h1").inner_text() == "ProToken audit report"
    with page.expect_download() as info:
        page.click("#download-pdf")
    download = info.value
    assert download.suggested_filename == report.pdf_filename
    saved = tmp_path / download.suggested_filename
    download.save_as(str(saved))
    data = saved.read_bytes()
    assert data.startswith(b"%PDF-") and hashlib.sha256(data).hexdigest() == report.pdf_sha256
