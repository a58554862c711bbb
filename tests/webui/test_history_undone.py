"""History lists the jobs that ended without images, with their reasons (issue 13, item 15: the web part)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from core.jobs import Owner
from core.request import GenerationRequest
from tests.webui.ui import open_tab

pytestmark = pytest.mark.browser


def test_history_shows_cancelled_jobs_with_their_reason_and_filters_them(page, server, artifacts):
    owner = Owner("cli", "someone", "someone")
    handle = server.service.submit(GenerationRequest(prompt="a <b>bold</b> lighthouse | never drawn", steps=150,
                                                     seed=3), owner)
    assert server.service.cancel(handle)
    for _ in range(100):   # the record is written by the service's thread
        if server.store.jobs(("cancelled",)).total:
            break
        time.sleep(0.1)

    open_tab(page, "History")
    page.locator("#h-undone").get_by_text("Jobs that ended without images").click()
    listing = page.locator("#h-undone-list")
    expect(listing).to_contain_text("cancelled", timeout=30_000)
    expect(listing).to_contain_text("a <b>bold</b> lighthouse")          # shown as text, not markup
    assert page.locator("#h-undone-list b").count() == 0
    page.locator("#h-undone-kind").get_by_text("Failed", exact=True).click()
    expect(listing).to_contain_text("No such jobs")
    page.locator("#h-undone-kind").get_by_text("Cancelled", exact=True).click()
    expect(listing).to_contain_text("lighthouse")
    page.locator("#h-undone").screenshot(path=str(artifacts / "history-undone.png"))
    page.locator("#h-mine input").check()                                # someone else's job
    expect(listing).to_contain_text("No such jobs of yours")
