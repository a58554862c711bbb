"""The shipped default model (models/default): within the issue's size budget, safetensors only,
loaded with no options, a request with no guidance gets its folder's, and it draws the
background a prompt asks for (the evaluation measured 100% on held-out prompts at step 12,000).

Skipped while no weights are shipped (issue 14). STATUARY_TEST_MODEL points it at another export,
so it runs before shipping too: `STATUARY_TEST_MODEL=/tmp/m pytest tests/test_default_model.py`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FOLDER = Path(os.environ.get("STATUARY_TEST_MODEL") or ROOT / "models" / "default")
MIB = 1024 * 1024

pytestmark = pytest.mark.skipif(not (FOLDER / "model_index.json").exists(),
                                reason=f"no model at {FOLDER}: the default model is not shipped yet (issue 14)")


def test_weights_within_the_budget_and_safetensors_only():
    weights = sorted(FOLDER.rglob("*.safetensors"))
    assert weights, "no .safetensors weights"
    assert sum(p.stat().st_size for p in weights) <= 48 * MIB
    assert max(p.stat().st_size for p in weights) <= 16 * MIB, "a file over 16 MiB"
    pickled = [p for ext in ("*.bin", "*.ckpt", "*.pt", "*.pth") for p in FOLDER.rglob(ext)]
    assert not pickled, f"pickled weights: {pickled}"
    assert json.loads((FOLDER / "vocabulary.json").read_text())["subjects"], "no word list"


@pytest.fixture(scope="module")
def generator():
    from core.generator import Generator
    from core.loader import load_model

    return Generator(load_model(str(FOLDER), device="cpu"))


def test_it_draws_the_background_a_prompt_asks_for(generator):
    from core.model_defaults import ModelDefaults
    from core.request import GenerationRequest
    from training import data as D
    from training.evaluate import border_colour

    folder_guidance = ModelDefaults.load(FOLDER).guidance   # its defaults.json, 7 without one
    colours = ("blue", "red", "yellow", "green")
    pictures = []
    for k, colour in enumerate(colours):
        request = GenerationRequest(prompt=f"cat on a {colour} background, 3d style", seed=k).resolve(generator.model.limits)
        assert request.guidance == folder_guidance and request.steps == 20
        (_, image), = list(generator.generate(request))
        assert image.size == (generator.model.limits.native_size, generator.model.limits.native_size)
        pictures.append(torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 127.5 - 1)
    got = [D.COLOUR_NAMES[i] for i in border_colour(torch.stack(pictures))]
    assert got == list(colours)
