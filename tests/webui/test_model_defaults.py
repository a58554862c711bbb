"""The Generate tab's guidance starts at the model's own (its folder's defaults.json), and the API's
generate without a guidance, or with -1, draws with it."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.webui.conftest import start_server, stop_server
from tests.webui.ui import generate

pytestmark = pytest.mark.browser


def test_the_guidance_slider_and_the_api_start_from_the_models_own(browser, tiny_model_dir, tmp_path_factory):
    from core.generator import Generator
    from core.loader import load_model

    folder = tmp_path_factory.mktemp("models") / "guided"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "defaults.json").write_text(json.dumps({"guidance": 12}))
    srv = start_server(Generator(load_model(str(folder), device="cpu")), tmp_path_factory.mktemp("webui-g12"), folder)
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(srv.url)
        page.locator("#g-prompt textarea").wait_for()
        assert page.locator("#g-guidance input[type=range]").input_value() == "12"
        image_id = generate(page, "red apple", steps=2, seed=3)[0]
        assert srv.store.get(image_id).image_request["guidance"] == 12.0

        from gradio_client import Client

        client = Client(srv.url, verbose=False)
        try:
            for given, drawn in (({}, 12.0), ({"guidance": -1}, 12.0), ({"guidance": 3}, 3.0)):
                out = client.predict(prompt="dog", seed=1, steps=2, api_name="/generate", **given)
                assert srv.store.get(out[0]["id"]).image_request["guidance"] == drawn, given
        finally:
            client.close()
    finally:
        context.close()
        stop_server(srv)
