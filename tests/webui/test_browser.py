"""End-to-end: the running web UI driven in headless Chromium on the tiny model."""

from __future__ import annotations

import io
import re
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import expect

from core.jobs import Owner
from core.request import GenerationRequest
from tests.webui.ui import (done_ids, fill, generate, open_tab, seen_while_running, select_in_gallery, set_slider, text_input,
                           wait_done, watch_job)

pytestmark = pytest.mark.browser



def make(server, prompt="red apple", seed=7, steps=3, owner=Owner("discord", "1234", "dora")):
    """An image made outside the web UI (here: as if from Discord)."""
    return server.service.submit(GenerationRequest(prompt=prompt, seed=seed, steps=steps), owner).result(60).images[0]


def pixels(path_or_bytes) -> np.ndarray:
    src = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else path_or_bytes
    with Image.open(src) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def test_generate_shows_image_in_history_and_database(page, server):
    ids = generate(page, "cat face on blue background", steps=3, seed=42)
    assert len(ids) == 1
    image_id = ids[0]
    expect(page.locator("#g-gallery .thumbnail-small")).to_have_count(1)  # one image, shown large above it
    expect(page.locator("#g-recipe")).to_contain_text(image_id)
    expect(page.locator("#g-recipe")).to_contain_text("42")

    rec = server.store.get(image_id)
    assert rec.image_request["prompt"] == "cat face on blue background" and rec.owner.source == "web"
    db = server.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from images where id = ?", (image_id,)).fetchone()[0] == 1

    open_tab(page, "History")
    expect(page.locator("#h-gallery")).to_contain_text(image_id)
    fill(page, "h-query", "blue cat")
    page.locator("#h-search").click()
    expect(page.locator("#h-count")).to_contain_text("matching")
    expect(page.locator("#h-gallery")).to_contain_text(image_id)


def test_reproduce_from_history_gives_identical_bytes(page, server):
    src = make(server, prompt="dog face", seed=11)
    open_tab(page, "History")
    fill(page, "h-query", "dog face")
    page.locator("#h-search").click()
    expect(page.locator("#h-gallery")).to_contain_text(src.id)
    select_in_gallery(page, "h-gallery", 0)
    expect(page.locator("#h-details")).to_contain_text(src.id)
    expect(page.locator("#h-details")).to_contain_text("dora")  # a Discord user's image, shown to the web
    page.locator("#h-reproduce").click()
    text = wait_done(page, "h-status")
    assert "identical bytes" in text, text
    new_id = [i for i in done_ids("x: " + text) if i != src.id][0]
    new = server.store.get(new_id)
    assert new.path.read_bytes() == Path(src.path).read_bytes()
    assert new.parent_id == src.id

    page.locator("#h-verify").click()
    expect(page.locator("#h-status")).to_contain_text("Exact", timeout=60_000)


def test_variation_at_strength_zero_equals_source(page, server):
    src = make(server, prompt="pizza", seed=5)
    open_tab(page, "Variations")
    fill(page, "v-id", src.id)
    page.locator("#v-load").click()
    expect(page.locator("#v-status")).to_contain_text(f"Source: image {src.id}")
    set_slider(page, "v-strength", 0)
    set_slider(page, "v-count", 1)
    page.locator("#v-go").click()
    ids = done_ids(wait_done(page, "v-status"))
    assert len(ids) == 1
    var = server.store.get(ids[0])
    assert np.array_equal(pixels(var.path), pixels(src.path))
    assert var.parent_id == src.id

    # walk on: a real variation of it, then use that one as the new source
    set_slider(page, "v-strength", 0.5)
    set_slider(page, "v-count", 2)
    before = page.locator("#v-status").inner_text()
    page.locator("#v-go").click()
    ids = done_ids(wait_done(page, "v-status", previous=before))
    assert len(ids) == 2
    select_in_gallery(page, "v-gallery", 1)
    expect(page.locator("#v-recipe")).to_contain_text(ids[1])
    page.locator("#v-walk").click()
    expect(page.locator("#v-status")).to_contain_text(f"Source: image {ids[1]}")
    assert text_input(page, "v-id").input_value() == ids[1]

    # the walk builds on the chosen one: strength 0 gives that variation, not the original
    set_slider(page, "v-strength", 0)
    set_slider(page, "v-count", 1)
    before = page.locator("#v-status").inner_text()
    page.locator("#v-go").click()
    again = done_ids(wait_done(page, "v-status", previous=before))[0]
    assert np.array_equal(pixels(server.store.get(again).path), pixels(server.store.get(ids[1]).path))
    # and a further step's recipe shows the whole chain, oldest first
    set_slider(page, "v-strength", 0.3)
    before = page.locator("#v-status").inner_text()
    page.locator("#v-go").click()
    step = done_ids(wait_done(page, "v-status", previous=before))[0]
    first_vseed = server.store.get(ids[1]).variation_seed
    expect(page.locator("#v-recipe")).to_contain_text(f"seed {first_vseed} at strength 0.5, then seed")
    assert server.store.get(step).image_request["variation_chain"] == [[first_vseed, 0.5]]


def test_inpaint_with_a_painted_mask(page, server):
    src = make(server, prompt="apple", seed=3)
    open_tab(page, "Inpaint")
    fill(page, "i-id", src.id)
    page.locator("#i-load").click()
    expect(page.locator("#i-status")).to_contain_text(f"Source: image {src.id}")
    editor = page.locator("#i-editor")
    editor.get_by_role("button", name="Brush", exact=True).click()
    canvas = editor.locator("canvas").first
    expect(canvas).to_be_visible()
    time.sleep(0.5)  # the background image settles into the canvas
    box = canvas.bounding_box()
    # A thick stroke across the upper-left quarter of the picture.
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 15):
        page.mouse.move(x0 + k * box["width"] * 0.02, y0 + k * box["height"] * 0.005, steps=2)
    page.mouse.up()
    fill(page, "i-prompt", "blue face")
    set_slider(page, "i-strength", 1)
    page.locator("#i-go").click()
    new_id = done_ids(wait_done(page, "i-status"))[0]
    expect(page.locator("#i-after img")).to_be_visible()

    new = server.store.get(new_id)
    assert new.parent_id == src.id and new.kind == "inpaint"
    mask = pixels(server.store.request_for(new_id).mask)[..., 0] > 127
    assert 0.01 < mask.mean() < 0.6, mask.mean()  # the stroke, not nothing and not everything
    before, after = pixels(src.path), pixels(new.path)
    diff = np.abs(before - after).max(axis=2)
    assert diff[mask].mean() > 10  # the painted part changed
    assert diff[~mask].max() <= 2  # the rest stays as it was


def _plain_png(size=(16, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, "white").save(buf, format="PNG")
    return buf.getvalue()


def test_png_info_of_a_downloaded_image(page, server, tmp_path):
    ids = generate(page, "red face", steps=3, seed=99)
    with page.expect_download() as dl:
        page.locator("#g-download").click()
    target = tmp_path / dl.value.suggested_filename
    dl.value.save_as(target)
    assert target.name == f"statuary-{ids[0]}.png"
    assert target.read_bytes() == server.store.get(ids[0]).path.read_bytes()

    open_tab(page, "PNG info")
    page.locator("#p-file input[type=file]").set_input_files(str(target))
    expect(page.locator("#p-info")).to_contain_text("red face")
    expect(page.locator("#p-info")).to_contain_text("99")
    expect(page.locator("#p-status")).to_contain_text("Statuary recipe")

    # the same file as a Variations source: named in words, not as 'a statuary recipe' (bug 6)
    open_tab(page, "Variations")
    page.locator("#v-upload input[type=file]").set_input_files(str(target))
    expect(page.locator("#v-status")).to_contain_text("It carries a Statuary recipe")
    open_tab(page, "PNG info")
    page.locator("#p-send").click()
    expect(page.locator("#g-status")).to_contain_text("Recipe loaded")
    assert text_input(page, "g-prompt").input_value() == "red face"
    assert page.locator("#g-seed input").input_value() == "99"


def test_png_info_reads_a1111_text(page, server, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "a castle on a hill\nNegative prompt: blurry\n"
                                "Steps: 30, Sampler: Euler a, CFG scale: 6.5, Seed: 1234, Size: 512x768")
    path = tmp_path / "a1111.png"
    Image.new("RGB", (8, 8), "white").save(path, pnginfo=info)
    open_tab(page, "PNG info")
    page.locator("#p-file input[type=file]").set_input_files(str(path))
    expect(page.locator("#p-status")).to_contain_text("AUTOMATIC1111")
    expect(page.locator("#p-info")).to_contain_text("a castle on a hill")
    page.locator("#p-send").click()
    # moved into the tiny model's range, and said so in the core's words (issue 12, bug 4)
    note = "Width: 512 is not allowed; use a multiple of 8 from 64 to 128. It is set to 128."
    expect(page.locator("#g-status")).to_contain_text(note)
    assert text_input(page, "g-prompt").input_value() == "a castle on a hill"
    assert page.locator("#g-seed input").input_value() == "1234"

    # Variations of the same file: changed the same way, said the same way, not refused
    open_tab(page, "Variations")
    page.locator("#v-upload input[type=file]").set_input_files(str(path))
    expect(page.locator("#v-status")).to_contain_text("It carries an AUTOMATIC1111 recipe")
    expect(page.locator("#v-status")).to_contain_text(note)
    expect(page.locator("#v-status")).to_contain_text("Height: 768 is not allowed")
    set_slider(page, "v-count", 1)
    page.locator("#v-go").click()
    made = server.store.get(done_ids(wait_done(page, "v-status"))[0])
    assert (made.width, made.height, made.image_request["steps"]) == (128, 128, 30)


def test_a_typed_value_out_of_range_is_said_not_silently_changed(page):
    """Steps 0 or 999 typed into the box ran as 1 or 150 without a word (issue 12, bug 4)."""
    open_tab(page, "Generate")
    set_slider(page, "g-steps", 0)
    expect(page.locator("#g-steps .st-note")).to_have_text(
        "Steps: 0 is not allowed; use a whole number from 1 to 150. It is set to 1.")
    set_slider(page, "g-steps", 999)
    expect(page.locator("#g-steps .st-note")).to_have_text(
        "Steps: 999 is not allowed; use a whole number from 1 to 150. It is set to 150.")
    assert page.locator("#g-steps input[type=number]").input_value() == "150"
    set_slider(page, "g-steps", 30)
    expect(page.locator("#g-steps .st-note")).to_have_text("")
    set_slider(page, "g-width", 4096)
    expect(page.locator("#g-width .st-note")).to_have_text(
        "Width: 4096 is not allowed; use a multiple of 8 from 64 to 128. It is set to 128.")

    open_tab(page, "Inpaint")  # the same words in every tab
    set_slider(page, "i-steps", 0)
    expect(page.locator("#i-steps .st-note")).to_have_text(
        "Steps: 0 is not allowed; use a whole number from 1 to 150. It is set to 1.")
    set_slider(page, "i-strength", 0)
    expect(page.locator("#i-strength .st-note")).to_have_text(
        "Strength: 0 is not allowed; use a value above 0 and up to 1 with an init image. It is set to 0.05.")


def test_bad_input_shows_a_message_and_the_ui_stays_usable(page, server):
    open_tab(page, "Generate")
    fill(page, "g-prompt", "   ")
    page.locator("#g-go").click()
    err = page.locator("#g-status .st-error")
    expect(err).to_contain_text("Prompt")
    expect(err).to_contain_text("write a few words")
    assert "Traceback" not in page.content()

    fill(page, "g-prompt", "cat")
    fill(page, "g-seed", 99999999999)
    page.locator("#g-go").click()
    expect(page.locator("#g-status .st-error")).to_contain_text("Seed")
    expect(page.locator("#g-status .st-error")).to_contain_text("4294967295")

    # A plain text upload is not a PNG with a recipe: a message, not a crash.
    open_tab(page, "PNG info")
    page.locator("#p-file input[type=file]").set_input_files(
        files=[{"name": "x.png", "mimeType": "image/png", "buffer": b"not a png"}])
    expect(page.locator("#p-status .st-error")).to_have_text("This file is not a readable image file.")
    # A PNG without a recipe: a sentence, with no '<bytes>' or object repr (issue 12, bug 6)
    page.locator("#p-file").get_by_role("button", name="Clear").click()
    page.locator("#p-file input[type=file]").set_input_files(
        files=[{"name": "plain.png", "mimeType": "image/png", "buffer": _plain_png()}])
    expect(page.locator("#p-status .st-error")).to_have_text(
        "This file has no recipe (neither a 'statuary' nor a 'parameters' text chunk).")

    open_tab(page, "Timeline")
    fill(page, "t-id", "zzzzzzzz")
    page.locator("#t-load").click()
    expect(page.locator("#t-status .st-error")).to_contain_text("no image with id")

    open_tab(page, "Inpaint")
    page.locator("#i-go").click()
    expect(page.locator("#i-status .st-error")).to_contain_text("Load an image")

    assert generate(page, "cat", steps=2, seed=1)  # still works


def test_each_browser_has_its_own_queue_position_and_cancel(browser, server):
    # Two long jobs of other people hold the worker (one runs, one waits), so the browsers'
    # jobs stay queued long enough to watch, even on a fast machine.
    pages = []
    blockers = []
    try:
        for _ in range(2):
            ctx = browser.new_context(viewport={"width": 1280, "height": 800})
            pg = ctx.new_page()
            pg.goto(server.url)
            pg.locator("#g-prompt textarea").wait_for()
            pages.append(pg)
        a, b = pages
        generate(a, "warm up", steps=3)  # the UI times its steps: the wait below is estimated from them
        slow = GenerationRequest(prompt="blocker", steps=150, count=4, width=128, height=128)
        blockers = [server.service.submit(slow, Owner("cli", f"blocker-{i}")) for i in range(2)]
        for pg in pages:
            fill(pg, "g-prompt", "queued cat")
            set_slider(pg, "g-steps", 2)
        a.locator("#g-go").click()
        expect(a.locator("#g-status")).to_contain_text(re.compile(r"position 2, about \d+ (s|min)"))
        b.locator("#g-go").click()
        expect(b.locator("#g-status")).to_contain_text("position 3")
        a.locator("#g-cancel").click()
        expect(a.locator("#g-status")).to_contain_text("Cancelled")
        expect(b.locator("#g-status")).to_contain_text("position 2")
        for h in blockers:
            h.cancel()
        ids = done_ids(wait_done(b, "g-status"))
        assert server.store.get(ids[0]).owner.source == "web"
    finally:
        for h in blockers:
            h.cancel()
        for pg in pages:
            pg.context.close()


def test_live_preview_and_progress(page, server):
    """The preview image and the progress bar appear while the job runs. Recorded as the page
    changes, not polled: on a fast machine the whole job takes under two seconds, and a fresh-clone
    CI run (2026-12-05) failed here while polling with expect(), most likely between its polls."""
    open_tab(page, "Generate")
    fill(page, "g-prompt", "slow cat")
    set_slider(page, "g-steps", 60)
    set_slider(page, "g-width", 128)
    set_slider(page, "g-height", 128)
    watch_job(page, "g-status", "g-preview")
    page.locator("#g-go").click()
    wait_done(page, "g-status")
    seen = seen_while_running(page)
    assert {k: seen[k] for k in ("bar", "step", "preview", "ended")} == {
        "bar": True, "step": True, "preview": True, "ended": True}, seen


def _screens(browser, server, artifacts, width, height, suffix):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server.url)
    page.locator("#g-prompt textarea").wait_for()
    shots = {}

    def shot(name):
        page.wait_for_timeout(400)
        path = artifacts / f"{name}-{suffix}.png"
        page.screenshot(path=str(path))
        shots[name] = path

    open_tab(page, "Generate")
    generate(page, "cat face, blue background", steps=4, seed=2024, count=2)
    page.evaluate("window.scrollTo(0, 0)")
    shot("generate")
    open_tab(page, "Variations")
    src = server.store.history(page=1, per_page=1).items[0].id
    fill(page, "v-id", src)
    page.locator("#v-load").click()
    set_slider(page, "v-count", 4)
    page.locator("#v-go").click()
    wait_done(page, "v-status")
    page.evaluate("window.scrollTo(0, 0)")
    shot("variations")
    open_tab(page, "Inpaint")
    fill(page, "i-id", src)
    page.locator("#i-load").click()
    expect(page.locator("#i-status")).to_contain_text(src)
    page.evaluate("window.scrollTo(0, 0)")
    shot("inpaint")
    open_tab(page, "History")
    expect(page.locator("#h-gallery .thumbnail-item").first).to_be_visible()
    select_in_gallery(page, "h-gallery", 0)
    expect(page.locator("#h-details")).to_contain_text("Image")
    page.evaluate("window.scrollTo(0, 0)")
    shot("history")
    page.locator("#h-delete").scroll_into_view_if_needed()
    shot("history-actions")
    open_tab(page, "Timeline")
    fill(page, "t-id", src)
    page.locator("#t-load").click()
    expect(page.locator("#t-status")).to_contain_text("frames")
    set_slider(page, "t-slider", 60)
    page.evaluate("window.scrollTo(0, 0)")
    shot("timeline")
    open_tab(page, "PNG info")
    page.locator("#p-file input[type=file]").set_input_files(str(server.store.get(src).path))
    expect(page.locator("#p-info")).to_contain_text("cat face")
    page.evaluate("window.scrollTo(0, 0)")
    shot("pnginfo")
    context.close()
    return shots


def test_screenshots_of_every_tab(browser, server, artifacts):
    # Written to test-artifacts/ only: a test run must not change tracked files. To refresh the
    # README's picture: cp test-artifacts/webui/generate-1280x800.png docs/screenshot-webui.png
    wide = _screens(browser, server, artifacts, 1280, 800, "1280x800")
    _screens(browser, server, artifacts, 390, 844, "390x844")
    assert wide["generate"].is_file()


def test_timeline_scrubs_and_downloads(page, server):
    src = make(server, prompt="blue apple", seed=8, steps=6)
    open_tab(page, "Timeline")
    fill(page, "t-id", src.id)
    page.locator("#t-load").click()
    expect(page.locator("#t-status")).to_contain_text("6 frames")
    first = page.locator("#t-frame img").get_attribute("src")
    set_slider(page, "t-slider", 100)
    expect(page.locator("#t-frame img")).not_to_have_attribute("src", first)
    expect(page.locator(".toast-body")).to_have_count(0)  # no "value out of range" error
    with page.expect_download() as dl:
        page.locator("#t-gif").click()
    assert dl.value.suggested_filename == f"statuary-{src.id}-timeline.gif"
    data = Path(dl.value.path()).read_bytes()
    assert data[:6] == b"GIF89a"


def _history_search(page, query: str, mine: bool = False) -> None:
    open_tab(page, "History")
    box = page.locator("#h-mine input[type=checkbox]")
    if box.is_checked() != mine:
        box.click()
    fill(page, "h-query", query)
    page.locator("#h-search").click()
    expect(page.locator("#h-count")).to_contain_text(f"matching “{query}”")


def _select(page, server, image_id: str, query: str) -> None:
    """Click the image's thumbnail (the gallery shows the store's history order)."""
    ids = [r.id for r in server.store.history(query=query).items]
    expect(page.locator("#h-gallery .thumbnail-item")).to_have_count(len(ids))
    select_in_gallery(page, "h-gallery", ids.index(image_id))
    expect(page.locator("#h-details")).to_contain_text(image_id)


def test_delete_own_images_only_and_only_mine_filter(page, server):
    from storage import NotFound

    mine = generate(page, "plum on a table", steps=2, seed=4242, count=2)
    theirs = make(server, prompt="plum on a table", seed=77)  # dora's, from Discord
    for image_id in mine:
        assert server.store.get(image_id).owner.source == "web"
    doomed, kept = mine
    doomed_path = server.store.get(doomed).path
    assert doomed_path.exists()

    _history_search(page, "plum")
    expect(page.locator("#h-count")).to_contain_text("3 images")
    _select(page, server, doomed, "plum")
    page.locator("#h-delete").click()
    expect(page.locator("#h-status .st-ok")).to_contain_text(f"Deleted image {doomed}")
    expect(page.locator("#h-count")).to_contain_text("2 images")
    expect(page.locator("#h-gallery")).not_to_contain_text(doomed)
    expect(page.locator("#h-gallery")).to_contain_text(kept)
    expect(page.locator("#h-details")).not_to_contain_text(doomed)
    with pytest.raises(NotFound, match="was deleted"):
        server.store.get(doomed)
    db = server.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as con:
        assert con.execute("select count(*) from images where id = ?", (doomed,)).fetchone()[0] == 0
    assert not doomed_path.exists()

    # Someone else's image: refused, said plainly, and nothing is deleted.
    _select(page, server, theirs.id, "plum")
    page.locator("#h-delete").click()
    err = page.locator("#h-status .st-error")
    expect(err).to_contain_text(f"image {theirs.id} belongs to dora")
    expect(err).to_contain_text("you can delete only your own images")
    assert "Traceback" not in page.content()
    assert server.store.get(theirs.id).path.exists()
    expect(page.locator("#h-gallery")).to_contain_text(theirs.id)

    # Only mine: dora's image goes from the list, this browser's stays.
    _history_search(page, "plum", mine=True)
    expect(page.locator("#h-count")).to_contain_text("1 image of yours")
    expect(page.locator("#h-gallery")).to_contain_text(kept)
    expect(page.locator("#h-gallery")).not_to_contain_text(theirs.id)
    page.locator("#h-mine input[type=checkbox]").click()  # off again: everyone's
    expect(page.locator("#h-count")).to_contain_text("2 images")
    expect(page.locator("#h-gallery")).to_contain_text(theirs.id)


def test_who_you_are_survives_a_reload(browser, server):
    """Without a login, a browser stays the same person across reloads (issue 12, bug 1); another
    browser is someone else, and the identity is an HttpOnly cookie no page shows."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server.url)
    page.locator("#g-prompt textarea").wait_for()
    made = generate(page, "quince after a reload", steps=2, seed=31)[0]
    owner = server.store.get(made).owner
    cookie = [c for c in context.cookies() if c["name"] == "statuary_browser"]
    assert len(cookie) == 1 and cookie[0]["httpOnly"]
    assert cookie[0]["value"] not in owner.user_id and cookie[0]["value"] not in page.content()

    page.reload()
    page.locator("#g-prompt textarea").wait_for()
    _history_search(page, "quince", mine=True)
    expect(page.locator("#h-count")).to_contain_text("1 image of yours")
    _select(page, server, made, "quince")
    page.locator("#h-delete").click()
    expect(page.locator("#h-status .st-ok")).to_contain_text(f"Deleted image {made}")

    again = generate(page, "quince again", steps=2, seed=32)[0]
    assert server.store.get(again).owner == owner
    other = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    other.goto(server.url)
    other.locator("#g-prompt textarea").wait_for()
    _history_search(other, "quince", mine=True)
    expect(other.locator("#h-count")).to_contain_text("0 images of yours")
    _history_search(other, "quince", mine=False)
    _select(other, server, again, "quince")
    other.locator("#h-delete").click()
    expect(other.locator("#h-status .st-error")).to_contain_text(f"belongs to {owner.display_name}")
    other.context.close()
    context.close()


def test_progress_counts_steps_per_image(page, server):
    """Steps 40 x 2 images: 'Image 2 of 2, step 1 of 40', never 'Step 41 of 80' (issue 12, bug 7)."""
    import re

    open_tab(page, "Generate")
    fill(page, "g-prompt", "two slow cats")
    set_slider(page, "g-steps", 40)
    set_slider(page, "g-count", 2)
    watch_job(page, "g-status")
    page.locator("#g-go").click()
    wait_done(page, "g-status")
    seen = seen_while_running(page)["messages"]
    progress = [t for t in seen if "step" in t.lower()]
    assert any(re.fullmatch(r"Image 2 of 2, step \d+ of 40", t) for t in progress), seen
    assert all(re.fullmatch(r"Image [12] of 2, step \d+ of 40", t) for t in progress), seen


def _bomb_png(side: int = 20000) -> bytes:
    """A real PNG of side x side 1-bit pixels: a few dozen KB on disk, 400 megapixels decoded."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" * (1 + (side + 7) // 8)
    raw = zlib.compress(row * side, 9)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", raw) + chunk(b"IEND", b""))


def _upload_button(page, elem_id: str, file: dict) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator(f"#{elem_id}").click()
    chooser.value.set_files(files=[file])


def test_uploads_are_judged_when_they_arrive(page, server):
    """A text file or a 20000x20000 PNG is refused on arrival with the core's words, in
    Variations and Inpaint, and nothing is queued (issue 12, bug 5)."""
    before = server.store.history(per_page=1, include_verify=True).total
    text = {"name": "notes.png", "mimeType": "image/png", "buffer": b"just some text"}
    bomb = {"name": "huge.png", "mimeType": "image/png", "buffer": _bomb_png()}
    unreadable = "Source image: a 14-byte file is not allowed; give a readable PNG, JPEG or WebP image."
    too_big = "use an image of at most 16777216 pixels (4096 x 4096)."

    open_tab(page, "Variations")
    page.locator("#v-upload input[type=file]").set_input_files(files=[text])
    expect(page.locator("#v-status .st-error")).to_have_text(unreadable)
    expect(page.locator("#v-upload input[type=file]")).to_have_count(1)  # the upload is dropped, ready for another
    page.locator("#v-upload input[type=file]").set_input_files(files=[bomb])
    expect(page.locator("#v-status .st-error")).to_contain_text(too_big)
    page.locator("#v-go").click()
    expect(page.locator("#v-status .st-error")).to_contain_text("Choose a source first")

    open_tab(page, "Inpaint")
    _upload_button(page, "i-upload", bomb)
    expect(page.locator("#i-status .st-error")).to_contain_text(too_big)
    _upload_button(page, "i-upload", text)
    expect(page.locator("#i-status .st-error")).to_have_text(unreadable)
    assert server.store.history(per_page=1, include_verify=True).total == before

    good = {"name": "ok.png", "mimeType": "image/png", "buffer": _plain_png((64, 64))}
    _upload_button(page, "i-upload", good)
    expect(page.locator("#i-status")).to_contain_text("Source: the upload")
    expect(page.locator("#i-before img")).to_be_visible()


def test_the_picture_comes_first(page, server):
    """The result is the largest thing on the page, the live preview gives way to it, a click
    shows it full size; shapes beside width and height; prompts kept per browser (issue 12)."""
    open_tab(page, "Generate")
    page.locator("#g-aspect").get_by_text("16:9", exact=True).click()
    expect(page.locator("#g-width input[type=number]")).to_have_value("112")  # 16:9 near 64 x 64, on the grid
    expect(page.locator("#g-height input[type=number]")).to_have_value("64")
    image_id = generate(page, "pear in the rain", steps=3, seed=8)[0]
    assert (server.store.get(image_id).width, server.store.get(image_id).height) == (112, 64)

    expect(page.locator("#g-preview")).to_be_hidden()  # not the last noisy frame
    big = page.locator("#g-gallery .thumbnail-lg img")
    expect(big).to_be_visible()
    areas = page.evaluate("""() => [...document.querySelectorAll('img, canvas, textarea')]
        .filter(e => e.offsetParent).map(e => [e.closest('[id]')?.id, e.getBoundingClientRect().width
                                              * e.getBoundingClientRect().height])""")
    largest = max(areas, key=lambda a: a[1])
    assert largest[0] == "g-gallery" and largest[1] > 400 * 200, areas
    page.locator("#g-gallery").get_by_role("button", name="Fullscreen").click()
    expect(page.locator("#g-gallery .thumbnail-lg img")).to_be_visible()
    page.keyboard.press("Escape")

    expect(page.locator("#g-recent")).to_contain_text("pear in the rain")
    page.reload()
    page.locator("#g-prompt textarea").wait_for()
    expect(page.locator("#g-recent")).to_contain_text("pear in the rain")  # kept by this browser
    page.locator("#g-recent").get_by_text("pear in the rain").click()
    expect(text_input(page, "g-prompt")).to_have_value("pear in the rain")


def test_one_handed_on_a_phone(browser, server):
    """At 390 px: every tab in reach (none behind '...'), the status and the picture right under
    Generate, the sampler's name whole, History in a grid, not one sideways row (issue 12)."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.goto(server.url)
    page.locator("#g-prompt textarea").wait_for()
    expect(page.get_by_role("button", name="More tabs")).to_have_count(0)
    for name in ("Generate", "Variations", "Inpaint", "History", "Timeline", "PNG info"):
        expect(page.get_by_role("tab", name=name, exact=True)).to_be_visible()
    sampler = page.locator("#g-sampler input")
    assert sampler.evaluate("e => e.scrollWidth <= e.clientWidth"), sampler.input_value()

    generate(page, "phone cat", steps=3, seed=5, count=4)
    status = page.locator("#g-status").bounding_box()
    picture = page.locator("#g-gallery").bounding_box()
    settings = page.locator("#g-settings").bounding_box()
    assert status["y"] < picture["y"] < settings["y"], (status, picture, settings)
    go = page.locator("#g-go").bounding_box()
    assert picture["y"] - (go["y"] + go["height"]) < 200  # the picture follows the button, not the settings

    open_tab(page, "History")
    thumbs = page.locator("#h-gallery .thumbnail-item")
    expect(thumbs.first).to_be_visible()
    rights = thumbs.evaluate_all("els => els.map(e => e.getBoundingClientRect().right)")
    assert max(rights) <= 390, rights
    context.close()
