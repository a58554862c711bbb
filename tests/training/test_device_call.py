"""The GPU machine's one call: its recipe, the command, and what runs there on another device."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from training import data as D
from training import train as T
from training.batches import _encoder


def test_the_gpu_recipe_is_the_cpu_model_with_a_gpus_batches():
    cpu, gpu = T.Config.cpu(), T.Config.gpu()
    same = [k for k in T.Config.IDENTITY + ("unet_px", "judge_px", "pool", "t_exponent", "t_uniform_from", "unet_steps",
                                            "text_aux", "text_aux_colour", "joined_colour", "canonical")]
    assert {k: getattr(gpu, k) for k in same} == {k: getattr(cpu, k) for k in same}
    assert gpu.batch == 4 * cpu.batch and gpu.vae_batch == 4 * cpu.vae_batch and gpu.decoder_steps == 0


def test_the_device_call_trains_exports_and_sends_back_what_the_device_tool_returns(pack_dir, tmp_path):
    """`training/device.sh train`, the GPU machine's one call, dry-run on this CPU with the toy model:
    it trains (the VAE's schedule fitted from its first steps), exports the checkpoint as it stands,
    leaves in $OUT only what the device tool sends back (at most 8 files of at most 16 MiB, plain
    names), and `unpack` here rebuilds a model folder that loads."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[2]
    out, run, model = tmp_path / "out", tmp_path / "run", tmp_path / "model"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "RUN": str(run), "DATA": str(pack_dir), "PYTHON": sys.executable,
           "DEVICE_ARGS": "--device cpu --smoke", "TRAIN_ARGS": "--set vae_steps=400 --set unet_steps=12"}
    done = subprocess.run(["bash", "training/device.sh", "train", "2", "0.001"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    back = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(back) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in back)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in back)
    assert {"train.log", "run-notes.tar", "model.tar.part00"} <= {p.name for p in back}
    log = (out / "train.log").read_text()
    assert "vae: schedule fitted to 0.0 minutes" in log and "51 steps instead of 400" in log
    assert "exported step 12" in log
    done = subprocess.run(["bash", "training/device.sh", "unpack", str(out), str(model)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    trained = json.loads((model / "training.json").read_text())
    assert trained["vae_step"] == 51 and trained["unet_step"] == 12
    assert json.loads((model.with_name("model.run") / "config.json").read_text())["vae_steps"] == 51
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.from_pretrained(str(model))
    # nothing sent back, nothing to unpack: one sentence, not a tar error
    done = subprocess.run(["bash", "training/device.sh", "unpack", str(tmp_path), str(tmp_path / "m2")], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no model.tar.part*" in done.stderr


# ---- what runs on the GPU machine's one call runs there as on this CPU --------------------------
# No GPU here, and CI has none: the `meta` device stands in for "another device than the CPU's".
# A tensor built on the CPU and handed to a model there fails as it would on a GPU.


def test_the_renderer_composes_in_float32_inside_a_callers_autocast(pack_dir):
    """The pool is rendered and encoded under the trainer's bf16 autocast on a GPU; the sprites'
    sampling grid (affine_grid, a batched matmul) came out in bf16 there and put sprites up to half a
    pixel off the pictures the VAE trained on. The renderer now composes in float32 regardless."""
    pack = D.Pack.load(pack_dir)
    b = D.Sampler(pack, D.Split.make(pack, 0), 0).train_batch(3, 16)
    renderer = D.Renderer(pack.sprites(32), 32)
    plain = renderer(b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = renderer(b)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


def test_corner_error_hands_its_plain_pictures_to_the_vae_on_the_vaes_device():
    """It built them on the CPU and gave them to a VAE on the GPU: the end of the VAE phase failed there."""
    from types import SimpleNamespace

    from training.monitor import corner_error

    seen = []

    class OnMeta(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.empty(1, device="meta"))

        def encode(self, x):
            seen.append(x.device.type)
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=torch.zeros(x.shape)))

        def decode(self, z):
            return SimpleNamespace(sample=z)

    err = corner_error(OnMeta(), 16, [(255, 255, 255)])
    assert seen == ["meta"] and err["centre"] == pytest.approx(1.0)


def test_finish_from_noise_draws_on_the_models_device(smoke_run, pack_dir):
    """finish.png's pictures: the pool's latents and captions, the empty caption, the noise and the
    timesteps went to the models as CPU tensors, which a GPU's models refuse (the first subject grid of
    a GPU run would have stopped it)."""
    from training.monitor import finished_pictures

    run = T.Run(T.Config.smoke(), pack_dir, smoke_run / "run", "cpu", write_config=False)
    tok = run.tokenizer()
    text, unet = run.build_denoiser(tok)
    vae = run.frozen_vae()
    n, latent_px = 3, run.size.image_size // run.vae_factor()
    ids = _encoder(tok)(["cat, flat style"] * n)
    pool = {"emoji": torch.tensor([[0, -1]] * n, dtype=torch.int16),
            "latents": torch.zeros((n, 4, latent_px, latent_px), dtype=torch.float16),
            "ids": ids.to(torch.int16)}
    on_cpu = finished_pictures(text, unet, vae, tok, pool, 1.0, starts=(300,), n=n)
    assert on_cpu.shape == (3, 2 * run.size.image_size, n * run.size.image_size)
    for m in (text, unet, vae):
        m.to("meta")
    on_meta = finished_pictures(text, unet, vae, tok, pool, 1.0, starts=(300,), n=n)
    assert on_meta.device.type == "meta" and on_meta.shape == on_cpu.shape
