"""The web UI's hires fix (settings, the Upscale button) and the Vary region link from Discord
(`/?inpaint=ID` opens the Inpaint tab on that image), in headless Chromium on the tiny model."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from bot.buttons import inpaint_link
from core.hires import HiresDefaults
from tests.webui.conftest import start_server, stop_server
from tests.webui.test_browser import make
from tests.webui.ui import done_ids, fill, generate, open_tab, select_in_gallery, set_slider, wait_done

pytestmark = pytest.mark.browser


def test_upscale_button_makes_the_selected_image_larger(page, server):
    [image_id] = generate(page, "a red kite", steps=3, seed=12)
    before = page.locator("#g-status .st-status").inner_text()
    page.locator("#g-upscale").click()
    new_id = done_ids(wait_done(page, "g-status", previous=before))[0]
    rec = server.store.get(new_id)
    assert rec.parent_id == image_id and rec.kind == "upscale" and (rec.width, rec.height) == (128, 128)
    assert rec.image_request["seed"] == 12 and rec.image_request["hires"]["scale"] == 2.0
    expect(page.locator("#g-recipe")).to_contain_text("Hires fix")
    expect(page.locator("#g-recipe")).to_contain_text("2x (lanczos)")


def test_hires_settings_reach_the_recipe_and_bad_ones_are_said(page, server):
    open_tab(page, "Generate")
    page.locator("#g-hires").get_by_text("Hires fix").first.click()
    page.locator("#g-hires-on input").check()
    set_slider(page, "g-hires-scale", 1.5)
    set_slider(page, "g-hires-steps", 4)
    page.locator("#g-hires-upscaler").get_by_text("latent").click()
    [image_id] = generate(page, "a green kite", steps=3, seed=2)
    rec = server.store.get(image_id)
    assert (rec.width, rec.height) == (96, 96)
    assert rec.image_request["hires"] == {"scale": 1.5, "steps": 4, "strength": 0.5, "upscaler": "latent"}
    # 1.5x of the largest size is beyond this model: one sentence, nothing queued
    set_slider(page, "g-width", 128)
    before = server.store.history().total
    page.locator("#g-go").click()
    expect(page.locator("#g-status .st-error")).to_contain_text(
        "Hires scale: 1.5 is not allowed; at 128x64 it would make 192x96, beyond this model's largest side 128")
    assert server.store.history().total == before


def test_vary_region_link_opens_inpaint_on_that_image(browser, server):
    src = make(server, prompt="a pear", seed=5)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(inpaint_link(server.url + "/", src.id))
    expect(page.locator('[role=tab][aria-selected=true]', has_text="Inpaint")).to_have_count(1, timeout=30_000)
    expect(page.locator("#i-status")).to_contain_text(f"Source: image {src.id}")
    expect(page.locator("#i-id textarea, #i-id input").first).to_have_value(src.id)
    expect(page.locator("#i-prompt textarea")).to_have_value("a pear")
    expect(page.locator("#i-before img")).to_be_visible()
    # an unknown id says so in the tab, no traceback
    page.goto(server.url + "/?inpaint=zzzzzzzz")
    expect(page.locator("#i-status")).to_contain_text("zzzzzzzz")
    assert "Traceback" not in page.content()
    context.close()


def test_a_model_the_hires_fix_does_not_help_says_so_instead(browser, generator, tiny_model_dir, tmp_path,
                                                             monkeypatch):
    monkeypatch.setattr(HiresDefaults, "load", classmethod(
        lambda cls, folder: cls(helps=False, note="measured on a 128 vs 256 px grid")))
    srv = start_server(generator, tmp_path / "data", tiny_model_dir)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(srv.url)
        page.locator("#g-prompt textarea").wait_for(timeout=30_000)   # the app, not Gradio's "Loading..."
        expect(page.locator("#g-hires-note")).to_contain_text("does not improve this model's pictures")
        expect(page.locator("#g-hires-note")).to_contain_text("128 vs 256 px grid")
        expect(page.locator("#g-upscale")).to_have_count(0)
        expect(page.locator("#g-hires")).to_have_count(0)
        context.close()
    finally:
        stop_server(srv)


def test_send_to_generate_carries_the_hires_fix(page, server):
    from core.hires import Hires
    from core.jobs import Owner
    from core.request import GenerationRequest

    img = server.service.submit(GenerationRequest("a plum", seed=3, steps=2, hires=Hires(scale=1.5, steps=3)),
                                Owner("cli", "x")).result(120).images[0]
    open_tab(page, "History")
    fill(page, "h-query", "a plum")
    page.locator("#h-search").click()
    expect(page.locator("#h-gallery")).to_contain_text(img.id)
    select_in_gallery(page, "h-gallery", 0)
    expect(page.locator("#h-details")).to_contain_text(img.id)
    expect(page.locator("#h-details")).to_contain_text("1.5x (lanczos)")
    page.locator("#h-send").click()
    expect(page.locator("#g-status")).to_contain_text("With the hires fix: 1.5x (lanczos), 3 steps at strength 0.5")
    expect(page.locator("#g-hires-on input")).to_be_checked()
    before = page.locator("#g-status .st-status").inner_text()
    page.locator("#g-go").click()
    new_id = done_ids(wait_done(page, "g-status", previous=before))[0]
    assert server.store.get(new_id).image_request["hires"] == server.store.get(img.id).image_request["hires"]


def test_history_upscales_any_stored_image(page, server):
    src = make(server, prompt="a quince", seed=4)
    open_tab(page, "History")
    fill(page, "h-query", "a quince")
    page.locator("#h-search").click()
    expect(page.locator("#h-gallery")).to_contain_text(src.id)
    select_in_gallery(page, "h-gallery", 0)
    expect(page.locator("#h-details")).to_contain_text(src.id)
    page.locator("#h-upscale").click()
    text = wait_done(page, "h-status")
    assert f"Upscaled {src.id} as" in text and "128×128" in text, text
    expect(page.locator("#h-result img")).to_be_visible()
    new_id = [i for i in done_ids("x: " + text) if i != src.id][0]
    assert server.store.get(new_id).parent_id == src.id
