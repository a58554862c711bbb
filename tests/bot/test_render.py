"""bot.render and bot.community alone: sizes, grids, upload limits, rules."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from bot.community import GuildRules
from bot.render import (ASPECTS, aspect_size, board, display_scale, encode_within, enlarge, grid, recipe_line,
                        stored_files, stored_png)
from core.request import ModelLimits

SD = ModelLimits(native_size=512, max_side=1024, multiple=8)


@pytest.mark.parametrize("label,a,b", ASPECTS)
def test_aspects_keep_the_area_near_native_on_the_model_grid(label, a, b):
    w, h = aspect_size(label, SD)
    assert w % 8 == 0 and h % 8 == 0 and max(w, h) <= 1024
    assert abs(w * h / 512**2 - 1) < 0.08
    assert abs((w / h) / (a / b) - 1) < 0.06


def test_aspect_sizes_respect_small_models_and_caps():
    tiny = ModelLimits(native_size=64, max_side=128, multiple=8)
    assert aspect_size("1:1", tiny) == (64, 64)
    w, h = aspect_size("16:9", tiny)
    assert min(w, h) >= 64 and max(w, h) <= 128 and w > h
    assert aspect_size("1:1", SD, side=768) == (768, 768)
    assert max(aspect_size("21:9", SD, side=1024)) == 1024


def test_grid_layouts():
    ims = [Image.new("RGB", (64, 48), c) for c in ("red", "green", "blue", "white")]
    assert grid(ims[:1]).size == (64, 48)
    assert grid(ims[:2]).size == (128, 48)
    g = grid(ims)
    assert g.size == (128, 96) and g.getpixel((70, 50)) == (255, 255, 255)


def test_encode_within_falls_back_to_smaller_files():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8))
    data, name = encode_within(noise, 10**7, "x")
    assert name == "x.png"
    data, name = encode_within(noise, 40_000, "x")
    assert len(data) <= 40_000 and not name.endswith(".png")
    Image.open(io.BytesIO(data)).load()


def test_small_pictures_are_enlarged_crisply_for_discord():
    # The smallest whole factor that makes the longer side >= 256; big pictures stay as they are.
    assert [display_scale(s) for s in ((64, 64), (96, 64), (128, 128), (64, 256), (512, 512))] == [4, 3, 2, 1, 1]
    sprite = Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    big = enlarge(sprite)
    assert big.size == (256, 256)
    assert np.array_equal(np.asarray(big)[::4, ::4], np.asarray(sprite))  # nearest neighbour: no blur
    assert np.array_equal(np.asarray(big)[3::4, 3::4], np.asarray(sprite))
    photo = Image.new("RGB", (512, 384), "blue")
    assert enlarge(photo) is photo
    assert board([sprite] * 4).size == (256, 256)  # a 2x2 of 64 px sprites is 128 px, shown 2x


def test_a_stored_png_keeps_its_recipe_when_enlarged(tmp_path):
    from storage.pngmeta import encode_png

    sprite = Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    small = tmp_path / "small.png"
    small.write_bytes(encode_png(sprite, {"prompt": "chat noir, été"}, "chat noir, été\nSteps: 20"))
    data, name = stored_png(small, 10**7, "abc")
    posted = Image.open(io.BytesIO(data))
    assert name == "abc.png" and posted.size == (256, 256)
    assert posted.text == Image.open(small).text  # both chunks, the non-Latin-1 one too
    assert np.array_equal(np.asarray(posted.convert("RGB"))[::4, ::4], np.asarray(sprite))
    # a picture big enough to see is posted byte for byte
    large = tmp_path / "large.png"
    large.write_bytes(encode_png(sprite.resize((256, 256)), {"prompt": "x"}, None))
    assert stored_png(large, 10**7, "l") == (large.read_bytes(), "l.png")
    # the file fits the limit but its enlargement does not: a smaller encoding (no recipe)
    limit = small.stat().st_size
    data, name = stored_png(small, limit, "abc")
    assert len(data) <= limit and not name.endswith(".png")


def test_stored_files_post_one_picture_with_its_recipe_and_several_as_a_board(tmp_path):
    from storage.pngmeta import encode_png

    rng = np.random.default_rng(3)
    sprites = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(3)]
    paths = []
    for k, s in enumerate(sprites):
        paths.append(tmp_path / f"{k}.png")
        paths[-1].write_bytes(encode_png(s, {"prompt": f"p{k}"}, None))
    assert stored_files(paths[:1], 10**7, "a") == stored_png(paths[0], 10**7, "a")   # its recipe kept
    data, name = stored_files(paths, 10**7, "a-b-c")
    posted = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert name == "a-b-c.png" and posted.shape == (256, 256, 3)   # a 2x2 of 64 px, shown 2x
    assert np.array_equal(posted[:128:2, 128::2], np.asarray(sprites[1]))   # nearest neighbour, in place


def test_recipe_line_stays_within_discord_limits():
    text = recipe_line({"prompt": "p" * 1000, "negative_prompt": "n" * 1000, "seed": 1, "steps": 2, "guidance": 7.0,
                        "sampler": "euler", "width": 64, "height": 64}, ["abcd2345"])
    assert len(text) <= 2000 and "`abcd2345`" in text


def test_blocked_words_match_whole_words_ignoring_case():
    rules = GuildRules(blocked_words=("cat", "giant snake"))
    assert rules.blocked_word_in("A CAT sits") == "cat"
    assert rules.blocked_word_in("a concatenation") is None
    assert rules.blocked_word_in("the Giant  snake") == "giant snake"  # words, not spacing, are compared
    assert rules.blocked_word_in("giant snake!") == "giant snake" and rules.blocked_word_in("giant, snakey") is None
    assert GuildRules(allowed_channels=("1",)).channel_allowed(1) and not GuildRules(allowed_channels=("1",)).channel_allowed(2)
