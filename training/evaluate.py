"""Score a trained default model against held-out prompts, with real images as the ceiling.

    python -m training.evaluate --model models/default --data training/build/data --out training/runs/main/eval

1. A small classifier (`Judge`) learns from REAL renders of the data set (every emoji in
   every style, the held-out pairs included: it is a judge, not a contestant) to name the
   emoji and the style of a picture. It is cached in the --out folder.
2. The model draws every held-out prompt (`data.eval_prompts`: >= 500 single emoji in
   held-out (emoji, style) pairs, held-out style/colour and style/position compositions,
   and held-out emoji pairs), and the same prompts are rendered from the real sprites.
3. Scores, for generated and real alike: emoji top-1/top-5 (pairs: left half and right
   half must each have their emoji in the top 5), style accuracy, background-colour
   accuracy (nearest named colour to the median of the image border).
4. Diversity: for prompts that leave background, size and position open, the mean
   pairwise distance between 4 seeds, divided by the same figure for 4 real renders of
   that prompt. Target >= 50%.
5. Writes metrics.json, samples.png (a grid for the model card) and samples.txt (its
   captions, row by row).

Targets: top-5 >= 80%, style >= 90%, background >= 90%, diversity >= 50%.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from training import data as D
from training.style_guidance import style_guided, without_style
from training.vocab import learned_split

TARGETS = {"top5": 0.80, "style": 0.90, "colour": 0.90, "diversity": 0.50}


class Judge(nn.Module):
    """A small ResNet on 64x64 pictures with two heads: which emoji, which style."""

    def __init__(self, n_emoji: int, width: int = 48, stem_stride: int = 1):
        """`stem_stride` 2 halves the first stage's resolution: ~4x cheaper, for CPU evaluation."""
        super().__init__()

        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU(),
                                 nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())

        w = width
        self.body = nn.Sequential(block(3, w, stem_stride), block(w, 2 * w, 2), block(2 * w, 4 * w, 2), block(4 * w, 4 * w, 2),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.emoji = nn.Linear(4 * w, n_emoji)
        self.style = nn.Linear(4 * w, len(D.STYLES))

    def forward(self, x):   # x in [-1, 1], any size; judged at 64x64
        f = self.body(F.interpolate(x, size=64, mode="bilinear", antialias=True, align_corners=False))
        return self.emoji(f), self.style(f), f


def _all_images_split(pack: D.Pack, only: set[int] | None = None) -> D.Split:
    by = {}
    for i, im in enumerate(pack.images):
        if only is None or im["emoji"] in only:
            by.setdefault((im["emoji"], im["style"]), []).append(i)
    return D.Split(np.array(sorted(i for ids in by.values() for i in ids)), np.array([], np.int64), set(), by)


def train_judge(pack: D.Pack, renderer: D.Renderer, steps: int, batch: int, device, seed: int, log=print,
                width: int = 48, only: set[int] | None = None, stem_stride: int = 1,
                checkpoint: Path | None = None, every: int = 500) -> Judge:
    """`only`: the emoji the model learned (its vocabulary); the judge tells those apart.
    `checkpoint`: where to keep the judge's progress (weights and optimizer, every `every` steps;
    about an hour at one thread on a CPU), so an interrupted training resumes there. Batches are
    a function of the step, so a resumed judge is the judge an uninterrupted run makes."""
    from training.common import load_checkpoint, save_checkpoint

    torch.manual_seed(seed)
    judge = Judge(len(pack.emoji), width, stem_stride).to(device)
    # Every combination, the held-out ones included: a judge that never saw 3d on purple
    # learned "purple means not 3d" (style 50% on real pictures of held-out combinations).
    sampler = D.Sampler(pack, _all_images_split(pack, only), seed + 17, pair_prob=0.0, drop_caption=0.0, hold_out=False)
    opt = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=max(steps, 20), pct_start=0.1)
    start = 0
    if checkpoint is not None and checkpoint.exists():
        flat, info = load_checkpoint(checkpoint, opt)
        judge.load_state_dict(flat)
        sched.load_state_dict(info["sched"])
        start = info["step"]
        log(f"judge: resumed at step {start} from {checkpoint}")
    t0 = time.time()
    for step in range(start, steps):
        b = sampler.train_batch(step, batch)
        x = renderer(b)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            le, ls, _ = judge(x)
        loss = F.cross_entropy(le.float(), torch.as_tensor(b.emoji[:, 0], device=device)) + \
            F.cross_entropy(ls.float(), torch.as_tensor(b.style, device=device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if (step + 1) % 100 == 0 or step + 1 == steps:
            log(f"judge step {step + 1}/{steps} loss {loss.item():.3f} ({time.time() - t0:.0f} s)")
        if checkpoint is not None and (step + 1) % every == 0 and step + 1 < steps:
            save_checkpoint(checkpoint, judge.state_dict(), opt, {"step": step + 1, "sched": sched.state_dict()})
    return judge.eval()


def border_colour(x: torch.Tensor, width: int | None = None) -> np.ndarray:
    """Nearest named colour to the median of each picture's outer frame. x in [-1, 1]."""
    n, _, h, w = x.shape
    k = width or max(1, h // 32)
    frame = torch.cat([x[:, :, :k].flatten(2), x[:, :, -k:].flatten(2), x[:, :, :, :k].flatten(2), x[:, :, :, -k:].flatten(2)], 2)
    med = ((frame.median(dim=2).values + 1) * 127.5).float().cpu()
    palette = torch.tensor([D.COLOURS[c] for c in D.COLOUR_NAMES], dtype=torch.float32)
    return torch.cdist(med, palette).argmin(1).numpy()


@torch.no_grad()
def score(judge: Judge, x: torch.Tensor, specs: list[dict], batch: D.Batch, emoji_index=None) -> dict:
    """Per-prompt hits for emoji top-1/top-5, style and background colour."""
    dev = next(judge.parameters()).device
    x = x.to(dev).float()
    single = np.array([not s.get("pair") for s in specs])
    le, ls, feats = judge(x)
    top5 = le.topk(5, dim=1).indices.cpu().numpy()
    a = batch.emoji[:, 0]
    hit1 = top5[:, 0] == a
    hit5 = (top5 == a[:, None]).any(1)
    if (~single).any():   # pairs: judge each half on its own
        h = x.shape[-1]
        left, _, _ = judge(x[~single][..., : h // 2 + h // 8])
        right, _, _ = judge(x[~single][..., h // 2 - h // 8:])
        l5, r5 = left.topk(5, 1).indices.cpu().numpy(), right.topk(5, 1).indices.cpu().numpy()
        pa, pb = batch.emoji[~single, 0], batch.emoji[~single, 1]
        hit5[~single] = (l5 == pa[:, None]).any(1) & (r5 == pb[:, None]).any(1)
        hit1[~single] = (l5[:, 0] == pa) & (r5[:, 0] == pb)
    judged_style = ls.argmax(1).cpu().numpy()
    colour = border_colour(x) == batch.colour
    return {"top1": hit1, "top5": hit5, "style": judged_style == batch.style, "judged_style": judged_style,
            "colour": colour, "features": feats.float().cpu()}


def style_confusion(hits: dict, batch: D.Batch) -> dict[str, dict[str, int]]:
    """{asked style: {judged style: pictures}}: which style a picture asked for one was read as."""
    return {asked: {judged: int(((batch.style == i) & (hits["judged_style"] == j)).sum()) for j, judged in enumerate(D.STYLES)}
            for i, asked in enumerate(D.STYLES)}


def style_by_subject(hits: dict) -> dict[str, dict]:
    """Style accuracy split by whether the judge read the subject: on pictures whose subject it names
    (top 1) a missed style is the model's; where the subject is not even in its top 5 (a blob) the
    style it reads is close to a guess. Says whether the style bar waits on the subjects or not."""
    out = {}
    for name, m in (("subject_read", hits["top1"]), ("subject_missed", ~hits["top5"])):
        out[name] = {"n": int(m.sum()), "style": round(float(hits["style"][m].mean()), 4) if m.any() else None}
    return out


def summarise(hits: dict, specs: list[dict]) -> dict:
    kinds = sorted({s["kind"] for s in specs})
    out = {}
    for kind in ["all"] + kinds:
        m = np.array([kind == "all" or s["kind"] == kind for s in specs])
        out[kind] = {k: round(float(hits[k][m].mean()), 4) for k in ("top1", "top5", "style", "colour")} | {"n": int(m.sum())}
    return out


def pairwise(x: torch.Tensor) -> float:
    """Mean pairwise RMS distance between the pictures in x (n, ...)."""
    f = x.flatten(1).float()
    d = torch.cdist(f, f) / f.shape[1] ** 0.5
    n = f.shape[0]
    return float(d.sum() / (n * (n - 1)))


def generate(pipe, prompts: list[str], seeds: list[int], steps: int, guidance: float, size: int, batch: int,
             negatives: list[str] | None = None, styleless: list[str] | None = None,
             style_guidance: float = 0.0, style_below: int = 1000) -> torch.Tensor:
    """-> [N, 3, size, size] in [-1, 1]; seed i drives prompt i (CPU noise, as in core); `negatives`:
    a negative prompt for each prompt (default none: guidance from the empty prompt); `styleless`:
    each prompt without its style words, for `style_guidance` at the timesteps t < `style_below`
    (training.style_guidance)."""
    out = []
    for k in range(0, len(prompts), batch):
        gens = [torch.Generator().manual_seed(s) for s in seeds[k:k + batch]]
        f = pipe.vae_scale_factor
        latents = torch.stack([torch.randn((pipe.unet.config.in_channels, size // f, size // f), generator=g) for g in gens])
        if styleless is not None:
            img = style_guided(pipe, prompts[k:k + batch], styleless[k:k + batch], latents, steps, guidance, style_guidance,
                               style_below)
        else:
            img = pipe(prompts[k:k + batch], negative_prompt=negatives[k:k + batch] if negatives else None,
                       num_inference_steps=steps, guidance_scale=guidance, height=size, width=size,
                       latents=latents.to(pipe.device, pipe.unet.dtype), output_type="pt").images
        out.append(img.float().cpu() * 2 - 1)
    return torch.cat(out)


def save_grid(x: torch.Tensor, path: Path, cols: int = 8) -> None:
    from PIL import Image

    arr = ((x.clamp(-1, 1).permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    rows = [np.concatenate(list(arr[r * cols:(r + 1) * cols]), 1) for r in range(len(arr) // cols)]
    Image.fromarray(np.concatenate(rows, 0)).save(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("models/default"))
    p.add_argument("--data", type=Path, default=Path("training/build/data"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0, help="the split seed the model was trained with")
    p.add_argument("--judge-steps", type=int, default=3000)
    p.add_argument("--judge-batch", type=int, default=256)
    p.add_argument("--judge-width", type=int, default=48, help="channels of the judge's first stage")
    p.add_argument("--judge-stem-stride", type=int, default=1, help="2: the judge's first stage at half resolution (~4x cheaper, for a CPU)")
    # What a user gets with no options (GenerationRequest's defaults; the folder's scheduler, DDIM,
    # is also the default sampler Statuary picks for this model: core/samplers.suited).
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None,
                   help="default: the model's, as users get it (its folder's defaults.json; 7 without one)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--n-single", type=int, default=600)
    p.add_argument("--n-combo", type=int, default=150)
    p.add_argument("--n-pairs", type=int, default=100)
    p.add_argument("--n-diversity", type=int, default=50)
    p.add_argument("--device", default=None)
    p.add_argument("--judge-only", action="store_true", help="train and cache the judge (no model needed), score real pictures")
    p.add_argument("--size", type=int, default=64, help="with --judge-only: the model's picture size")
    p.add_argument("--vocabulary", default="common", help="with --judge-only: the model's vocabulary setting")
    p.add_argument("--judge-px", type=int, default=None,
                   help="the judge's picture size (default: the one the model was trained to be judged by, its "
                        "training.json's judge_px, else its own size). Every judge reads at 64x64, so one trained "
                        "at 128 px judges a 64 px model too, and models of both sizes by one judge")
    experiment = p.add_mutually_exclusive_group()   # each replaces how the prompt is guided; generate() takes one
    experiment.add_argument("--negative-other-styles", action="store_true",
                            help="an experiment, not what users get: each prompt's negative prompt names the two styles it "
                                 "does not ask for (\"flat style\" -> \"3d style, cartoon style\"), as a user can type it")
    experiment.add_argument("--style-guidance", type=float, default=None,
                            help="an experiment, not what users get: guidance toward the asked style on top of the usual, "
                                 "from each prompt without its style words (training.style_guidance; costs a third UNet pass)")
    p.add_argument("--style-guidance-below", type=int, default=None, metavar="T",
                   help="with --style-guidance: apply it only at the timesteps t < T, the low-noise steps that draw "
                        "shading and outline (default 1000: every step)")
    args = p.parse_args(argv)
    if args.style_guidance_below is not None and args.style_guidance is None:
        p.error("--style-guidance-below only applies with --style-guidance")
    if args.style_guidance_below is None:   # given or not is told apart above; the default is every step
        args.style_guidance_below = 1000
    if not 0 <= args.style_guidance_below <= 1000:
        p.error(f"--style-guidance-below is a timestep from 0 to 1000, not {args.style_guidance_below}")

    from diffusers import StableDiffusionPipeline

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.judge_only:     # train (and cache) the judge before there is a model, and score real pictures
        pipe, size, vocabulary, trained = None, args.size, args.vocabulary, {}
    else:
        pipe = StableDiffusionPipeline.from_pretrained(
            str(args.model), dtype=torch.float16 if device.type == "cuda" else torch.float32).to(device)
        pipe.set_progress_bar_config(disable=True)
        size = pipe.unet.config.sample_size * pipe.vae_scale_factor
        trained = json.loads((args.model / "training.json").read_text())["config"] if (args.model / "training.json").exists() else {}
        vocabulary = trained.get("vocabulary", "all")
        if args.guidance is None:   # what a prompt with no --guidance gets in Statuary
            from core.model_defaults import ModelDefaults

            args.guidance = ModelDefaults.load(args.model).guidance

    pack = D.Pack.load(args.data)
    split, names = learned_split(pack, args.seed, vocabulary)
    only = set(split.emoji) if names else None
    renderer = D.Renderer(pack.sprites(min(size, 128)), size, device)
    sampler = D.Sampler(pack, split, args.seed, names=names)
    log(f"{vocabulary} vocabulary: {len(split.emoji)} emoji, {size} px")

    # 1. The judge, trained on real pictures only (cached).
    # The cache name carries what the judge depends on, so a changed setting retrains it.
    judge_px = args.judge_px or trained.get("judge_px", 0) or size   # by default the judge the run's grids were read by
    judge_path = args.out / f"judge2-{vocabulary}-{judge_px}px-w{args.judge_width}x{args.judge_stem_stride}-s{args.judge_steps}-b{args.judge_batch}-seed{args.seed}.safetensors"
    if judge_path.exists():
        from safetensors.torch import load_file
        judge = Judge(len(pack.emoji), args.judge_width, args.judge_stem_stride).to(device)
        judge.load_state_dict(load_file(str(judge_path)))
        judge.eval()
    else:
        from safetensors.torch import save_file
        partial = judge_path.with_name("partial-" + judge_path.name)   # not "judge2-*": GridJudge.find must not take it
        judge_renderer = renderer if judge_px == size else D.Renderer(pack.sprites(min(judge_px, 128)), judge_px, device)
        judge = train_judge(pack, judge_renderer, args.judge_steps, args.judge_batch, device, args.seed, log, args.judge_width, only,
                            args.judge_stem_stride, checkpoint=partial)
        save_file({k: v.contiguous() for k, v in judge.state_dict().items()}, str(judge_path))
        partial.unlink(missing_ok=True)
        partial.with_suffix(".json").unlink(missing_ok=True)

    # 2. Held-out prompts: real renders (the ceiling) and the model's pictures.
    specs = D.eval_prompts(pack, split, args.seed, args.n_single, args.n_combo, args.n_pairs)
    real_batch = sampler.eval_batch(specs, seed=1)
    with torch.no_grad():
        real = renderer(real_batch)
    if pipe is None:
        for kind, m in summarise(score(judge, real, specs, real_batch), specs).items():
            print(f"real {kind:17s} top1 {m['top1']:.3f} top5 {m['top5']:.3f} style {m['style']:.3f} "
                  f"colour {m['colour']:.3f} n {m['n']}")
        return 0

    def other_styles(style: str) -> str:
        return ", ".join(D.STYLE_WORDS[s][0] for s in D.STYLES if s != style)

    def styled(captions: list[str], specs: list[dict]) -> dict:
        """generate()'s style guidance arguments for these prompts (none without --style-guidance)."""
        if args.style_guidance is None:
            return {}
        return {"styleless": [without_style(c, s["style"]) for c, s in zip(captions, specs)],
                "style_guidance": args.style_guidance, "style_below": args.style_guidance_below}

    log(f"generating {len(specs)} held-out prompts")
    fake = generate(pipe, real_batch.captions, [1000 + i for i in range(len(specs))], args.steps, args.guidance, size, args.batch,
                    [other_styles(s["style"]) for s in specs] if args.negative_other_styles else None,
                    **styled(real_batch.captions, specs))
    real_hits, fake_hits = score(judge, real, specs, real_batch), score(judge, fake, specs, real_batch)

    # 3. Diversity where the caption leaves background, size and position open.
    rng = np.random.default_rng([args.seed, 9])
    open_specs = [{"kind": "open", "emoji": specs[k]["emoji"], "style": specs[k]["style"]}
                  for k in rng.choice(args.n_single, min(args.n_diversity, args.n_single), replace=False)]
    div_gen, div_real, feat_gen, feat_real = [], [], [], []
    for j, s in enumerate(open_specs):
        reals = sampler.eval_batch([s] * 4, seed=100 + j)
        with torch.no_grad():
            rimg = renderer(reals)
        gimg = generate(pipe, [reals.captions[0]] * 4, [5000 + 4 * j + k for k in range(4)], args.steps, args.guidance, size, 4,
                        [other_styles(s["style"])] * 4 if args.negative_other_styles else None,
                        **styled([reals.captions[0]] * 4, [s] * 4))
        small = lambda t: F.interpolate(t.float().cpu(), size=32, mode="area")  # noqa: E731
        div_real.append(pairwise(small(rimg)))
        div_gen.append(pairwise(small(gimg)))
        with torch.no_grad():
            feat_real.append(pairwise(judge(rimg.to(device).float())[2].cpu()))
            feat_gen.append(pairwise(judge(gimg.to(device).float())[2].cpu()))

    metrics = {
        "model": str(args.model), "prompts": len(specs), "steps": args.steps, "guidance": args.guidance,
        "judge": judge_path.name, **({"negative": "the other styles"} if args.negative_other_styles else {}),
        **({"style_guidance": args.style_guidance, "style_guidance_below": args.style_guidance_below}
           if args.style_guidance is not None else {}),
        "generated": summarise(fake_hits, specs), "real": summarise(real_hits, specs),
        "style_confusion": {"generated": style_confusion(fake_hits, real_batch), "real": style_confusion(real_hits, real_batch)},
        "style_by_subject": {"generated": style_by_subject(fake_hits), "real": style_by_subject(real_hits)},
        "diversity": {"pixel_gen": float(np.mean(div_gen)), "pixel_real": float(np.mean(div_real)),
                      "pixel_ratio": float(np.mean(div_gen) / max(1e-9, np.mean(div_real))),
                      "feature_ratio": float(np.mean(feat_gen) / max(1e-9, np.mean(feat_real))),
                      "prompts": len(open_specs), "seeds": 4},
    }
    g = metrics["generated"]["all"]
    metrics["targets"] = {
        "top5": [g["top5"], TARGETS["top5"], g["top5"] >= TARGETS["top5"]],
        "style": [g["style"], TARGETS["style"], g["style"] >= TARGETS["style"]],
        "colour": [g["colour"], TARGETS["colour"], g["colour"] >= TARGETS["colour"]],
        "diversity": [metrics["diversity"]["pixel_ratio"], TARGETS["diversity"],
                      metrics["diversity"]["pixel_ratio"] >= TARGETS["diversity"]],
    }
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")

    # 4. The sample grid: 8 columns, a mix of kinds, generated row above real row.
    pick = [i for kind in ("held_emoji_style", "held_style_colour", "held_style_position", "held_pair")
            for i in [k for k, s in enumerate(specs) if s["kind"] == kind][:8]]
    pick = pick[: len(pick) // 8 * 8]
    if pick:
        rows = torch.cat([torch.cat([fake[pick[r:r + 8]], real[pick[r:r + 8]].cpu()]) for r in range(0, len(pick), 8)])
        save_grid(rows, args.out / "samples.png")
        (args.out / "samples.txt").write_text("".join(
            f"rows {2 * r // 8 + 1}-{2 * r // 8 + 2} (generated, then real):\n" + "".join(
                f"  {real_batch.captions[i]!r}\n" for i in pick[r:r + 8]) for r in range(0, len(pick), 8)))

    print(f"{'':22s}{'top1':>7s}{'top5':>7s}{'style':>7s}{'colour':>7s}{'n':>6s}")
    for who in ("generated", "real"):
        for kind, m in metrics[who].items():
            print(f"{who[:4]} {kind:17s}{m['top1']:7.3f}{m['top5']:7.3f}{m['style']:7.3f}{m['colour']:7.3f}{m['n']:6d}")
    for who, table in metrics["style_confusion"].items():
        print(f"{who[:4]} style asked -> judged " + "  ".join(
            f"{asked}: " + "/".join(str(n) for n in row.values()) for asked, row in table.items()) + f"  ({'/'.join(D.STYLES)})")

    def share(v: dict) -> str:
        return f"{'-' if v['style'] is None else format(v['style'], '.3f')} of {v['n']}"

    for who, split in metrics["style_by_subject"].items():
        print(f"{who[:4]} style where the subject is read (top 1): {share(split['subject_read'])}, "
              f"missed (not in top 5): {share(split['subject_missed'])}")
    print(f"diversity (gen/real, pixel): {metrics['diversity']['pixel_ratio']:.3f}  "
          f"(feature: {metrics['diversity']['feature_ratio']:.3f})")
    for k, (v, t, ok) in metrics["targets"].items():
        print(f"target {k}: {v:.3f} {'>=' if ok else '<'} {t}  {'PASS' if ok else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
