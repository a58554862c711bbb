"""A model that says which words it knows (the default model's vocabulary.json): the Generate tab
offers its example prompts, suggests one, lists its subjects (with a search that shows every word
for one), and says in one line when a prompt
names none of them (the job still runs). Issue 14, "show people what it knows"."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from tests.webui.conftest import start_server, stop_server
from tests.webui.ui import generate

pytestmark = pytest.mark.browser

VOCABULARY = {"format": 1, "subjects": ["cat", "pizza", "rocket"],
              "emoji": [{"label": "cat face", "names": ["cat face", "cat", "kitten"]},
                        {"label": "pizza", "names": ["pizza"]}, {"label": "rocket", "names": ["rocket"]}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The default model's kind: a word list, and a cosine schedule with zero terminal SNR."""
    from core.generator import Generator
    from core.loader import load_model
    from tests.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path_factory.mktemp("models") / "with-words", zero_snr=True)
    (folder / "vocabulary.json").write_text(json.dumps(VOCABULARY))
    srv = start_server(Generator(load_model(str(folder), device="cpu")), tmp_path_factory.mktemp("webui-words"), folder)
    yield srv
    stop_server(srv)


def test_examples_placeholder_word_list_and_the_one_line_hint(page, server, artifacts):
    box = page.locator("#g-prompt textarea")
    placeholder = box.get_attribute("placeholder")
    assert any(w in placeholder for w in ("cat", "pizza", "rocket")) and "style" in placeholder
    examples = page.locator("#g-examples")
    expect(examples).to_contain_text("this model draws emoji")
    first = examples.locator("button, td, .gallery-item").first
    first.click()
    expect(box).not_to_have_value("")
    assert any(w in box.input_value() for w in ("cat", "pizza", "rocket"))
    page.locator("#g-words").get_by_text("subjects it knows").click()
    expect(page.locator("#g-words")).to_contain_text("Other (3): cat face, pizza, rocket")
    page.locator("#g-words-find textarea, #g-words-find input").first.fill("kit")   # every word for a subject
    expect(page.locator("#g-words-found")).to_have_text("cat face: cat, kitten")
    page.locator("#g-words-find textarea, #g-words-find input").first.fill("lighthouse")
    expect(page.locator("#g-words-found")).to_have_text("No subject has a word starting with “lighthouse”.")
    page.locator("#g-words").screenshot(path=str(artifacts / "generate-word-list.png"))

    hint = page.locator("#g-hint")
    generate(page, "portrait of an astronaut, oil painting", steps=2, seed=1)   # still runs and finishes
    expect(hint).to_contain_text("This model draws emoji")
    expect(hint).to_contain_text("e.g. cat, pizza, rocket")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts / "generate-vocabulary-hint.png"))
    image_id = generate(page, "a kitten on a blue background", steps=2, seed=2)[0]
    expect(hint).to_be_hidden()
    # Its sampler: the scheduler the folder ships (DDIM), and no Karras spacing on this schedule
    assert server.store.get(image_id).request["sampler"] == "ddim"
    assert page.locator("#g-sampler input").input_value() == "DDIM"
    page.locator("#g-sampler input").click()
    expect(page.get_by_role("option", name="Euler", exact=True)).to_be_visible()
    names = page.get_by_role("option").all_inner_texts()
    assert "DPM++ 2M" in names and not any("Karras" in n for n in names), names
    page.keyboard.press("Escape")


def test_a_model_without_a_word_list_shows_no_examples_or_hint(browser, tiny_model_dir, tmp_path_factory):
    from core.generator import Generator
    from core.loader import load_model

    srv = start_server(Generator(load_model(str(tiny_model_dir), device="cpu")), tmp_path_factory.mktemp("webui-nw"),
                       tiny_model_dir)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.goto(srv.url)
        page.locator("#g-prompt textarea").wait_for()
        assert page.locator("#g-examples").count() == 0 and page.locator("#g-words").count() == 0
        generate(page, "portrait of an astronaut", steps=2, seed=1)
        expect(page.locator("#g-hint")).to_be_hidden()
        context.close()
    finally:
        stop_server(srv)
