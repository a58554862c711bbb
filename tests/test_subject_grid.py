"""training.subject_grid: the 40-subject grid made through Statuary's own job service."""

from __future__ import annotations

import numpy as np
from PIL import Image

from training import subject_grid as G
from training.monitor import SAMPLE_SUBJECTS


def test_the_grid_asks_for_every_word_in_every_style_as_typed():
    prompts = G.prompts_for(list(SAMPLE_SUBJECTS))
    assert len(prompts) == 120 and prompts[:3] == ["cat, 3d style", "cat, flat style", "cat, cartoon style"]
    assert "birthday cake, cartoon style" in prompts and "mushroom, 3d style" in prompts


def test_the_grid_is_made_by_the_job_service_and_is_the_same_when_made_again(tiny_model_dir, tmp_path):
    words = ["cat", "birthday cake", "pizza"]
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for out in (a, b):
        assert G.main(["--model", str(tiny_model_dir), "--words", *words, "--columns", "2", "--zoom", "2",
                       "--out", str(out)]) == 0
    grid = np.asarray(Image.open(a).convert("RGB"))
    assert np.array_equal(grid, np.asarray(Image.open(b).convert("RGB")))   # one seed: the same grid again
    side = 64 * 2                                                          # the tiny model's native size, zoomed
    assert grid.shape[0] > 2 * side and grid.shape[1] > 2 * 3 * side        # 2 rows a block, 2 blocks of 3 styles
    # every picture cell holds a generated picture (not the white page), the label column does not
    right = grid[:, -side - 12:-12]
    assert (right < 250).any(axis=2).mean() > 0.3
    assert (grid[:, :20] > 250).all(axis=2).mean() > 0.9
