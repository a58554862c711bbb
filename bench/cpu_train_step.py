"""Training speed of the default model's text encoder + UNet on this CPU, side by side.

    python bench/cpu_train_step.py                       # fp32 against bf16 autocast, 2 threads
    python bench/cpu_train_step.py --variants fp32,bf16,bf16-cl --rounds 3
    python bench/cpu_train_step.py --variants fp32,fp32-l12 --loss-steps 0    # 128 px against 96 px
    python bench/cpu_train_step.py --variants fp32,fp32-fine --loss-steps 0   # the caption heard at 16x16 too

One optimizer step as training.train takes it from the latent pool (text encoder
forward, UNet forward and backward, AdamW), batch 32 of 16x16x4 latents (128 px), random
weights. Variants are timed in interleaved rounds, so a noisy neighbour slows them all
alike; the ratios against the first variant are what to read. A variant is only worth
taking if it trains as well: this prints the loss each reaches on the same fixed batches,
which must agree to a few percent.

Variants: fp32 (what the trainer does on CPU), bf16 (torch.autocast("cpu", bfloat16):
matmuls and convolutions in bfloat16 on CPUs with AVX512-BF16 or AMX, weights, optimizer
and loss in fp32), cl suffix (channels_last memory format for the UNet), lN suffix (N x N
latents instead of 16 x 16: l12 is a 96 px model, l8 a 64 px one), fine suffix (the UNet with
cross-attention in its finest up block too: `model.unet_config`'s `fine_text`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training import model as M  # noqa: E402


def parse(variant: str) -> tuple[str, bool, bool]:
    """'bf16-cl-compile' -> (dtype, channels_last, compile)."""
    parts = variant.split("-")
    return parts[0], "cl" in parts, "compile" in parts


def latent_side(variant: str) -> int:
    """'fp32-l12' -> 12 (a 96 px model's latents); 16, the default model's, without it."""
    return next((int(part[1:]) for part in variant.split("-") if part[:1] == "l" and part[1:].isdigit()), 16)


def build(seed: int, variant: str):
    _, channels_last, compile_ = parse(variant)
    torch.manual_seed(seed)
    size = M.SIZES["default"]
    text = M.build_text_encoder(size, 4096, 0, 1, 1)
    unet = M.build_unet(size, fine_text="fine" in variant.split("-"))
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    params = list(text.parameters()) + list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=2e-4, betas=(0.9, 0.99), weight_decay=0.01)
    if compile_:
        text, unet = torch.compile(text), torch.compile(unet)
    return text, unet, params, opt


def batches(n: int, batch: int, seed: int, side: int = 16):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        z = torch.randn(batch, 4, side, side, generator=g)
        ids = torch.randint(2, 4096, (batch, 48), generator=g)
        noise = torch.randn(batch, 4, side, side, generator=g)
        t = torch.randint(0, 1000, (batch,), generator=g)
        out.append((z, ids, noise, t))
    return out


def step(text, unet, params, opt, acp, b, variant: str) -> float:
    dtype, channels_last, _ = parse(variant)
    z, ids, noise, t = b
    noisy, target = M.v_pair(z, noise, t, acp)
    if channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
        h = text(ids)[0]
        pred = unet(noisy, t, encoder_hidden_states=h).sample
    loss = F.mse_loss(pred.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()


def print_rates(rates: dict[str, list[float]], width: int = 14) -> None:
    """One line per arm: its median samples/s, the ratio to the first arm's, and every round."""
    base = statistics.median(next(iter(rates.values())))
    for n, xs in rates.items():
        m = statistics.median(xs)
        print(f"  {n:{width}s} {m:6.1f} samples/s  x{m / base:.2f}  (rounds: {', '.join(f'{x:.1f}' for x in xs)})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", default="fp32,bf16")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loss-steps", type=int, default=30, help="steps on fixed batches to compare the losses")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = args.variants.split(",")
    acp = M.scheduler().alphas_cumprod
    models = {n: build(0, n) for n in names}
    data = {n: batches(args.steps, args.batch, 1, latent_side(n)) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for n in names:                                   # warm-up (oneDNN picks kernels on first use)
        step(*models[n], acp, data[n][0], n)
        step(*models[n], acp, data[n][0], n)
    for _ in range(args.rounds):
        for n in names:
            t0 = time.perf_counter()
            for b in data[n]:
                step(*models[n], acp, b, n)
            times[n].append(args.batch * args.steps / (time.perf_counter() - t0))
    print(f"batch {args.batch}, {args.threads} threads, {args.rounds} rounds of {args.steps} steps; samples/s (median)")
    print_rates(times)
    if args.loss_steps:
        print(f"loss after {args.loss_steps} steps from the same weights on the same batches (mean of the last 10):")
        for n in names:
            m = build(0, n)
            losses = [step(*m, acp, b, n) for b in batches(args.loss_steps, args.batch, 2, latent_side(n))]
            print(f"  {n:14s} {statistics.mean(losses[-10:]):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
