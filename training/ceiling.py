"""What a run's VAE lets a UNet draw, at each picture size: the judge's scores of real pictures
and of their VAE round trips.

    python -m training.ceiling training/runs/cpu4 --sizes 64 96 128 --out /tmp/ceiling

No UNet trained on a VAE draws better than that VAE's round trip of real pictures, so the
round trip's scores on the evaluation's own prompts are a ceiling for what a model of that size
can reach in `training.evaluate`, known before any UNet step. A smaller picture makes every
UNet step cheaper (12x12 latents at 96 px against 16x16 at 128 px); this says what it costs.

For each size: the held-out prompts of `training.evaluate` (`data.eval_prompts`, the same
seeds), rendered from the real sprites, scored by the run's cached judge (`run/eval`, trained
by `training.evaluate --judge-only`), then encoded and decoded by the run's VAE (with its
fine-tuned decoder when there is one) and scored again. The judge reads every picture at
64x64, whatever its size. --blur 64 48 32 adds a control: the same real pictures taken down to
that size and back up (area, then bilinear), scored alike; a round trip far below them loses
more than detail, and the judge is not what holds it back. Also written: <out>/round-trip-<px>.png, 16 real pictures over their
round trips, to look at.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from training import data as D
from training.common import log
from training.compare import open_run
from training.evaluate import save_grid, score, summarise
from training.monitor import GridJudge


@torch.no_grad()
def round_trip(vae, x: torch.Tensor, batch: int = 32) -> torch.Tensor:
    """x in [-1, 1] through the VAE's encoder (its mean, as the pool takes it) and decoder."""
    out = [vae.decode(vae.encode(x[k:k + batch]).latent_dist.mean).sample.clamp(-1, 1) for k in range(0, len(x), batch)]
    return torch.cat(out)


def blurred(x: torch.Tensor, px: int) -> torch.Tensor:
    """x taken down to px x px and back up to its own size: detail gone, nothing redrawn."""
    small = F.interpolate(x, size=px, mode="area")
    return F.interpolate(small, size=x.shape[-1], mode="bilinear", align_corners=False)


def ceiling(folder: Path, data: Path, sizes: list[int], out: Path | None, seed: int = 0,
            n_single: int = 600, n_combo: int = 150, n_pairs: int = 100, blur: tuple[int, ...] = (),
            judge_px: int | None = None) -> dict[int, dict]:
    """`judge_px`: use the judge trained on pictures of that size (default: the run's `judge_px`,
    else the model's size).
    Every judge reads at 64x64, so one trained at 128 px can score a 64 px model's round trips
    before a 64 px judge is trained; the real pictures' line says how well it reads them."""
    run = open_run(folder, data)
    jpx = judge_px or run.cfg.judge_px or run.size.image_size
    found = GridJudge.find(folder / "eval", run.cfg.vocabulary, jpx, len(run.pack.emoji), [])
    if found is None:
        raise SystemExit(f"{folder / 'eval'}: no judge for {jpx} px yet "
                         f"(python -m training.evaluate --judge-only --size {jpx} ...)")
    judge = found.judge
    vae = run.frozen_vae()
    sampler = D.Sampler(run.pack, run.split, seed, names=run.sampler.names)
    specs = D.eval_prompts(run.pack, run.split, seed, n_single, n_combo, n_pairs)
    batch = sampler.eval_batch(specs, seed=1)
    results = {}
    for px in sizes:
        t0 = time.time()
        real = run.renderer_at(px)(batch).float()
        back = round_trip(vae, real)
        real_s, back_s = summarise(score(judge, real, specs, batch), specs), summarise(score(judge, back, specs, batch), specs)
        results[px] = {"real": real_s["all"], "round_trip": back_s["all"], "l1": float((back - real).abs().mean()),
                       "kinds": {k: {"real": real_s[k], "round_trip": back_s[k]} for k in real_s if k != "all"},
                       "blurred": {b: summarise(score(judge, blurred(real, b), specs, batch), specs)["all"] for b in blur}}
        log(f"{px} px: {len(specs)} prompts in {time.time() - t0:.0f} s")
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            save_grid(torch.cat([real[:8], back[:8], real[8:16], back[8:16]]), out / f"round-trip-{px}.png")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ceiling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder with a VAE checkpoint and a cached judge in eval/")
    p.add_argument("--data", type=Path, default=Path("training/build/data"))
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    p.add_argument("--out", type=Path, default=None, help="folder for round-trip-<px>.png")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    p.add_argument("--blur", type=int, nargs="*", default=[], help="control: real pictures taken down to these sizes and back")
    p.add_argument("--judge-px", type=int, default=None,
                   help="score with the judge trained at this picture size (default: the run's judge_px, else the model's "
                        "size; every judge reads at 64x64)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = ceiling(args.run, args.data, args.sizes, args.out, blur=tuple(args.blur), judge_px=args.judge_px)
    def row(px: int, who: str, m: dict, tail: str = "") -> None:
        print(f"{px:4d} {who:10s}{m['top1']:7.3f}{m['top5']:7.3f}{m['style']:7.3f}{m['colour']:7.3f}{tail}")

    print(f"{'px':>4s} {'':10s}{'top1':>7s}{'top5':>7s}{'style':>7s}{'colour':>7s}   L1")
    for px, r in results.items():
        row(px, "real", r["real"])
        row(px, "round_trip", r["round_trip"], f"{r['l1']:7.3f}")
        for b, m in r["blurred"].items():
            row(px, f"real @{b}", m)
    for px, r in results.items():   # where the round trip loses it: the evaluation's kinds of prompt
        for kind, k in r["kinds"].items():
            m = k["round_trip"]
            print(f"{px:4d} round trip, {kind} (n {m['n']}): top5 {m['top5']:.3f} style {m['style']:.3f} "
                  f"(real {k['real']['top5']:.3f} / {k['real']['style']:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
