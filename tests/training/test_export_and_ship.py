"""From a run to a model folder: the export as diffusers loads it, an export evaluated, and the
evaluation gate that alone lets weights into models/default."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from training import data as D
from training import model as M
from training import train as T
from training.export import SHIPPED


def test_smoke_training_has_finite_falling_loss_and_exports_a_pipeline(smoke_run):
    from diffusers import StableDiffusionPipeline

    info = json.loads((smoke_run / "run" / "unet.json").read_text())
    assert info["step"] == T.Config.smoke().unet_steps and np.isfinite(info["loss"])
    model = smoke_run / "model"
    index = json.loads((model / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    assert not list(model.rglob("*.bin")) and list((model / "unet").glob("*.safetensors.index.json"))  # sharded
    trained = json.loads((model / "training.json").read_text())
    assert trained["unet_step"] == info["step"] and trained["unet_seconds"] == info["seconds"] > 0
    assert trained["unet_started_from"] == [] and trained["decoder_step"] is None
    assert trained["vae_step"] == json.loads((smoke_run / "run" / "vae.json").read_text())["step"] > 0
    pipe = StableDiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a cat, flat style, on a blue background", num_inference_steps=2, guidance_scale=3.0,
               height=32, width=32, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()


def test_export_refuses_to_write_into_the_shipped_folder(smoke_run, pack_dir):
    run = T.Run(T.Config.smoke(), pack_dir, smoke_run / "run", "cpu")
    with pytest.raises(SystemExit, match="unevaluated weights never ship.*training.ship"):
        run.export(SHIPPED)
    assert not list(SHIPPED.rglob("*.safetensors"))


# training.evaluate as small as it goes: a judge of 20 steps, 16 prompts, 2 denoising steps.
EVAL_FAST = ["--judge-steps", "20", "--judge-batch", "16", "--judge-width", "8", "--batch", "8", "--n-single", "8",
             "--n-combo", "4", "--n-pairs", "4", "--n-diversity", "2", "--steps", "2", "--device", "cpu"]


def test_weights_reach_the_shipped_folder_only_through_an_evaluation_that_passes(smoke_run, pack_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    import shutil

    from training import ship as S

    shipped = tmp_path / "default"
    shipped.mkdir()
    (shipped / "MODEL_CARD.md").write_text("the card")
    eval_dir = tmp_path / "eval"

    def ship(model):
        return S.main(["--model", str(model), "--data", str(pack_dir), "--eval-dir", str(eval_dir), "--to", str(shipped),
                       "--grid", str(tmp_path / "grid.png"), *EVAL_FAST])

    assert ship(smoke_run / "model") == 1          # the smoke architecture: refused before evaluating
    assert "trained at size 'smoke', which does not ship (the sizes that do: default, f4)" in capsys.readouterr().out
    assert not eval_dir.exists()
    # The same weights as if trained at the size the CPU and GPU recipes train (64 px through the 4x VAE)
    # past min_ship_steps. (Until 2026-12-02 ship refused every size but the 128 px "default", so no model
    # of the recipe chosen in the sixteenth session could have shipped.)
    candidate = tmp_path / "candidate"
    shutil.copytree(smoke_run / "model", candidate)
    trained = json.loads((candidate / "training.json").read_text())
    assert T.Config.cpu().size == T.Config.gpu().size == "f4"
    trained["config"].update(size="f4", min_ship_steps=T.Config.smoke().unet_steps)
    (candidate / "training.json").write_text(json.dumps(trained))

    # 1. The first-ship bar: an 8-step model is far below it. Nothing is written.
    assert ship(candidate) == 1
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["generated"]["all"]["top5"] < S.FIRST_SHIP["top5"] and metrics["prompts"] == 16
    assert metrics["weights_sha256"] == S.weights_sha256(candidate) and metrics["judge"].startswith("judge2-")
    assert metrics["unet_step"] == T.Config.smoke().unet_steps
    assert [p.name for p in shipped.iterdir()] == ["MODEL_CARD.md"]

    # 2. A bar it meets: the export's files are copied, the card stays, the metrics go beside, the grid is drawn.
    monkeypatch.setattr(S, "FIRST_SHIP", {k: 0.0 for k in S.FIRST_SHIP})
    assert ship(candidate) == 0
    assert torch.get_num_threads() == 1            # the in-process grid kept the caller's threads
    assert (shipped / "MODEL_CARD.md").read_text() == "the card"
    assert S.weights_sha256(shipped) == S.weights_sha256(candidate)
    assert json.loads((shipped / "metrics.json").read_text())["weights_sha256"] == S.weights_sha256(candidate)
    assert Image.open(tmp_path / "grid.png").size[1] > 20 * 32

    # 3. With a model shipped, the same model again does not beat it.
    assert ship(candidate) == 1
    assert json.loads((shipped / "metrics.json").read_text())["weights_sha256"] == S.weights_sha256(candidate)


def test_a_model_can_be_judged_by_the_judge_trained_at_another_size(smoke_run, pack_dir, tmp_path):
    # --judge-px: a 64 px model scored by the 128 px judge (every judge reads at 64x64), so models
    # of both sizes are compared by one judge; the metrics name the judge that scored them
    from training import evaluate as E

    out = tmp_path / "eval"
    assert E.main(["--model", str(smoke_run / "model"), "--data", str(pack_dir), "--out", str(out), "--judge-px", "48",
                   *EVAL_FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "-48px-" in metrics["judge"] and (out / metrics["judge"]).exists()
    assert [p.name for p in out.glob("judge2-*")] == [metrics["judge"]]   # no judge at the model's own 32 px
    assert metrics["real"]["all"]["n"] == 16
    for who in ("generated", "real"):   # asked -> judged style: every prompt once, its diagonal the style score
        table = metrics["style_confusion"][who]
        assert list(table) == list(D.STYLES) and sum(sum(r.values()) for r in table.values()) == 16
        assert sum(table[s][s] for s in D.STYLES) / 16 == pytest.approx(metrics[who]["all"]["style"], abs=1e-4)
        split = metrics["style_by_subject"][who]   # the pictures whose subject was read, and those it missed
        assert split["subject_read"]["n"] == round(metrics[who]["all"]["top1"] * 16)
        assert split["subject_missed"]["n"] == 16 - round(metrics[who]["all"]["top5"] * 16)
    # a model trained with judge_px set is judged by that judge without being told
    model = tmp_path / "model"
    shutil.copytree(smoke_run / "model", model)
    trained = json.loads((model / "training.json").read_text())
    trained["config"]["judge_px"] = 48
    (model / "training.json").write_text(json.dumps(trained))
    assert E.main(["--model", str(model), "--data", str(pack_dir), "--out", str(out), *EVAL_FAST]) == 0
    assert json.loads((out / "metrics.json").read_text())["judge"] == metrics["judge"]
    assert len(list(out.glob("judge2-*"))) == 1


def test_the_ship_verdict_wants_the_bar_first_then_a_better_model_on_the_same_evaluation():
    from training.ship import verdict

    def metrics(top5, style, colour, prompts=850, judge="judge2-a"):
        return {"prompts": prompts, "steps": 20, "guidance": 7.0, "judge": judge,
                "generated": {"all": {"top5": top5, "style": style, "colour": colour}}}

    assert verdict(metrics(0.61, 0.86, 0.85), None) == []
    assert verdict(metrics(0.59, 0.90, 0.84), None) == ["top5 0.590 is below the first-ship bar 0.60",
                                                        "colour 0.840 is below the first-ship bar 0.85"]
    shipped = metrics(0.65, 0.88, 0.90)
    assert verdict(metrics(0.70, 0.88, 0.90), shipped) == []
    assert verdict(metrics(0.70, 0.87, 0.95), shipped) == ["style 0.870 is below the shipped model's 0.880"]
    assert verdict(metrics(0.65, 0.88, 0.90), shipped) == ["no better than the shipped model on any of top5, style, colour"]
    assert "judge: 'judge2-b' here, 'judge2-a' shipped" in verdict(metrics(0.9, 0.9, 0.9, judge="judge2-b"), shipped)[0]


def test_the_f4_size_draws_64_px_through_the_default_models_latent_grid():
    # size "f4": 64 px pictures, a VAE that downsamples 4x, so the UNet (and its cost a step) is
    # the default's exactly: 16x16x4 latents
    f4, default = M.SIZES["f4"], M.SIZES["default"]
    assert M.unet_config(f4) == M.unet_config(default)
    with torch.no_grad():
        z = M.build_vae(f4).encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 16, 16)


def test_fine_text_adds_cross_attention_to_the_finest_up_block_only():
    # the candidate measured by bench/cpu_train_step.py's "fine" variant: the caption heard at 16x16
    # on the way up; every other block, and every parameter name already there, unchanged
    size = M.SIZES["smoke"]
    plain, fine = M.unet_config(size), M.unet_config(size, fine_text=True)
    assert plain["up_block_types"] == ("CrossAttnUpBlock2D", "UpBlock2D")
    assert fine["up_block_types"] == ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    assert fine["down_block_types"] == plain["down_block_types"]
    a, b = M.build_unet(size).state_dict(), M.build_unet(size, fine_text=True).state_dict()
    assert set(a) < set(b) and all(k.startswith("up_blocks.1.attentions.") for k in set(b) - set(a))


def test_the_export_loads_with_the_scheduler_it_ships(smoke_run):
    """from_pretrained builds the scheduler class model_index.json names, whatever scheduler/ holds:
    the export named DDPMScheduler over a DDIM config, so diffusers users, training.evaluate and
    Statuary (whose default sampler follows the folder's scheduler) all drew with ancestral DDPM
    or DPM++ 2M instead of the DDIM the card promises."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from core.loader import load_model

    folder = smoke_run / "model"
    index = json.loads((folder / "model_index.json").read_text())
    saved = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert index["scheduler"] == ["diffusers", saved["_class_name"]] == ["diffusers", "DDIMScheduler"]
    assert type(StableDiffusionPipeline.from_pretrained(str(folder)).scheduler) is DDIMScheduler
    limits = load_model(str(folder), device="cpu").limits
    assert limits.default_sampler == "ddim" and not any("karras" in s for s in limits.samplers)


def test_img2img_and_inpainting_run_through_ordinary_sd_modes(smoke_run):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(str(smoke_run / "model"))
    init = Image.new("RGB", (32, 32), (40, 90, 220))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    kw = dict(prompt="a cat", num_inference_steps=2, guidance_scale=3.0, output_type="np",
              generator=torch.Generator().manual_seed(0))
    i2i = StableDiffusionImg2ImgPipeline.from_pipe(base)(image=init, strength=0.6, **kw).images
    inp = StableDiffusionInpaintPipeline.from_pipe(base)(image=init, mask_image=mask, height=32, width=32, **kw).images
    assert i2i.shape == inp.shape == (1, 32, 32, 3) and np.isfinite(i2i).all() and np.isfinite(inp).all()


def test_the_evaluation_can_guide_away_from_the_styles_not_asked(smoke_run, pack_dir, tmp_path):
    # --negative-other-styles (an experiment, 36th session): each prompt's negative prompt names the
    # two styles it does not ask for. An empty negative prompt is what guidance has without one.
    from diffusers import StableDiffusionPipeline

    from training import evaluate as E

    pipe = StableDiffusionPipeline.from_pretrained(str(smoke_run / "model"), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    prompts, seeds = ["cat, flat style", "pizza, 3d style"], [1, 2]
    plain = E.generate(pipe, prompts, seeds, 2, 4.0, 32, 2)
    assert torch.equal(E.generate(pipe, prompts, seeds, 2, 4.0, 32, 2, ["", ""]), plain)
    away = E.generate(pipe, prompts, seeds, 2, 4.0, 32, 2, ["3d style, cartoon style", "flat style, cartoon style"])
    assert away.shape == plain.shape and not torch.allclose(away, plain)

    out = tmp_path / "eval"
    assert E.main(["--model", str(smoke_run / "model"), "--data", str(pack_dir), "--out", str(out), *EVAL_FAST]) == 0
    before = json.loads((out / "metrics.json").read_text())
    assert "negative" not in before
    assert E.main(["--model", str(smoke_run / "model"), "--data", str(pack_dir), "--out", str(out), *EVAL_FAST,
                   "--negative-other-styles"]) == 0
    after = json.loads((out / "metrics.json").read_text())
    assert after["negative"] == "the other styles" and after["real"] == before["real"]   # same prompts, same judge
