"""CPU speed of the default model's architecture, with random weights.

    python bench/default_model_speed.py                 # the shipped size, 2 threads
    python bench/default_model_speed.py --unet 96,192,192 --threads 2
    python bench/default_model_speed.py --pooled-text   # plain and pooled_text UNets side by side
    python bench/default_model_speed.py --size f4       # another training.model size (f4: 64 px, the same UNet)
    python bench/default_model_speed.py --model models/default      # a trained folder

Prints seconds per image for 20 steps with classifier-free guidance at the size's pictures (128x128) through
diffusers' StableDiffusionPipeline (text encoder + 40 UNet evaluations in 20 batched
calls + VAE decode), plus parameter counts and fp16 weight sizes. Random weights run
exactly as fast as trained ones, so this needs no trained model. The budget is 1.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402

from training import model as M  # noqa: E402
from training.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402


def _ints(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(","))


def build_pipeline(size: M.ModelSize, vocab_size: int = 4096, pooled_text: bool = False) -> StableDiffusionPipeline:
    tok_dir = Path(tempfile.mkdtemp(prefix="statuary-bench-tok-"))
    words = "a cat and a pizza small large in the top left right bottom center flat 3d cartoon style on blue red green background".split()
    train_tokenizer([" ".join(words[i:] + words[:i]) for i in range(len(words))] * 4, tok_dir, vocab_size=600,
                    max_tokens=size.max_tokens)
    tok = load_tokenizer(tok_dir)
    torch.manual_seed(0)
    text = M.build_text_encoder(size, vocab_size, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    pipe = StableDiffusionPipeline(
        vae=M.build_vae(size), text_encoder=text, tokenizer=tok, unet=M.build_unet(size, pooled_text),
        scheduler=M.inference_scheduler(), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--size", default="default", choices=sorted(k for k in M.SIZES if k != "smoke"),
                   help="the training.model size to start from (the options below change it)")
    p.add_argument("--unet", type=_ints, help="UNet block_out_channels, e.g. 128,256,256")
    p.add_argument("--unet-layers", type=int)
    p.add_argument("--text-width", type=int)
    p.add_argument("--text-layers", type=int)
    p.add_argument("--pooled-text", action="store_true",
                   help="also time the UNet that reads the caption through its timestep embedding too "
                        "(training.model.unet_config), interleaved with the plain one, and print the ratio")
    p.add_argument("--model", type=Path, help="time a saved diffusers folder instead of random weights")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    size = M.SIZES[args.size]
    if args.unet:
        size = replace(size, unet_channels=args.unet, unet_attn_levels=(False,) + (True,) * (len(args.unet) - 1))
    if args.unet_layers:
        size = replace(size, unet_layers=args.unet_layers)
    if args.text_width:
        size = replace(size, text_width=args.text_width)
    if args.text_layers:
        size = replace(size, text_layers=args.text_layers)
    if args.model:
        pipe = StableDiffusionPipeline.from_pretrained(str(args.model))
        pipe.set_progress_bar_config(disable=True)
        size = replace(size, image_size=pipe.unet.config.sample_size * pipe.vae_scale_factor)
    else:
        pipe = build_pipeline(size)
    pipes = {str(args.model) if args.model else "plain": pipe}
    if args.pooled_text and not args.model:
        pipes["pooled_text"] = build_pipeline(size, pooled_text=True)

    for label, pipe in pipes.items():
        for name in ("vae", "text_encoder", "unet"):
            n = M.n_params(getattr(pipe, name))
            print(f"{label:12s} {name:13s} {n / 1e6:6.2f} M params  {n * 2 / 2**20:6.1f} MiB fp16")

    def one(pipe, seed: int) -> float:
        g = torch.Generator().manual_seed(seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            pipe("a small cat in the top left, flat style, on a blue background",
                 num_inference_steps=args.steps, guidance_scale=args.guidance,
                 height=size.image_size, width=size.image_size, generator=g, output_type="np")
        return time.perf_counter() - t0

    times: dict[str, list[float]] = {label: [] for label in pipes}
    for pipe in pipes.values():
        one(pipe, 0)  # warm-up: first call allocates and picks kernels
    for i in range(args.repeats):     # interleaved, so a busy machine slows each alike
        for label, pipe in pipes.items():
            times[label].append(one(pipe, i + 1))
    print(f"size: {size}")
    for label, ts in times.items():
        print(f"{label}: threads={args.threads} steps={args.steps} guidance={args.guidance} {size.image_size}x{size.image_size}: "
              f"median {statistics.median(ts):.3f} s/image (runs: {', '.join(f'{t:.3f}' for t in ts)}); budget 1.5 s")
    if "pooled_text" in times:
        ratios = [b / a for a, b in zip(times["plain"], times["pooled_text"])]
        print(f"pooled_text / plain, run by run: median {statistics.median(ratios):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
