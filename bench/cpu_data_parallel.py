"""Would the 2-core trainer go faster as two processes of one thread than as one of two threads?

    python bench/cpu_data_parallel.py                    # 3 rounds of 6 steps, and the loss check
    python bench/cpu_data_parallel.py --rounds 5 --steps 8 --loss-steps 0

The step is bench/cpu_train_step.py's (text encoder + UNet forward and backward, AdamW, batch 32
of 16x16x4 latents, random weights). Three ways to spend the cores, in alternating rounds so a
noisy neighbour slows them alike:

- "1 x N threads": the trainer as it is, one process, global batch 32;
- "N x 1 thread, synced": data parallel, N spawned processes each take every N-th row of the
  same batch and average their gradients in one gloo all-reduce before AdamW (the same step,
  split; the loss check says it trains the same);
- "N x 1 thread, apart": N processes training their own batch of 32 with no exchange at all
  (two A/B arms side by side): the most N processes can take, not one model's speed.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench.cpu_train_step import batches, build, print_rates, step  # noqa: E402
from training import model as M  # noqa: E402


def synced_step(text, unet, params, opt, acp, b, buf, rank: int, world: int) -> float:
    z, ids, noise, t = (x[rank::world] for x in b)
    noisy, target = M.v_pair(z, noise, t, acp)
    loss = F.mse_loss(unet(noisy, t, encoder_hidden_states=text(ids)[0]).sample.float(), target)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    flat = buf[:sum(g.numel() for g in grads) + 1]    # the same parameters lack a gradient on every rank
    torch.cat([g.reshape(-1) for g in grads] + [loss.detach().reshape(1)], out=flat)
    dist.all_reduce(flat)
    flat.div_(world)
    k = 0
    for g in grads:
        g.copy_(flat[k:k + g.numel()].view_as(g))
        k += g.numel()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return flat[-1].item()


def _rank(rank: int, world: int, port: int, synced: bool, steps: int, batch: int, out: str, loss_steps: int) -> None:
    torch.set_num_threads(1)
    acp = M.scheduler().alphas_cumprod
    if synced:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(minutes=30))
    model = build(0, "fp32")
    buf = torch.zeros(sum(p.numel() for p in model[2]) + 1)
    data = batches(steps, batch, 1 + (0 if synced else rank))

    def one(b) -> float:
        return synced_step(*model, acp, b, buf, rank, world) if synced else step(*model, acp, b, "fp32")

    one(data[0])
    one(data[0])                                          # warm-up
    if synced:
        dist.barrier()
    t0 = time.perf_counter()
    for b in data:
        one(b)
    rate = batch * steps / (time.perf_counter() - t0)     # the global batch (synced) or this process's own
    loss = 0.0
    if loss_steps and synced:
        model = build(0, "fp32")
        losses = [one(b) for b in batches(loss_steps, batch, 2)]
        loss = statistics.mean(losses[-10:])
    Path(f"{out}.{rank}").write_text(f"{rate} {loss}")
    if synced:
        dist.destroy_process_group()


def spawned(world: int, synced: bool, steps: int, batch: int, loss_steps: int) -> tuple[float, float]:
    """(samples/s, loss) of `world` spawned one-thread processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/r"
        mp.spawn(_rank, args=(world, port, synced, steps, batch, out, loss_steps), nprocs=world, join=True)
        rows = [tuple(map(float, Path(f"{out}.{r}").read_text().split())) for r in range(world)]
    rate = rows[0][0] if synced else sum(r[0] for r in rows)
    return rate, rows[0][1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--procs", type=int, default=2, help="processes (and threads of the single process)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps per arm per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--loss-steps", type=int, default=20, help="steps on fixed batches to compare the losses")
    args = p.parse_args(argv)
    if args.batch % args.procs:
        p.error(f"--batch {args.batch} must split evenly over --procs {args.procs}")
    torch.set_num_threads(args.procs)
    acp = M.scheduler().alphas_cumprod
    model = build(0, "fp32")
    data = batches(args.steps, args.batch, 1)
    step(*model, acp, data[0], "fp32")
    step(*model, acp, data[0], "fp32")
    arms = {f"1 x {args.procs} threads": [], f"{args.procs} x 1 thread, synced": [], f"{args.procs} x 1 thread, apart": []}
    names = list(arms)
    loss_synced = 0.0
    for r in range(args.rounds):
        t0 = time.perf_counter()
        for b in data:
            step(*model, acp, b, "fp32")
        arms[names[0]].append(args.batch * args.steps / (time.perf_counter() - t0))
        rate, loss = spawned(args.procs, True, args.steps, args.batch, args.loss_steps if r == 0 else 0)
        arms[names[1]].append(rate)
        loss_synced = loss if r == 0 else loss_synced
        arms[names[2]].append(spawned(args.procs, False, args.steps, args.batch, 0)[0])
    print(f"batch {args.batch} a step, {args.rounds} rounds of {args.steps} steps; samples/s (median)")
    print_rates(arms, width=24)
    if args.loss_steps:
        m = build(0, "fp32")
        losses = [step(*m, acp, x, "fp32") for x in batches(args.loss_steps, args.batch, 2)]
        print(f"loss after {args.loss_steps} steps from the same weights on the same batches (mean of the last 10): "
              f"1 process {statistics.mean(losses[-10:]):.4f}, {args.procs} synced processes {loss_synced:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
