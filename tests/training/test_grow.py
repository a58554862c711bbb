"""training.grow: a trained run's UNet given the caption in its timestep embedding (`pooled_text`)
keeps drawing what it drew, keeps its EMA and optimizer moments, and trains on with the new path."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from training import grow as G
from training import model as M
from training import train as T
from training.common import checkpoint_info, unprefixed


def _unet(run, pooled):
    cfg = json.loads((run / "config.json").read_text())
    unet = M.build_unet(M.SIZES[cfg["size"]], pooled)
    unet.load_state_dict(unprefixed("unet", load_file(str(run / "unet.safetensors"))))
    return unet.eval()


def test_a_grown_unet_draws_as_before_then_learns_through_the_new_path(smoke_run, pack_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(smoke_run / "run", run)
    before_flat, before = load_file(str(run / "unet.safetensors")), checkpoint_info(run / "unet.safetensors")
    old = _unet(run, False)

    grown = G.grow_pooled_text(run)
    assert grown["added"] == "pooled_text" and grown["parameters"] > 0
    assert json.loads((run / "config.json").read_text())["pooled_text"] == 1
    new = _unet(run, True)
    size = M.SIZES[json.loads((run / "config.json").read_text())["size"]]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, old.config.in_channels, old.config.sample_size, old.config.sample_size, generator=g)
    h = torch.randn(2, size.max_tokens, size.text_width, generator=g)
    with torch.no_grad():     # silent at first: exactly the old UNet's output
        assert torch.equal(new(x, torch.tensor([900, 100]), h).sample, old(x, torch.tensor([900, 100]), h).sample)

    after_flat, after = load_file(str(run / "unet.safetensors")), checkpoint_info(run / "unet.safetensors")
    assert after["step"] == before["step"] and after["grown"][0]["step"] == before["step"]
    # every old parameter's EMA and Adam moments moved with it, by name; the new ones start fresh
    text_n = sum(1 for _ in M.build_text_encoder(size, 10, 0, 1, 2).parameters())   # the count only
    old_names = [f"unet.{n}" for n, _ in old.named_parameters()]
    new_names = [f"unet.{n}" for n, _ in new.named_parameters()]
    moved = 0
    for i, name in enumerate(old_names):
        j = new_names.index(name)
        assert torch.equal(after_flat[f"ema.{text_n + j}"], before_flat[f"ema.{text_n + i}"])
        if f"optim.{text_n + i}.exp_avg" in before_flat:
            assert torch.equal(after_flat[f"optim.{text_n + j}.exp_avg"], before_flat[f"optim.{text_n + i}.exp_avg"])
            moved += 1
    assert moved == len(old_names)
    assert not any(k.startswith(f"optim.{text_n + new_names.index(n)}.") for n in new_names if n not in old_names
                   for k in after_flat)
    with pytest.raises(SystemExit, match="already has pooled_text"):
        G.grow_pooled_text(run)

    # training resumes on the grown checkpoint (pooled_text now part of the run's identity) and the path opens
    steps = before["step"] + 3
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(run), "--phase", "unet", "--set", f"unet_steps={steps}"]) == 0
    trained = _unet(run, True)
    assert checkpoint_info(run / "unet.safetensors")["step"] == steps
    assert trained.add_embedding.norm2.weight.abs().sum() > 0
    with pytest.raises(SystemExit, match="different configuration"):
        T.main(["--smoke", "--data", str(pack_dir), "--run", str(run), "--phase", "unet", "--set", "pooled_text=0"])


def test_a_grown_path_may_start_audible(smoke_run, tmp_path):
    # --scale: the path's size is its last LayerNorm's weight alone, which AdamW moves at most a
    # learning rate a step; a run at its schedule's tail may start it at a small size instead of 0
    run = tmp_path / "run"
    shutil.copytree(smoke_run / "run", run)
    old = _unet(run, False)
    assert G.grow_pooled_text(run, scale=0.05)["scale"] == 0.05
    new = _unet(run, True)
    assert torch.all(new.add_embedding.norm2.weight == 0.05) and torch.all(new.add_embedding.norm2.bias == 0)
    size = M.SIZES[json.loads((run / "config.json").read_text())["size"]]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, old.config.in_channels, old.config.sample_size, old.config.sample_size, generator=g)
    h = torch.randn(2, size.max_tokens, size.text_width, generator=g)
    with torch.no_grad():
        a, b = new(x, torch.tensor([900, 100]), h).sample, old(x, torch.tensor([900, 100]), h).sample
    assert not torch.equal(a, b) and (a - b).abs().mean() < 0.5 * b.abs().mean()
