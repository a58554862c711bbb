"""Small Playwright helpers for the Statuary UI's elements (by their elem_id)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect


def text_input(page: Page, elem_id: str):
    return page.locator(f"#{elem_id}").locator("textarea, input").first


def fill(page: Page, elem_id: str, value) -> None:
    box = text_input(page, elem_id)
    box.fill(str(value))
    box.press("Tab")  # commit: Gradio reads the value on change/blur


def set_slider(page: Page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def open_tab(page: Page, name: str) -> None:
    """Click a tab; on a narrow screen Gradio moves some tabs into its "More tabs" menu."""
    tab = page.get_by_role("tab", name=name, exact=True)
    if tab.count() and tab.is_visible():
        tab.click()
    else:
        page.get_by_role("button", name="More tabs").click()
        page.locator(".overflow-dropdown button", has_text=name).first.click()
    expect(page.locator('[role=tab][aria-selected=true]', has_text=name)).to_have_count(1)


def wait_done(page: Page, status_id: str, previous: str | None = None, timeout: float = 90_000) -> str:
    """Wait until the status box shows a finished job (not `previous`); return its text."""
    status = page.locator(f"#{status_id} .st-status")
    expect(page.locator(f"#{status_id} .st-ok, #{status_id} .st-error")).to_have_count(1, timeout=timeout)
    if previous is not None:
        expect(status).not_to_have_text(previous, timeout=timeout)
        expect(page.locator(f"#{status_id} .st-ok, #{status_id} .st-error")).to_have_count(1, timeout=timeout)
    text = status.inner_text()
    assert "st-error" not in (status.get_attribute("class") or ""), text
    return text


def watch_job(page: Page, status_id: str, preview_id: str | None = None) -> None:
    """Start recording what a tab shows while its next job runs, until its status says the job
    ended: whether the progress bar, a "step" message and a preview image ever appeared, and every
    status message shown. Read it with `seen_while_running`. A MutationObserver sees every change to the page; `expect()` polls at
    growing intervals (0.1, 0.25, 0.5, 1 s) and can miss all of a job that a fast machine finishes
    in under two seconds."""
    page.evaluate("""([statusId, previewId]) => {
        const seen = window.stSeen = {bar: false, step: false, preview: false, ended: false, messages: []};
        const look = () => {
            if (seen.ended) return;
            const box = document.getElementById(statusId);
            if (!box) return;
            if (box.querySelector('.st-ok, .st-error')) { seen.ended = true; return; }
            if (box.querySelector('.st-bar')) seen.bar = true;
            const msg = box.querySelector('.st-msg')?.textContent;
            if (msg && !seen.messages.includes(msg)) seen.messages.push(msg);
            if (/step/i.test(msg || '')) seen.step = true;
            const img = previewId && document.querySelector('#' + previewId + ' img');
            if (img && img.getAttribute('src')) seen.preview = true;
        };
        new MutationObserver(look).observe(document.body,
            {subtree: true, childList: true, attributes: true, characterData: true});
    }""", [status_id, preview_id])


def seen_while_running(page: Page) -> dict:
    """What `watch_job` recorded: "bar", "step", "preview", "ended" -> bool; "messages" -> the status
    messages shown while the job ran, each once, in order."""
    return page.evaluate("() => window.stSeen")


def done_ids(text: str) -> list[str]:
    """The image ids a 'Done in 0.2 s: abc, def' status names."""
    return re.findall(r"\b[2-9a-hjkmnp-z]{8}\b", text.split(":", 1)[1])


def generate(page: Page, prompt: str, steps: int = 3, seed: int | None = None, count: int = 1) -> list[str]:
    open_tab(page, "Generate")
    before = page.locator("#g-status .st-status").inner_text()
    fill(page, "g-prompt", prompt)
    set_slider(page, "g-steps", steps)
    set_slider(page, "g-count", count)
    if seed is not None:
        fill(page, "g-seed", seed)
    page.locator("#g-go").click()
    return done_ids(wait_done(page, "g-status", previous=before))


def select_in_gallery(page: Page, gallery_id: str, index: int = 0) -> None:
    page.locator(f"#{gallery_id} .thumbnail-item").nth(index).click()
