"""Upscale 2x on Discord: the hires fix of one image, from the button on its own post."""

from __future__ import annotations

import io

from PIL import Image

from core.hires import HiresDefaults
from tests.bot.standin import button_labels
from tests.bot.test_bot import EPHEMERAL, final_of, ids_in, imagine


def test_u_post_offers_upscale_2x_which_makes_a_hires_child(discord_run):
    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="a lighthouse", count=2, seed=4)
        assert "Upscale 2x" not in button_labels(grid)  # on the single image's post, as Midjourney
        ids = ids_in(grid)
        u1 = await final_of(st, await st.click(grid, "U1"))
        assert "Upscale 2x" in button_labels(u1)

        up = await final_of(st, await st.click(u1, "Upscale 2x"))
        child = d.store.get(ids_in(up)[0])
        assert child.parent_id == ids[0] and child.kind == "upscale"
        assert (child.width, child.height) == (128, 128)  # the record's size is the picture's
        assert child.image_request["hires"]["scale"] == 2.0 and child.image_request["seed"] == 4
        assert Image.open(io.BytesIO(st.attachment_bytes(up))).size == (256, 256)  # 128 px, shown at 2x
        assert "hires fix 2x" in up["content"]
        # its recipe already has the hires fix: a second Upscale 2x says so, nothing queued
        before = d.store.history().total
        await st.click(up, "Upscale 2x")
        refused = await st.wait_message(lambda m: "made with the hires fix already" in m["content"])
        assert refused["flags"] & EPHEMERAL and d.store.history().total == before

    discord_run(scenario)


def test_a_model_the_hires_fix_does_not_help_gets_no_button_and_a_reason(discord_run):
    async def scenario(d):
        st = d.standin
        _, single = await imagine(st, prompt="a cat")
        assert "Upscale 2x" in button_labels(single)
        d.service.hires_defaults = HiresDefaults(helps=False, note="a 128 vs 256 px grid showed no gain")
        _, single2 = await imagine(st, prompt="a dog")
        assert "Upscale 2x" not in button_labels(single2)
        await st.click(single, "Upscale 2x")  # an old button
        said = await st.wait_message(lambda m: "does not improve this model" in m["content"])
        assert "128 vs 256 px grid" in said["content"] and said["flags"] & EPHEMERAL

    discord_run(scenario)


def _link(message, label):
    return next((c for row in message["components"] for c in row["components"] if c.get("label") == label), None)


def test_vary_region_links_to_the_web_uis_inpaint_tab_when_a_public_url_is_set(discord_run):
    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="a pear", count=2)
        assert _link(grid, "Vary region") is None  # one image's action, as Midjourney
        u2 = await final_of(st, await st.click(grid, "U2"))
        button = _link(u2, "Vary region")
        assert button["style"] == 5 and "custom_id" not in button  # a link button: Discord opens it
        assert button["url"] == f"https://pictures.example.org/statuary/?inpaint={ids_in(grid)[1]}"

    discord_run(scenario, public_url="https://pictures.example.org/statuary/")


def test_vary_region_is_hidden_without_a_public_url(discord_run):
    async def scenario(d):
        _, single = await imagine(d.standin, prompt="a pear")
        assert _link(single, "Vary region") is None and "Upscale 2x" in button_labels(single)

    discord_run(scenario)


def test_imagine_takes_a_hires_scale_and_says_when_it_is_too_much(discord_run):
    async def scenario(d):
        st = d.standin
        _, final = await imagine(st, prompt="a moon", hires=1.5, seed=6)
        rec = d.store.get(ids_in(final)[0])
        assert (rec.width, rec.height) == (96, 96) and rec.image_request["hires"]["scale"] == 1.5
        assert "hires fix 1.5x (lanczos)" in final["content"]
        before = d.store.history().total
        await st.slash("imagine", prompt="a moon", aspect="16:9", hires=2.0)
        refused = await st.wait_message(lambda m: "hires_scale: 2.0 is not allowed" in m["content"])
        assert "beyond this model's largest side 128" in refused["content"] and refused["flags"] & EPHEMERAL
        assert d.store.history().total == before

    discord_run(scenario)
