"""Measure UNet checkpoints side by side: which recipe learns the words faster?

    python -m training.compare training/runs/cpu2 training/runs/cpu2-lr            # their checkpoints now
    python -m training.compare training/runs/cpu2/fork-6600/unet.safetensors ... --grid --out /tmp/ab

A lever is tried as an A/B: two run folders forked from one checkpoint, each trained to the
same step (`training.train --stop-at`), then measured here on the same pictures with the same
noise. For each checkpoint, raw and EMA weights (the EMA's are what ships):

- the word gain (`monitor.WordGain`) on --pictures single-emoji pool pictures: how much the
  right subject name / style word lowers the loss against another one, at t = 400/600/800;
- the v-loss on the same pictures with their own captions at t = 200/500/800 (fixed noise):
  everything the model has learned, background colours and places included;
- the text encoder's separation of the subjects (`monitor.TextSeparation`): the cosine from
  each subject to its nearest other (median; lower is better), and how often an emoji's other
  names are nearest its own first name;
- with --grid, the 40-subject grid of the EMA weights, judged by the run's cached judge, and
  written to --out as <name>-<step>.png to look at. One grid is one seed a picture, and two
  seed sets of the same weights have read 5 and 11 of 120: --grid-seeds N draws N and adds
  them up. --guidance 5 7 10 14 draws it at each scale (the trainer's grid uses 5): how a
  model folder's defaults.json is chosen. With the grid, at each scale, 44 pictures asked for
  the 11 background colours, read as the evaluation reads them (`monitor.background_colour`),
  and 32 asking for a small subject in each corner (`monitor.placement`).
  --grid-only skips everything but the grid;
- with --finish, pool pictures noised to t = 300/500/700/999 and finished by the EMA weights
  (<name>-<step>-finish.png): where in the noise range the model has learned to draw;
- with --fresh, the word gain and v-loss of the EMA weights on as many fresh compositions,
  drawn like the pool's but never trained on: a gap to the pool's row says the model is
  learning the pool by heart rather than the words.

It reads run folders without writing to them, so runs may go on training meanwhile (a
checkpoint is replaced atomically; the one read is the one named in the table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import tempfile
from pathlib import Path

import torch

from training import model as M
from training.monitor import (TextSeparation, WordGain, background_colour, ema_weights, finish_from_noise, placement,
                              sample_grid)
from training.batches import _encoder
from training.common import load_checkpoint, unprefixed
from training.train import Config, Run

LOSS_STEPS = (200, 500, 800)
FRESH_SEED = 77_000_000   # pool chunks are drawn at train.POOL_SEED + k; fresh pictures far from them
GRID_SEED_STRIDE = 1000   # --grid-seeds: seed set k draws its pictures at k * this + their place in the grid


def checkpoint_of(arg: Path) -> tuple[Path, Path]:
    """(run folder, checkpoint file) for a run folder or a unet.safetensors inside (or below) one."""
    if arg.is_dir():
        return arg, arg / "unet.safetensors"
    folder = arg.parent
    while not (folder / "config.json").exists():
        if folder == folder.parent:
            raise SystemExit(f"{arg}: no run folder (config.json) above this checkpoint")
        folder = folder.parent
    return folder, arg


def open_run(folder: Path, data: Path) -> Run:
    return Run(Config.of_run(folder), data, folder, "cpu", write_config=False)


def measure(arg: Path, data: Path, n: int, grid: bool, out: Path | None, finish: bool = False,
            fresh: bool = False, grid_seeds: int = 1, guidances: tuple[float, ...] = (5.0,),
            grid_only: bool = False) -> dict:
    folder, ckpt = checkpoint_of(arg)
    if not ckpt.exists():
        raise SystemExit(f"{ckpt}: no UNet checkpoint")
    run = open_run(folder, data)
    # Copy first: the trainer may replace the file while we read it.
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "unet.safetensors"
        shutil.copy(ckpt, local)
        shutil.copy(ckpt.with_suffix(".json"), local.with_suffix(".json"))
        flat, info = load_checkpoint(local)
    tok = run.tokenizer()
    vae = run.frozen_vae()
    sf = info["latent_scale"]
    vae.register_to_config(scaling_factor=sf)     # the grids' pipelines decode latents / sf, as the export's
    text, unet = run.build_denoiser(tok)
    text.load_state_dict(unprefixed("text", flat))
    unet.load_state_dict(unprefixed("unet", flat))
    text.eval(), unet.eval()
    params = list(text.parameters()) + list(unet.parameters())
    ema_sd = unprefixed("ema", flat)
    ema = [ema_sd[str(i)] for i in range(len(params))]
    row = {"checkpoint": str(ckpt), "step": info["step"], "lr": run.cfg.lr, "text_lr": run.cfg.text_lr}
    if grid_only:
        with ema_weights(params, ema):
            row["grids"] = grids(run, text, unet, vae, tok, folder, info["step"], out, grid_seeds, guidances)
        return row
    pool = run.latent_pool(vae, tok, float("inf"))
    words = WordGain(pool, sf, tok, run.learned_names(), "cpu", run.cfg.seed, n=n)
    if fresh:   # a quarter of compositions are pairs, which the word gain skips
        new = run.compose_latents(run.pool_sampler(), FRESH_SEED, n * 3 // 2 + 32, vae, _encoder(tok))
        fresh_words = WordGain(new, sf, tok, run.learned_names(), "cpu", run.cfg.seed, n=n)
    separation = TextSeparation(tok, run.learned_names(), "cpu")
    acp = M.scheduler().alphas_cumprod
    row["pictures"] = len(words.z)
    for name in ("raw", "EMA"):
        ctx = ema_weights(params, ema) if name == "EMA" else contextlib.nullcontext()
        with ctx:
            row[name] = words.measure(text, unet, acp, loss_steps=LOSS_STEPS)
            row[name]["text"] = separation.measure(text)
            if fresh and name == "EMA":
                row["EMA, fresh"] = fresh_words.measure(text, unet, acp, loss_steps=LOSS_STEPS)
            if finish and name == "EMA":
                out.mkdir(parents=True, exist_ok=True)
                finish_from_noise(text, unet, vae, tok, pool, sf, out / f"{folder.name}-{info['step']}-finish.png")
            if grid and name == "EMA":
                row["grids"] = grids(run, text, unet, vae, tok, folder, info["step"], out, grid_seeds, guidances)
    return row


def grids(run: Run, text, unet, vae, tok, folder: Path, step: int, out: Path | None, seed_sets: int,
          guidances: tuple[float, ...]) -> dict[str, dict | None]:
    """The 40-subject grid at each guidance scale, `seed_sets` seed sets each, judged and added up,
    with the background colour and place probes' counts at that scale (None where the run has no cached
    judge). Keyed by the scale as text ("5", "7.5"), for JSON."""
    judge, found = run.grid_judge(), {}
    for guidance in guidances:
        scores = []
        for k in range(seed_sets):
            with tempfile.TemporaryDirectory() as tmp:
                pictures = sample_grid(text, unet, vae, tok, run.px, run.vae_factor(), Path(tmp), step,
                                       seed0=GRID_SEED_STRIDE * k, guidance=guidance)
                if out is not None:
                    out.mkdir(parents=True, exist_ok=True)
                    suffix = (f"-seeds{k}" if k else "") + (f"-g{guidance:g}" if guidances != (5.0,) else "")
                    shutil.copy(Path(tmp) / "samples.png", out / f"{folder.name}-{step}{suffix}.png")
            if judge is not None:
                scores.append(judge(pictures))
        if judge is None:
            found[f"{guidance:g}"] = None
            continue
        background = background_colour(text, unet, vae, tok, run.px, run.vae_factor(), guidance)
        place = placement(text, unet, vae, tok, run.px, run.vae_factor(), guidance)
        found[f"{guidance:g}"] = {
            "seed_sets": len(scores), "pictures": sum(sc["pictures"] for sc in scores),
            **{key: sum(sc[key] for sc in scores) for key in ("top5", "top1", "style")},
            "background": background["right"], "background_pictures": background["pictures"],
            "place": place["right"], "place_pictures": place["pictures"]}
    return found


def judged(grids: dict[str, dict | None] | None) -> str:
    """The grid column: "top 5 / style of pictures, background and place right of asked", per guidance scale
    when not only the trainer's 5."""
    if not grids:
        return ""
    said = {k: f"{g['top5']} / {g['style']} of {g['pictures']}, background {g['background']} of {g['background_pictures']}, "
               f"place {g['place']} of {g['place_pictures']}" if g else "no judge cached" for k, g in grids.items()}
    if list(said) == ["5"]:
        return said["5"]
    return "; ".join(f"guidance {k}: {text}" for k, text in said.items())


def table(rows: list[dict]) -> str:
    pct = "/".join
    lines = ["| checkpoint | step | lr (text) | weights | subject gain t=400/600/800 | style gain | "
             "own-caption v-loss t=200/500/800 | text: nearest subject / aliases | grid: top 5 / style |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['checkpoint']} | {r['step']} | {r['lr']:g} ({r['text_lr']:g}) |"
        names = [k for k in ("raw", "EMA", "EMA, fresh") if k in r]
        if not names:   # --grid-only
            lines.append(f"{head} EMA | | | | | {judged(r.get('grids'))} |")
        for name in names:
            m = r[name]
            sep = f"{m['text']['nearest']:.3f} / {m['text']['aliases']:.0%}" if "text" in m else ""
            lines.append(
                f"{head} {name} | "
                f"{pct(f'{100 * x:.1f}%' for x in m['subject'])} | {pct(f'{100 * x:.1f}%' for x in m['style'])} | "
                f"{pct(f'{x:.4f}' for x in m['loss'])} | {sep} | {judged(r.get('grids')) if name == 'EMA' else ''} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoints", nargs="+", type=Path, help="run folders or unet.safetensors files")
    p.add_argument("--data", type=Path, default=Path("training/build/data"))
    p.add_argument("--pictures", type=int, default=384, help="single-emoji pool pictures for the word gain")
    p.add_argument("--grid", action="store_true", help="also draw and judge the 40-subject grid (EMA weights)")
    p.add_argument("--grid-seeds", type=int, default=1, help="with --grid: this many seed sets, judged and added up")
    p.add_argument("--guidance", type=float, nargs="+", default=[5.0],
                   help="with --grid: draw and judge the grid at each of these guidance scales (default 5, the trainer's)")
    p.add_argument("--grid-only", action="store_true", help="only the grid (implies --grid): no word gain, no text probe")
    p.add_argument("--finish", action="store_true",
                   help="also write <run>-<step>-finish.png to --out: pool pictures noised to t = 300/500/700/999 "
                        "and finished by the EMA weights (monitor.finish_from_noise)")
    p.add_argument("--fresh", action="store_true",
                   help="also measure the EMA weights on as many fresh compositions, never trained on")
    p.add_argument("--out", type=Path, default=None, help="where to write the grids and --finish pictures")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.finish and args.out is None:
        p.error("--finish writes pictures: give --out")
    rows = [measure(c, args.data, args.pictures, args.grid or args.grid_only, args.out, args.finish, args.fresh,
                    args.grid_seeds, tuple(args.guidance), args.grid_only)
            for c in args.checkpoints]
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
