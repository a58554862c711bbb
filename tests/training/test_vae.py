"""The VAE phase and the decoder phases after it (fine-tuning, the discriminator, the corner speck)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from training import train as T


def test_vae_loss_falls(pack_dir, tmp_path):
    cfg = T.Config.smoke()
    run = T.Run(cfg, pack_dir, tmp_path, "cpu")
    vae = run.build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    x = run.renderer(run.sampler.train_batch(0, 8))
    losses = []
    for _ in range(15):
        rec = vae(x).sample
        loss = torch.nn.functional.l1_loss(rec, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]


def test_decoder_fine_tuning_keeps_the_latent_space(smoke_run, pack_dir, tmp_path, capsys):
    """The decoder phase sharpens pictures without moving the latents the pool and UNet use."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run / "run", run_dir)
    before = T.Run(T.Config.smoke(), pack_dir, run_dir, "cpu").frozen_vae()
    args = ["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--set", "decoder_steps=6"]
    assert T.main(args + ["--phase", "decoder", "--stop-at", "3"]) == 0
    assert T.main(args + ["--phase", "decoder"]) == 0                  # resumes at 3
    assert json.loads((run_dir / "decoder.json").read_text())["step"] == 6
    assert "decoder step 6: round trip of plain backgrounds" in capsys.readouterr().err
    after = T.Run(T.Config.smoke(), pack_dir, run_dir, "cpu").frozen_vae()
    b, a = before.state_dict(), after.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in b if not k.startswith(("decoder.", "post_quant_conv.")))
    assert any(not torch.equal(b[k], a[k]) for k in b if k.startswith("decoder."))
    # the VAE phase never trains again once the UNet phase has begun (it would spoil pool and UNet)
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--phase", "vae",
                   "--set", "vae_steps=20"]) == 0
    assert json.loads((run_dir / "vae.json").read_text())["step"] == T.Config.smoke().vae_steps


def test_the_adversarial_decoder_phase_trains_a_discriminator_resumes_it_and_keeps_the_latents(
        smoke_run, pack_dir, tmp_path, capsys, monkeypatch):
    import shutil

    from training import vae_phase

    monkeypatch.setattr(vae_phase, "GAN_WARMUP", 2)
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run / "run", run_dir)
    before = T.Run(T.Config.smoke(), pack_dir, run_dir, "cpu").frozen_vae().state_dict()
    args = ["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--set", "decoder_steps=6", "--set", "decoder_gan=0.5",
            "--set", "ckpt_every=3"]
    assert T.main(args + ["--phase", "decoder", "--stop-at", "3"]) == 0
    assert json.loads((run_dir / "decoder_disc.json").read_text())["step"] == 3
    assert T.main(args + ["--phase", "decoder"]) == 0
    err = capsys.readouterr().err
    assert "discriminator resumed at its step 3" in err
    assert json.loads((run_dir / "decoder_disc.json").read_text())["step"] == 6
    weights = [float(w) for w in re.findall(r"adversarial weight ([0-9.]+)", err)]
    assert weights and weights[-1] > 0        # past its warm-up the discriminator's verdict reaches the decoder
    after = T.Run(T.Config.smoke(), pack_dir, run_dir, "cpu").frozen_vae().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith(("decoder.", "post_quant_conv.")))
    out = tmp_path / "export"
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--phase", "none", "--export", str(out)]) == 0
    shipped = " ".join(p.read_text(errors="ignore")[:4000] for p in out.rglob("*.json"))
    assert "disc" not in shipped and not list(out.rglob("*disc*"))     # the discriminator never ships


def test_the_discriminator_learns_to_tell_sharp_from_smudged_and_its_weight_balances_the_gradients():
    from training.discriminator import PatchDiscriminator, adaptive_weight, discriminator_loss, generator_loss

    torch.manual_seed(0)
    d = PatchDiscriminator(8)
    opt = torch.optim.AdamW(d.parameters(), 2e-3, betas=(0.5, 0.9))
    sharp = (torch.rand(16, 3, 32, 32) > 0.5).float() * 2 - 1
    smudged = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2)
    losses = []
    for _ in range(60):
        loss = discriminator_loss(d(sharp), d(smudged))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and (d(sharp).mean() > d(smudged).mean())
    # the weight makes the adversarial gradient at the last layer as large as the reconstruction's, x scale
    last = torch.nn.Parameter(torch.randn(3, 3, 3, 3))
    x = torch.randn(4, 3, 32, 32)
    rec = torch.nn.functional.conv2d(x, last, padding=1)
    rec_loss, g_loss = (rec - sharp[:4]).abs().mean(), generator_loss(d(rec))
    w = adaptive_weight(rec_loss, g_loss, last, 0.5)
    g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
    g_gan = torch.autograd.grad(w * g_loss, last)[0]
    assert abs(g_gan.norm() / g_rec.norm() - 0.5) < 1e-3


def test_corner_error_finds_a_speck_the_decoder_draws():
    """monitor.corner_error: a decoder that draws a speck in every picture's top right is told
    apart from the other corners and the centre; a faithful one reads 0 everywhere."""
    from types import SimpleNamespace

    from training.monitor import corner_error

    class Decoder:
        def __init__(self, speck):
            self.speck = speck

        def encode(self, x):
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=x))

        def decode(self, z):
            y = z.clone()
            if self.speck:
                y[:, :, 1:3, -3:-1] += 0.8
            return SimpleNamespace(sample=y)

    colours = [(255, 0, 0), (20, 40, 60)]
    assert set(corner_error(Decoder(False), 64, colours).values()) == {0.0}
    err = corner_error(Decoder(True), 64, colours)
    assert err["top right"] == pytest.approx(0.8 * 4 / 16) and err["centre"] == 0.0
    assert err["top left"] == err["bottom left"] == err["bottom right"] == 0.0
