"""Watching a run while it trains: is the prompt starting to matter, and what does it draw?

- `ConditioningProbe`: two numbers logged every 200 steps, from the first minutes.
- `CaptionGain`: how much the right caption lowers the UNet's loss on pool latents, against
  another picture's caption (the prompt deciding what is drawn, in the loss's own units).
- `WordGain`: the same with only the subject word changed, or only the style word. The
  caption gain is mostly the background colour; these two say whether subjects and styles,
  what the evaluation scores, are being learned.
- `TextSeparation`: whether the text encoder itself tells the subjects apart (and an emoji's
  other names from other emoji): the UNet cannot draw two things for one encoding.
- `sample_grid`: the issue's 40 must-draw subjects in all three styles, with the EMA
  weights, written to the run folder at every checkpoint (look at it).
- `GridJudge`: the evaluation's judge (when it is cached in the run's eval folder) reads that
  grid: how many subjects it finds in its top 5 and how many styles it names right. The
  shipping bar in numbers, every sample_every steps, for the cost of a few seconds.
- `background_colour`: pictures asked for each of the 11 background colours, read by the
  evaluation's own border measure: whether the colour words are followed (the first-ship bar
  asks for 85%), which neither the grid (its prompts name no colour) nor the gains say alone.
- `placement`: small subjects asked for in each corner: whether the place words are followed
  (the subject's centre, where the picture differs from its border, in the asked quarter).
- `finish_from_noise`: pool pictures noised to t = 300 / 500 / 700 / 999 and finished by the
  model: which part of the noise range it has learned.
- `vae_round_trip`: real training pictures beside the VAE's encode + decode of them, at
  each size the model is trained at. What the VAE cannot give back, no UNet can draw.
- `corner_error`: the round trip of plain backgrounds, corner by corner: a decoder can learn
  to draw a speck in one corner of every picture, and this finds it.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

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


class TextSeparation:
    """Does the text encoder tell the subjects apart? "<name>, 3d style" for every learned emoji's
    first name, encoded and averaged over the caption's tokens, centred on their mean:
    - the cosine to the nearest other subject (median over subjects): near 1, two subjects
      arrive at the UNet as one prompt;
    - how often each of the other names ("kitten") is nearest its own emoji's first name.
    cpu2 at step 17,202, trained by the UNet's loss alone: 0.954, and 9% of 867 aliases;
    "pizza" at 0.990 from "croissant", "cat" nearest "sun": subjects told apart by colour."""

    def __init__(self, tok, names: dict[int, list[str]], device):
        ids = sorted(names)
        enc = _encoder(tok)
        self.pad = tok.pad_token_id
        self.first = enc([f"{names[e][0]}, 3d style" for e in ids]).to(device)
        others = [(k, n) for k, e in enumerate(ids) for n in names[e][1:]]
        self.alias = enc([f"{n}, 3d style" for _, n in others]).to(device) if others else None
        self.truth = torch.tensor([k for k, _ in others], device=device)

    def _pooled(self, text, ids: torch.Tensor) -> torch.Tensor:
        h = text(ids)[0].float()
        mask = (ids != self.pad).float()[..., None]
        return (h * mask).sum(1) / mask.sum(1)

    @torch.no_grad()
    def measure(self, text) -> dict[str, float]:
        was = text.training
        text.eval()
        first = self._pooled(text, self.first)
        mean = first.mean(0, keepdim=True)
        f = F.normalize(first - mean, dim=1)
        cos = f @ f.T
        cos.fill_diagonal_(-2.0)
        out = {"nearest": cos.max(1).values.median().item(), "aliases": float("nan")}
        if self.alias is not None:
            a = F.normalize(self._pooled(text, self.alias) - mean, dim=1)
            out["aliases"] = ((a @ f.T).argmax(1) == self.truth).float().mean().item()
        text.train(was)
        return out

    def __call__(self, text) -> str:
        m = self.measure(text)
        return (f"text separation: nearest other subject at cosine {m['nearest']:.3f} (median, centred), "
                f"other names nearest their own emoji {m['aliases']:.0%} of {len(self.truth)}")


class CaptionGain:
    """The UNet's v-loss on N fixed pool latents (fixed noise) with their own captions, and with
    the captions rolled by one (each picture gets another's words), at a middle and a high noise
    step. gain = 1 - right / wrong: 0 when the words do not matter, towards 1 when they decide
    the picture. Measured on the whole caption (subject, style, background, place): the subject
    grid and the evaluation say which words have been learned."""

    STEPS = (400, 800)

    def __init__(self, pool: dict[str, torch.Tensor], sf: float, device, seed: int, n: int = 64):
        n = min(n, len(pool["latents"]))
        self.z = (pool["latents"][:n].float() * sf).to(device)
        self.ids = pool["ids"][:n].long().to(device)
        g = torch.Generator().manual_seed(seed + 901)
        self.noise = torch.randn(self.z.shape, generator=g).to(device)

    @torch.no_grad()
    def __call__(self, text, unet, alphas_cumprod: torch.Tensor) -> str:
        was = text.training, unet.training
        text.eval(), unet.eval()
        right, wrong = text(self.ids)[0], text(self.ids.roll(1, 0))[0]
        parts = []
        for tv in self.STEPS:
            t = torch.full((len(self.z),), tv, device=self.z.device)
            noisy, target = M.v_pair(self.z, self.noise, t, alphas_cumprod)
            lr = F.mse_loss(unet(noisy, t, encoder_hidden_states=right).sample.float(), target).item()
            lw = F.mse_loss(unet(noisy, t, encoder_hidden_states=wrong).sample.float(), target).item()
            parts.append(f"t={tv} {lr:.3f} vs {lw:.3f} ({100 * (1 - lr / max(lw, 1e-12)):.0f}%)")
        text.train(was[0]), unet.train(was[1])
        return "caption gain (v-loss, own caption vs another's): " + ", ".join(parts)


class WordGain:
    """CaptionGain for one word at a time, on N single-emoji pool latents of the learned
    vocabulary, with short captions "<name>, <style word>" (fixed noise):
    - subject: the loss with the right name against the next latent's emoji's name, same style;
    - style: against the next style's word, same name.
    gain = 1 - right / wrong, at each of STEPS. Near 0 means the word is ignored. Measured on
    cpu2 at step 3,000 (raw weights): subject 0.2-1.0%, style about 0, while the caption gain
    read 45% at t = 800 (the background colour). Fine-tuning on 32 fixed latents raised the
    subject gain on those to 7-15% in 200 steps: the words can steer; it takes data."""

    STEPS = (400, 600, 800)

    def __init__(self, pool: dict[str, torch.Tensor], sf: float, tok, names: dict[int, list[str]], device, seed: int,
                 n: int = 96):
        from training.data import STYLE_WORDS, STYLES

        emoji, style = pool["emoji"].long(), pool["style"].long()
        pick = [i for i in range(len(emoji)) if emoji[i, 1] < 0 and int(emoji[i, 0]) in names][:n]
        if len(pick) < 2:
            raise ValueError("the pool holds fewer than 2 single pictures of learned emoji")
        em, st = [int(emoji[i, 0]) for i in pick], [int(style[i]) for i in pick]
        other = em[1:] + em[:1]
        for k in range(len(em)):          # a neighbour with the same emoji: take the next different one
            if other[k] == em[k]:
                other[k] = next((e for e in em if e != em[k]), em[k])

        def caption(e, s):
            return f"{names[e][0]}, {STYLE_WORDS[STYLES[s % len(STYLES)]][0]}"

        enc = _encoder(tok)
        self.right = enc([caption(e, s) for e, s in zip(em, st)]).to(device)
        self.subject = enc([caption(o, s) for o, s in zip(other, st)]).to(device)
        self.style = enc([caption(e, s + 1) for e, s in zip(em, st)]).to(device)
        self.z = (pool["latents"][pick].float() * sf).to(device)
        g = torch.Generator().manual_seed(seed + 902)
        self.noise = torch.randn(self.z.shape, generator=g).to(device)

    @torch.no_grad()
    def measure(self, text, unet, alphas_cumprod: torch.Tensor, loss_steps: tuple[int, ...] = ()) -> dict[str, list[float]]:
        """{"subject": gains, "style": gains} at STEPS; with `loss_steps`, also "loss": the v-loss
        with the right captions at those steps (everything the model has learned of these pictures)."""
        was = text.training, unet.training
        text.eval(), unet.eval()
        h = {k: text(getattr(self, k))[0] for k in ("right", "subject", "style")}
        out = {"subject": [], "style": [], **({"loss": []} if loss_steps else {})}
        for tv in sorted(set(self.STEPS) | set(loss_steps)):      # each UNet call once, t = 800 in both
            t = torch.full((len(self.z),), tv, device=self.z.device)
            noisy, target = M.v_pair(self.z, self.noise, t, alphas_cumprod)
            words = ("right", "subject", "style") if tv in self.STEPS else ("right",)
            loss = {k: F.mse_loss(unet(noisy, t, encoder_hidden_states=h[k]).sample.float(), target).item() for k in words}
            if tv in loss_steps:
                out["loss"].append(loss["right"])
            if tv in self.STEPS:
                for k in ("subject", "style"):
                    out[k].append(1 - loss["right"] / max(loss[k], 1e-12))
        text.train(was[0]), unet.train(was[1])
        return out

    def __call__(self, text, unet, alphas_cumprod: torch.Tensor, weights: str = "raw") -> str:
        m = self.measure(text, unet, alphas_cumprod)
        ts = "/".join(str(t) for t in self.STEPS)
        return (f"word gain at t={ts} ({weights} weights, right word vs another, {len(self.z)} single pictures): subject "
                + "/".join(f"{100 * g:.1f}%" for g in m["subject"]) + ", style "
                + "/".join(f"{100 * g:.1f}%" for g in m["style"]))


@torch.no_grad()
def vae_round_trip(vae, renderer, batch, path: Path) -> float:
    """Write `path`: the batch's pictures (top row) over the VAE's reconstruction of them
    (encode to the latent mean, decode), shown twice as large; return the mean L1 on [-1, 1]."""
    from PIL import Image

    x = renderer(batch)   # (no mode switch: the VAE has GroupNorm only, no dropout or batch norm)
    y = vae.decode(vae.encode(x).latent_dist.mean).sample.float()

    def row(t):
        a = ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        return np.concatenate(list(a), 1)

    img = np.concatenate([row(x), row(y)], 0)
    Image.fromarray(img).resize((img.shape[1] * 2, img.shape[0] * 2), Image.NEAREST).save(path)
    return float((x - y).abs().mean())


CORNERS = ("top left", "top right", "bottom left", "bottom right")


def device_of(model) -> torch.device:
    """Where a model's weights are (the CPU for a stand-in without any): the probes build their
    inputs there, so that they run on a GPU as they do on the CPU."""
    p = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    return p.device if p is not None else torch.device("cpu")


def corner_error(vae, px: int, colours) -> dict[str, float]:
    """Mean |error| of the VAE's round trip of plain backgrounds (one per RGB colour in
    `colours`) in each px/16-wide corner square and in the centre square, on [-1, 1]. A plain
    picture has nothing to get wrong, so any corner well above the others is the decoder's own
    drawing: cpu2's decoder draws a speck into every picture's top right (docs/training/RUNS.md,
    "the decoder's corner speck": an activation spike its GroupNorm layers lean on)."""
    c = torch.tensor(list(colours), dtype=torch.float32) / 127.5 - 1
    x = c[:, :, None, None].expand(-1, 3, px, px).contiguous()
    with torch.no_grad():
        y = vae.decode(vae.encode(x.to(device_of(vae))).latent_dist.mean).sample.float().cpu()
    e = (y - x).abs().mean((0, 1))
    s, mid = max(1, px // 16), px // 2
    ends = (slice(0, s), slice(px - s, px))
    out = {name: float(e[ends[k // 2], ends[k % 2]].mean()) for k, name in enumerate(CORNERS)}
    out["centre"] = float(e[mid - s // 2:mid + (s + 1) // 2, mid - s // 2:mid + (s + 1) // 2].mean())
    return out


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
def sample_grid(text, unet, vae, tok, px: int, factor: int, folder: Path, step: int, seed0: int = 0,
                guidance: float = 5.0) -> torch.Tensor:
    """Draw every SAMPLE_SUBJECTS word in the three styles (seed = seed0 + its place in the grid) and
    write folder/samples.png (columns of 3: 3d, flat, cartoon) and samples.txt (the rows), and keep
    a copy as folder/samples/step-NNNNNN.png, so the grids of a long run can be looked at side by side.
    Returns the pictures, [120, 3, px, px] in [-1, 1], word by word, 3d/flat/cartoon each."""
    from PIL import Image

    prompts = [f"{w}, {st}" for w in SAMPLE_SUBJECTS for st in ("3d style", "flat style", "cartoon style")]
    imgs = _draw(text, unet, vae, tok, prompts, px, factor, seed0, guidance)
    arr = (imgs * 255).round().astype(np.uint8)
    rows = [np.concatenate(list(arr[r * 3:(r + 1) * 3]), 1) for r in range(len(SAMPLE_SUBJECTS))]
    cols = [np.concatenate(rows[c * 8:(c + 1) * 8], 0) for c in range(-(-len(rows) // 8))]
    h = max(c.shape[0] for c in cols)
    cols = [np.pad(c, ((0, h - c.shape[0]), (0, 8), (0, 0)), constant_values=255) for c in cols]
    grid = Image.fromarray(np.concatenate(cols, 1))
    grid.save(folder / "samples.png")
    (folder / "samples").mkdir(exist_ok=True)
    grid.save(folder / "samples" / f"step-{step:06d}.png")
    (folder / "samples.txt").write_text(f"step {step}; columns of 3 (3d, flat, cartoon), 8 subjects each, top to bottom:\n"
                                        + "\n".join(SAMPLE_SUBJECTS) + "\n")
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() * 2 - 1


def _draw(text, unet, vae, tok, prompts: list[str], px: int, factor: int, seed0: int, guidance: float) -> np.ndarray:
    """`prompts` drawn as a user's 20-step DDIM generation draws them (seed = seed0 + the prompt's
    place): [N, px, px, 3] in [0, 1]."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=M.inference_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(seed0 + i) for i in range(len(prompts))]
    lat = torch.stack([torch.randn((4, px // factor, px // factor), generator=g) for g in gens])
    return pipe(prompts, num_inference_steps=20, guidance_scale=guidance, height=px, width=px,
                latents=lat, output_type="np").images


BACKGROUND_SEED = 70_000


@torch.no_grad()
def background_colour(text, unet, vae, tok, px: int, factor: int, guidance: float = 5.0, per_colour: int = 4) -> dict:
    """Ask for every background colour `per_colour` times ("<subject>, <style>, on a <colour>
    background", subjects and styles taken in turn from the grid's) and read each picture's
    colour as `training.evaluate` does (the median of its border, nearest named colour).
    -> {"right": n, "pictures": n, "asked": [colour names], "got": [colour names]}."""
    from training.data import COLOUR_NAMES
    from training.evaluate import border_colour

    styles = ("3d style", "flat style", "cartoon style")
    asked = [COLOUR_NAMES[k % len(COLOUR_NAMES)] for k in range(per_colour * len(COLOUR_NAMES))]
    prompts = [f"{SAMPLE_SUBJECTS[(7 * k) % len(SAMPLE_SUBJECTS)]}, {styles[k % 3]}, "
               f"on {'an' if c[0] in 'aeiou' else 'a'} {c} background" for k, c in enumerate(asked)]
    imgs = _draw(text, unet, vae, tok, prompts, px, factor, BACKGROUND_SEED, guidance)
    got = [COLOUR_NAMES[i] for i in border_colour(torch.from_numpy(imgs).permute(0, 3, 1, 2) * 2 - 1)]
    return {"right": sum(a == g for a, g in zip(asked, got)), "pictures": len(asked), "asked": asked, "got": got}


def background_line(found: dict) -> str:
    return (f"background colour asked in {found['pictures']} pictures, drawn right {found['right']} "
            f"({found['right'] / found['pictures']:.0%}; chance 9%)")


PLACE_CORNERS = ("in the top left", "in the top right", "in the bottom left", "in the bottom right")


def quarter(picture: np.ndarray) -> tuple[int, int] | None:
    """Which quarter of an [H, W, 3] picture in [0, 1] its subject is in, as (x, y) signs (-1:
    left / top): the centre of the pixels that differ from the median of its border by more than
    a quarter (summed over the channels). None when nothing stands out."""
    h, w, _ = picture.shape
    k = max(1, h // 32)
    border = np.concatenate([picture[:k].reshape(-1, 3), picture[-k:].reshape(-1, 3),
                             picture[:, :k].reshape(-1, 3), picture[:, -k:].reshape(-1, 3)])
    ys, xs = np.nonzero(np.abs(picture - np.median(border, 0)).sum(-1) > 0.25)
    if len(xs) < 4:
        return None
    return (1 if xs.mean() > (w - 1) / 2 else -1, 1 if ys.mean() > (h - 1) / 2 else -1)


@torch.no_grad()
def placement(text, unet, vae, tok, px: int, factor: int, guidance: float = 5.0, per_corner: int = 8) -> dict:
    """Ask for a small subject in each corner `per_corner` times ("a small <subject> in the top
    left, <style>", subjects and styles in turn) and count the pictures whose subject is in the
    asked quarter (`quarter`; chance: a quarter). -> {"right": n, "pictures": n}."""
    from training.data import POSITIONS

    styles = ("3d style", "flat style", "cartoon style")
    asked = [PLACE_CORNERS[k % 4] for k in range(4 * per_corner)]
    prompts = [f"a small {SAMPLE_SUBJECTS[(3 * k) % len(SAMPLE_SUBJECTS)]} {c}, {styles[k % 3]}" for k, c in enumerate(asked)]
    imgs = _draw(text, unet, vae, tok, prompts, px, factor, BACKGROUND_SEED + 1000, guidance)
    right = sum(quarter(img) == POSITIONS[c] for img, c in zip(imgs, asked))
    return {"right": int(right), "pictures": len(asked)}


def placement_line(found: dict) -> str:
    return (f"place asked in {found['pictures']} pictures (a small subject in a corner), drawn in the right "
            f"quarter {found['right']} ({found['right'] / found['pictures']:.0%}; chance 25%)")


@torch.no_grad()
def finish_from_noise(text, unet, vae, tok, pool: dict[str, torch.Tensor], sf: float, path: Path,
                      starts: tuple[int, ...] = (300, 500, 700, 999), n: int = 8, guidance: float = 5.0,
                      seed: int = 0) -> None:
    """Where in the noise range does the model fail? n single-emoji pool pictures, noised to each
    t in `starts` and finished with the model (DDIM, 20-step spacing, their own captions, guidance),
    written to `path`: the VAE's round trip on top, then one row per start. A model that finishes
    from t = 300 but not from 700 draws details and fails at shapes: what the prompt must decide."""
    from PIL import Image

    img = finished_pictures(text, unet, vae, tok, pool, sf, starts, n, guidance, seed).cpu()
    Image.fromarray(((img + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()).save(path)


@torch.no_grad()
def finished_pictures(text, unet, vae, tok, pool: dict[str, torch.Tensor], sf: float,
                      starts: tuple[int, ...] = (300, 500, 700, 999), n: int = 8, guidance: float = 5.0,
                      seed: int = 0) -> torch.Tensor:
    """finish_from_noise's picture, (3, rows x px, n x px) on [-1, 1], on the models' device (the
    pool and the noise are drawn on the CPU, as on any machine, and moved there)."""
    dev = device_of(unet)
    single = [i for i in range(len(pool["emoji"])) if pool["emoji"][i, 1] < 0][:n]
    z0 = pool["latents"][single].float().to(dev) * sf
    ids = pool["ids"][single].long().to(dev)
    h = text(ids)[0]
    h0 = text(_encoder(tok)([""] * len(ids)).to(dev))[0]
    sched = M.inference_scheduler()
    sched.set_timesteps(20)
    g = torch.Generator().manual_seed(seed)
    rows = [z0]
    for start in starts:
        ts = [t for t in sched.timesteps if t <= start]
        z = sched.add_noise(z0, torch.randn(z0.shape, generator=g).to(dev), torch.tensor([int(ts[0])], device=dev))
        for t in ts:
            tt = torch.full((2 * len(z),), int(t), device=dev)
            v_text, v_empty = unet(torch.cat([z, z]), tt, encoder_hidden_states=torch.cat([h, h0])).sample.chunk(2)
            z = sched.step(v_empty + guidance * (v_text - v_empty), t, z).prev_sample
        rows.append(z)
    pics = [vae.decode(r / sf).sample.clamp(-1, 1) for r in rows]
    return torch.cat([torch.cat(list(p), 2) for p in pics], 1)


GRID_STYLES = ("3d", "flat", "cartoon")   # sample_grid's order, as data.STYLES names them
JUDGE_NAME = re.compile(r"judge2-(?P<vocabulary>[\w]+)-(?P<px>\d+)px-w(?P<width>\d+)x(?P<stride>\d+)-.*\.safetensors")


class GridJudge:
    """Scores sample_grid's pictures with a judge that training/evaluate.py trained and cached
    (run/eval/judge2-<vocabulary>-<px>px-w<width>x<stride>-...safetensors; the newest match).

    A subject counts as found when one of its emoji (vocab.SUBJECTS: "tree" is two) is in the
    judge's top 5; a style when the judge's best guess is the one asked for. These are the
    evaluation's top-5 and style figures on the 40 words the grid shows, not on held-out
    prompts: a trend to watch, not the number that ships a model."""

    def __init__(self, judge, subject_ids: list[list[int]], path: Path | None = None):
        self.judge, self.subject_ids, self.path = judge.eval(), subject_ids, path

    @classmethod
    def find(cls, eval_dir: Path, vocabulary: str, px: int, n_emoji: int, subject_ids: list[list[int]]):
        """The cached judge for this vocabulary and size, or None when there is none yet."""
        found = [p for p in eval_dir.glob("judge2-*.safetensors")
                 if (m := JUDGE_NAME.fullmatch(p.name)) and m["vocabulary"] == vocabulary and int(m["px"]) == px]
        if not found:
            return None
        from safetensors.torch import load_file

        from training.evaluate import Judge

        path = max(found, key=lambda p: p.stat().st_mtime)
        m = JUDGE_NAME.fullmatch(path.name)
        judge = Judge(n_emoji, int(m["width"]), int(m["stride"]))
        judge.load_state_dict(load_file(str(path)))
        return cls(judge, subject_ids, path)

    @torch.no_grad()
    def __call__(self, pictures: torch.Tensor) -> dict:
        """pictures: sample_grid's output. -> counts and per-word hits."""
        from training.data import STYLES

        n = len(self.subject_ids)
        if pictures.shape[0] != 3 * n:
            raise ValueError(f"expected {3 * n} pictures (3 per subject), got {pictures.shape[0]}")
        dev = device_of(self.judge)
        emoji, style, _ = self.judge(pictures.to(dev).float())
        top5 = emoji.topk(5, dim=1).indices.cpu()
        found = torch.tensor([bool(set(top5[k].tolist()) & set(self.subject_ids[k // 3])) for k in range(3 * n)])
        first = torch.tensor([int(top5[k, 0]) in self.subject_ids[k // 3] for k in range(3 * n)])
        asked = torch.tensor([STYLES.index(GRID_STYLES[k % 3]) for k in range(3 * n)])
        styled = style.argmax(1).cpu() == asked
        per_word = found.view(n, 3)
        return {"pictures": 3 * n, "top5": int(found.sum()), "top1": int(first.sum()), "style": int(styled.sum()),
                "words_in_every_style": int(per_word.all(1).sum()), "words_in_any_style": int(per_word.any(1).sum()),
                "found": per_word.tolist()}

    @staticmethod
    def line(score: dict) -> str:
        n = score["pictures"]
        words = n // 3
        return (f"subject grid, judged: subject in top 5 {score['top5']}/{n} (top 1 {score['top1']}), style "
                f"{score['style']}/{n}; words found in all 3 styles {score['words_in_every_style']}/{words}, "
                f"in at least one {score['words_in_any_style']}/{words}")
