"""Scripts drive the UI's named endpoints with gradio_client."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    c = Client(server.url, verbose=False)
    yield c
    c.close()


def test_endpoints_are_named(client):
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/generate", "/reproduce", "/vary", "/inpaint", "/verify", "/history", "/recipe"} <= names


def test_generate_endpoint(client, server):
    out = client.predict(prompt="cat face", seed=42, steps=2, count=2, api_name="/generate")
    assert [o["seed"] for o in out] == [42, 43]
    rec = server.store.get(out[0]["id"])
    assert rec.image_request["prompt"] == "cat face" and rec.owner.source == "web"
    png = httpx.get(server.url + out[0]["file"], timeout=10)
    assert png.status_code == 200 and png.content == rec.path.read_bytes()

    again = client.predict(image_id=out[0]["id"], api_name="/reproduce")
    assert again[0]["sha256"] == out[0]["sha256"]
    same = client.predict(image_id=out[0]["id"], strength=0.0, api_name="/vary")
    assert np.array_equal(np.asarray(Image.open(server.store.get(same[0]["id"]).path)),
                          np.asarray(Image.open(rec.path)))
    verdict = client.predict(image_id=out[0]["id"], api_name="/verify")
    assert verdict["verdict"] == "exact" and verdict["max_pixel_diff"] == 0

    mask = Image.new("L", (rec.width, rec.height), 0)
    mask.paste(255, (0, 0, rec.width // 2, rec.height // 2))
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    painted = client.predict(image_id=rec.id, mask_png_base64=base64.b64encode(buf.getvalue()).decode(),
                             prompt="red face", strength=1.0, api_name="/inpaint")
    assert server.store.get(painted[0]["id"]).parent_id == rec.id

    hist = client.predict(query="cat face", api_name="/history")
    assert hist["total"] >= 2 and rec.id in [i["id"] for i in hist["items"]]
    assert client.predict(image_id=rec.id, api_name="/recipe")["request"]["seed"] == 42


def test_errors_come_back_as_messages(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Prompt"):
        client.predict(prompt="", api_name="/generate")
    with pytest.raises(AppError, match="Steps"):
        client.predict(prompt="cat", steps=0, api_name="/generate")
    with pytest.raises(AppError, match="no image with id"):
        client.predict(image_id="zzzzzzzz", api_name="/reproduce")


def test_a_value_an_endpoint_cannot_even_read_is_a_sentence(client, server):
    """seed "abc" was a ValueError inside the endpoint, and gradio's 'The upstream Gradio app has
    raised an exception'; a mask that is not base64 was 'Something went wrong (Error)'."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"^Seed: 'abc' is not allowed; use a whole number from 0 to 4294967295"):
        client.predict(prompt="cat", seed="abc", api_name="/generate")
    with pytest.raises(AppError, match=r"^Hires scale: 'big' is not allowed; "):
        client.predict(prompt="cat", hires_scale="big", api_name="/generate")
    made = client.predict(prompt="cat", seed=" 12 ", steps=1, api_name="/generate")   # a seed as text
    assert made[0]["seed"] == 12
    with pytest.raises(AppError, match=r"^mask_png_base64 is not base64; give the mask PNG's bytes in base64\.$"):
        client.predict(image_id=made[0]["id"], mask_png_base64="!!!", prompt="x", api_name="/inpaint")
    assert server.store.history(query="x").total == 0


def test_bad_history_paging_is_a_sentence_not_an_internal_error(client):
    """page -3 or per_page 100000 said 'Something went wrong (ValueError)' (issue 12, bug 6)."""
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=r"^Page: -3 is not allowed; use a whole number from 1 up\.$"):
        client.predict(page=-3, api_name="/history")
    with pytest.raises(AppError, match=r"^Per page: 100000 is not allowed; use a whole number from 1 to 100\.$"):
        client.predict(per_page=100000, api_name="/history")
    with pytest.raises(AppError, match=r"^Search: a text of 100000 characters is not allowed; use at most 1000 "):
        client.predict(query="x" * 100_000, api_name="/history")


def test_an_unforeseen_error_in_an_endpoint_is_a_sentence_without_python_names(client, server, monkeypatch, caplog):
    """It said 'Something went wrong (KeyError); ...': a Python name is for the log, which keeps it all."""
    from gradio_client.exceptions import AppError

    def broken(*args, **kwargs):
        raise KeyError("owner_id")

    monkeypatch.setattr(server.store, "history", broken)
    with caplog.at_level("ERROR", logger="webui.recipes"), pytest.raises(AppError) as info:
        client.predict(api_name="/history")
    assert str(info.value) == "Something went wrong on our side; the error is in the server's log. Try again."
    assert "KeyError: 'owner_id'" in caplog.text


def test_hires_through_the_endpoints(client, server):
    out = client.predict(prompt="a kite", seed=8, steps=2, hires_scale=1.5, hires_steps=3, api_name="/generate")
    assert (out[0]["width"], out[0]["height"]) == (96, 96)
    assert server.store.get(out[0]["id"]).image_request["hires"]["steps"] == 3
    plain = client.predict(prompt="a kite", seed=8, steps=2, api_name="/generate")
    up = client.predict(image_id=plain[0]["id"], scale=2, api_name="/upscale")
    rec = server.store.get(up[0]["id"])
    assert rec.parent_id == plain[0]["id"] and rec.kind == "upscale" and (rec.width, rec.height) == (128, 128)
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="Hires scale: 3 is not allowed; use a number from 1 to 2."):
        client.predict(image_id=plain[0]["id"], scale=3, api_name="/upscale")
