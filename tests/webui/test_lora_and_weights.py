"""The web UI's LoRA picker and prompt weights, in headless Chromium on the tiny model: the
picker inserts the tag and shows trigger words, the result's recipe names the LoRA with its
file hash, a weighted prompt is stored as written, and a cut prompt says so."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from core.jobs import Owner
from core.request import GenerationRequest
from tests.lora_fixture import lora_dir, lora_generator  # noqa: F401 -- fixtures
from tests.webui.conftest import start_server, stop_server
from tests.webui.ui import done_ids, fill, open_tab, select_in_gallery, set_slider, text_input, wait_done

pytestmark = pytest.mark.browser
LONG = ", ".join(["red cat on the blue background"] * 12)


@pytest.fixture(scope="module")
def server(lora_generator, lora_dir, tiny_model_dir, tmp_path_factory):  # noqa: F811
    srv = start_server(lora_generator, tmp_path_factory.mktemp("webui-lora"), tiny_model_dir, loras=True,
                       STATUARY_LORA_DIR=str(lora_dir))
    yield srv
    stop_server(srv)


def test_the_lora_picker_inserts_the_tag_and_the_recipe_names_the_file(page, server):
    open_tab(page, "Generate")
    fill(page, "g-prompt", "red (cat:1.3)")
    page.locator("#g-lora").get_by_text("LoRA", exact=True).first.click()  # open the accordion
    choose = page.locator("#g-lora-name input")
    choose.click()
    page.get_by_role("option", name="tagged", exact=True).click()
    expect(page.locator("#g-lora-words")).to_contain_text("Trigger words: pixelart, outline, cat")
    set_slider(page, "g-lora-weight", 0.6)
    page.locator("#g-lora-add").click()
    expect(text_input(page, "g-prompt")).to_have_value("red (cat:1.3) <lora:tagged:0.6>")
    page.locator("#g-lora-add-words").click()
    expect(text_input(page, "g-prompt")).to_have_value("red (cat:1.3) <lora:tagged:0.6>, pixelart, outline")

    set_slider(page, "g-steps", 2)
    fill(page, "g-seed", 5)
    before = page.locator("#g-status .st-status").inner_text()
    page.locator("#g-go").click()
    image_id = done_ids(wait_done(page, "g-status", previous=before))[0]
    rec = server.store.get(image_id)
    assert rec.request["prompt"] == "red (cat:1.3), pixelart, outline"  # the tag left the words...
    assert [e[:2] for e in rec.request["loras"]] == [["tagged", 0.6]]  # ...and joined the LoRA list
    expect(page.locator("#g-recipe")).to_contain_text(f"tagged at 0.6 (sha256 {rec.request['loras'][0][2][:12]})")

    fill(page, "g-prompt", "red cat <lora:tagged:5>")
    page.locator("#g-go").click()
    expect(page.locator("#g-status .st-error")).to_contain_text("use a LoRA weight from -2 to 2")


def test_a_cut_prompt_is_shown_with_the_tokens_used(page, server):
    old = GenerationRequest(LONG, seed=3, steps=2, prompt_syntax="plain")  # as made before prompt weights
    made = server.service.submit(old, Owner("discord", "77", "ed")).result(60).images[0]
    open_tab(page, "History")
    fill(page, "h-query", "red cat on the blue")
    page.locator("#h-search").click()
    expect(page.locator("#h-gallery")).to_contain_text(made.id)
    select_in_gallery(page, "h-gallery", 0)
    expect(page.locator("#h-details")).to_contain_text("The prompt was cut: the text encoder used 75 of its")
