"""Style guidance (training.style_guidance): an inference experiment on the style the CPU runs miss.
Its loop must be the pipeline's own when the style term is off, so an A/B measures the term alone."""

from __future__ import annotations

import json

import pytest
import torch

from training import style_guidance as G

from .test_export_and_ship import EVAL_FAST


def test_the_style_words_come_out_of_a_caption_and_nothing_else():
    assert G.without_style("cat, flat style, on a red background", "flat") == "cat, on a red background"
    assert G.without_style("a small rocket in the top left, cartoon style", "cartoon") == "a small rocket in the top left"
    assert G.without_style("an apple and a pear, on a blue background, 3d style", "3d") == \
        "an apple and a pear, on a blue background"
    with pytest.raises(ValueError, match="does not name the style 'flat' as 'flat style' once"):
        G.without_style("cat, cartoon style", "flat")


@pytest.fixture(scope="module")
def pipe(smoke_run):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(str(smoke_run / "model"), dtype=torch.float32)
    p.set_progress_bar_config(disable=True)
    return p


def test_without_the_style_term_the_loop_draws_what_the_pipeline_draws(pipe):
    from training import evaluate as E

    prompts, styleless, seeds = ["cat, flat style", "pizza, 3d style"], ["cat", "pizza"], [1, 2]
    plain = E.generate(pipe, prompts, seeds, 3, 4.0, 32, 2)
    off = E.generate(pipe, prompts, seeds, 3, 4.0, 32, 2, styleless=styleless, style_guidance=0.0)
    assert torch.allclose(off, plain, atol=1e-5)
    # a prompt that is its own style-less form has no style direction: any scale draws the same
    same = E.generate(pipe, prompts, seeds, 3, 4.0, 32, 2, styleless=prompts, style_guidance=3.0)
    assert torch.allclose(same, plain, atol=1e-5)
    on = E.generate(pipe, prompts, seeds, 3, 4.0, 32, 2, styleless=styleless, style_guidance=3.0)
    assert on.shape == plain.shape and (on - plain).abs().max() > 1e-3


def test_the_style_term_held_to_low_noise_applies_at_those_steps_only(pipe):
    from training import evaluate as E

    prompts, styleless, seeds = ["cat, flat style", "pizza, 3d style"], ["cat", "pizza"], [1, 2]
    args = (pipe, prompts, seeds, 3, 4.0, 32, 2)
    plain = E.generate(*args)
    every = E.generate(*args, styleless=styleless, style_guidance=3.0)
    assert torch.allclose(E.generate(*args, styleless=styleless, style_guidance=3.0, style_below=1000), every)
    assert torch.allclose(E.generate(*args, styleless=styleless, style_guidance=3.0, style_below=0), plain, atol=1e-5)
    pipe.scheduler.set_timesteps(3)
    first, *rest = [int(t) for t in pipe.scheduler.timesteps]
    late = E.generate(*args, styleless=styleless, style_guidance=3.0, style_below=first)   # all but the first step
    assert rest and all(t < first for t in rest)
    assert (late - plain).abs().max() > 1e-3 and (late - every).abs().max() > 1e-4


def test_the_evaluation_scores_style_guidance_on_the_same_prompts_and_says_so(smoke_run, pack_dir, tmp_path):
    from training import evaluate as E

    out = tmp_path / "eval"
    args = ["--model", str(smoke_run / "model"), "--data", str(pack_dir), "--out", str(out), *EVAL_FAST]
    assert E.main(args) == 0
    before = json.loads((out / "metrics.json").read_text())
    assert "style_guidance" not in before
    assert E.main(args + ["--style-guidance", "2"]) == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["style_guidance"] == 2.0 and after["real"] == before["real"]   # same prompts, same judge
    assert after["generated"]["all"]["n"] == before["generated"]["all"]["n"]
    assert after["style_guidance_below"] == 1000
    assert E.main(args + ["--style-guidance", "2", "--style-guidance-below", "500"]) == 0
    assert json.loads((out / "metrics.json").read_text())["style_guidance_below"] == 500


def test_style_guidance_and_the_negative_prompt_experiment_are_not_run_together(capsys):
    # generate() takes one of them: together, the negative prompts would be dropped without a word
    from training import evaluate as E

    with pytest.raises(SystemExit):
        E.main(["--out", "unused", "--negative-other-styles", "--style-guidance", "2"])
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize("argv, said", [
    (["--style-guidance-below", "500"], "--style-guidance-below only applies with --style-guidance"),
    # the default's own value typed out is still a window without the guidance it belongs to
    (["--style-guidance-below", "1000"], "--style-guidance-below only applies with --style-guidance"),
    (["--style-guidance", "2", "--style-guidance-below", "1200"], "a timestep from 0 to 1000, not 1200"),
])
def test_a_style_window_without_style_guidance_or_out_of_range_is_refused_in_a_sentence(argv, said, capsys):
    from training import evaluate as E

    with pytest.raises(SystemExit):
        E.main(["--out", "unused", *argv])
    assert said in capsys.readouterr().err
