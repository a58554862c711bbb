"""Watching a run while it trains: is the prompt starting to matter, and what does it draw?

- `ConditioningProbe`: two numbers logged every 200 steps, from the first minutes.
- `sample_grid`: the issue's 40 must-draw subjects in all three styles, with the EMA
  weights, written to the run folder at every checkpoint (look at it).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from training import model as M
from training.batches import _encoder

# The must-draw subjects, in the grid written at every checkpoint.
SAMPLE_SUBJECTS = ("cat", "dog", "pizza", "apple", "banana", "rocket", "ghost", "house", "tree", "sun",
                   "snowman", "car", "heart", "star", "birthday cake", "robot", "unicorn", "penguin", "frog",
                   "flower", "rainbow", "cloud", "moon", "fire", "guitar", "ice cream", "hamburger", "taco",
                   "strawberry", "turtle", "fish", "octopus", "butterfly", "owl", "panda", "fox", "lion",
                   "dragon", "crown", "mushroom")


class ConditioningProbe:
    """Does the prompt matter yet? Two numbers, logged while training:
    - text spread: mean distance between the (mean-pooled) text embeddings of different
      captions, relative to their size;
    - UNet change: how much the UNet's output at a high-noise step (t = 900) changes between a
      prompt and the empty prompt, and between two different prompts, on the same noisy latent,
      relative to its size (means over NOISES latents and every pair).
    Both start near 0 for an untrained model; a model that draws what it is asked has both
    well above a few percent."""

    CAPTIONS = ("cat, 3d style", "pizza, flat style", "rocket, cartoon style", "a red heart on a blue background",
                "tree", "a small owl in the top left, 3d style", "")

    NOISES = 4   # the figures are means over this many noisy latents (one was too noisy to read)

    def __init__(self, tok, device, latent_px: int, seed: int):
        self.ids = _encoder(tok)(list(self.CAPTIONS)).to(device)
        g = torch.Generator().manual_seed(seed + 900)
        self.x = torch.randn((self.NOISES, 4, latent_px, latent_px), generator=g).to(device)

    @torch.no_grad()
    def __call__(self, text, unet) -> str:
        was = text.training, unet.training
        text.eval(), unet.eval()
        h = text(self.ids)[0]
        pooled = h.mean(1)
        d = torch.cdist(pooled, pooled)
        n, k = len(pooled), self.NOISES
        spread = float(d.sum() / (n * (n - 1)) / pooled.norm(dim=1).mean())
        t = torch.full((n * k,), 900, device=self.x.device)
        x = self.x.repeat_interleave(n, dim=0)                 # noise j for every caption, j = 0..k-1
        out = unet(x, t, encoder_hidden_states=h.repeat(k, 1, 1)).sample.flatten(1).view(k, n, -1)
        size = out.norm(dim=2).mean()
        vs_empty = float((out[:, :-1] - out[:, -1:]).norm(dim=2).mean() / size)
        prompts = out[:, :-1]                                  # every pair of different prompts
        between = torch.cdist(prompts, prompts)
        m = n - 1
        vs_other = float(between.sum() / (k * m * (m - 1)) / size)
        text.train(was[0]), unet.train(was[1])
        return (f"conditioning: text spread {100 * spread:.1f}%, UNet change at t=900 "
                f"prompt vs empty {100 * vs_empty:.1f}%, prompt vs prompt {100 * vs_other:.1f}%")


@contextlib.contextmanager
def ema_weights(params, ema):
    """Temporarily put the EMA weights into `params` (what an export would ship)."""
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, v in zip(params, saved):
                p.copy_(v)


@torch.no_grad()
def sample_grid(text, unet, vae, tok, px: int, factor: int, folder: Path, step: int) -> None:
    """Draw every SAMPLE_SUBJECTS word in the three styles (seed = its place in the grid) and
    write folder/samples.png (columns of 3: 3d, flat, cartoon) and samples.txt (the rows)."""
    from diffusers import StableDiffusionPipeline
    from PIL import Image

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=M.inference_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    prompts = [f"{w}, {st}" for w in SAMPLE_SUBJECTS for st in ("3d style", "flat style", "cartoon style")]
    gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
    lat = torch.stack([torch.randn((4, px // factor, px // factor), generator=g) for g in gens])
    imgs = pipe(prompts, num_inference_steps=20, guidance_scale=5.0, height=px, width=px,
                latents=lat, output_type="np").images
    arr = (imgs * 255).round().astype(np.uint8)
    rows = [np.concatenate(list(arr[r * 3:(r + 1) * 3]), 1) for r in range(len(SAMPLE_SUBJECTS))]
    cols = [np.concatenate(rows[c * 8:(c + 1) * 8], 0) for c in range(-(-len(rows) // 8))]
    h = max(c.shape[0] for c in cols)
    cols = [np.pad(c, ((0, h - c.shape[0]), (0, 8), (0, 0)), constant_values=255) for c in cols]
    Image.fromarray(np.concatenate(cols, 1)).save(folder / "samples.png")
    (folder / "samples.txt").write_text(f"step {step}; columns of 3 (3d, flat, cartoon), 8 subjects each, top to bottom:\n"
                                        + "\n".join(SAMPLE_SUBJECTS) + "\n")
