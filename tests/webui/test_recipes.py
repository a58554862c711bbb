"""The web UI's plain functions (webui/recipes.py, webui/shared.py), without a browser."""

from __future__ import annotations

from core.request import ModelLimits
from webui.recipes import ASPECTS, aspect_size, fit_recipe, status_html
from webui.shared import progress_text, queue_text


def test_the_shapes_are_the_bots():
    from bot.render import ASPECTS as BOT_ASPECTS

    assert ASPECTS == BOT_ASPECTS


def test_aspect_sizes_stay_on_the_grid_and_in_range():
    for lim in (ModelLimits(512, 1024, 8), ModelLimits(64, 128, 8), ModelLimits(32, 64, 8)):
        for _label, a, b in ASPECTS:
            w, h = aspect_size(a, b, lim)
            assert lim.allows(w) and lim.allows(h), (lim, a, b, w, h)
            assert (w >= h) == (a >= b)
    assert aspect_size(1, 1, ModelLimits(512, 1024, 8)) == (512, 512)
    assert aspect_size(16, 9, ModelLimits(512, 1024, 8)) == (680, 384)


def test_fit_recipe_moves_numbers_into_range_and_says_so():
    fields, notes = fit_recipe({"prompt": "x", "width": 512, "height": 64, "steps": 200, "guidance": 6.5},
                               ModelLimits(64, 128, 8))
    assert (fields["width"], fields["height"], fields["steps"], fields["guidance"]) == (128, 64, 150, 6.5)
    assert notes == ["Width: 512 is not allowed; use a multiple of 8 from 64 to 128. It is set to 128.",
                     "Steps: 200 is not allowed; use a whole number from 1 to 150. It is set to 150."]


def test_status_words():
    assert progress_text(1, 2, 1, 16) == "Image 2 of 2, step 1 of 8"
    assert progress_text(0, 1, 3, 8) == "Step 3 of 8"
    assert queue_text(2, None) == "Waiting in the queue: position 2"
    assert queue_text(3, 12.4) == "Waiting in the queue: position 3, about 12 s"
    assert queue_text(3, 150) == "Waiting in the queue: position 3, about 2 min"
    assert status_html("") == ""  # no empty bordered box
