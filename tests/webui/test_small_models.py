"""Models whose native size is at or below the core's usual 64 px minimum side: the page starts,
the default size is usable, and reproduce / verify accept what the model just made (issue 12, bug 3)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from tests.tiny_model import build_tiny_model
from tests.webui.conftest import start_server, stop_server
from tests.webui.ui import generate, open_tab, select_in_gallery, wait_done

pytestmark = pytest.mark.browser


def _generator(path, **kwargs):
    from core.generator import Generator
    from core.loader import load_model

    return Generator(load_model(str(path), device="cpu", **kwargs))


@pytest.fixture(scope="module")
def model32(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-32", sample_size=4)


@pytest.fixture(scope="module")
def server(model32, tmp_path_factory):
    srv = start_server(_generator(model32), tmp_path_factory.mktemp("webui-32"), model32)
    yield srv
    stop_server(srv)


def _slider_range(page, elem_id):
    box = page.locator(f"#{elem_id} input[type=range]")
    return int(box.get_attribute("min")), int(box.get_attribute("max")), int(box.input_value())


def test_a_32px_model_works_in_generate_history_and_the_api(page, server):
    lim = server.service.limits
    assert (lim.native_size, lim.max_side, lim.min_side) == (32, 64, 32)
    assert _slider_range(page, "g-width") == (32, 64, 32)

    image_id = generate(page, "cat face", steps=2, seed=5)[0]  # at the default size: the model's own
    rec = server.store.get(image_id)
    assert (rec.width, rec.height) == (32, 32)

    open_tab(page, "History")
    expect(page.locator("#h-gallery .thumbnail-item").first).to_be_visible()
    select_in_gallery(page, "h-gallery", 0)
    expect(page.locator("#h-details")).to_contain_text(image_id)
    page.locator("#h-reproduce").click()
    assert "identical bytes" in wait_done(page, "h-status")
    page.locator("#h-verify").click()
    expect(page.locator("#h-status")).to_contain_text("Exact", timeout=60_000)

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False)
    try:
        out = client.predict(prompt="dog", seed=1, steps=2, width=0, height=0, api_name="/generate")
        assert (out[0]["width"], out[0]["height"]) == (32, 32)
        wide = client.predict(prompt="dog", seed=1, steps=2, width=64, height=32, api_name="/generate")
        assert (wide[0]["width"], wide[0]["height"]) == (64, 32)
        assert client.predict(image_id=out[0]["id"], api_name="/verify")["verdict"] == "exact"
        with pytest.raises(AppError, match="use a multiple of 8 from 32 to 64"):
            client.predict(prompt="dog", steps=2, width=24, api_name="/generate")
    finally:
        client.close()


def test_a_64px_model_whose_largest_side_is_64_starts_and_generates(browser, tiny_model_dir, tmp_path_factory):
    srv = start_server(_generator(tiny_model_dir, max_side=64), tmp_path_factory.mktemp("webui-64"), tiny_model_dir)
    try:
        assert (srv.service.limits.native_size, srv.service.limits.max_side) == (64, 64)
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(srv.url)
        page.locator("#g-prompt textarea").wait_for()
        assert _slider_range(page, "g-width") == (32, 64, 64)
        image_id = generate(page, "red apple", steps=2, seed=3)[0]
        assert (srv.store.get(image_id).width, srv.store.get(image_id).height) == (64, 64)
        context.close()
    finally:
        stop_server(srv)
