"""How a training process's OpenMP threads should wait, on a shared 2-core CPU, side by side.

    python bench/omp_wait.py                       # PASSIVE against a short spin (what training.train sets)
    python bench/omp_wait.py --policies OMP_WAIT_POLICY=PASSIVE GOMP_SPINCOUNT=10000 -

The trainer runs for hours at `nice -n 19` while other work (the tests, a web UI) goes on in
the foreground. How its OpenMP team waits between parallel regions matters twice:

- alone, a thread that sleeps at once (OMP_WAIT_POLICY=PASSIVE) must be woken for every one
  of the thousands of small parallel regions in a UNet step; a thread that spins a little
  first (GOMP_SPINCOUNT) is still there;
- beside a foreground job, a background that spins might keep the cores from it.

So two figures for each policy (an environment assignment for the child process; "-" is
libgomp's default, a spin of 300,000): the training step's samples/s alone, and the samples/s
of the same step in the foreground (nice 0, its own default policy) while the policy's process
trains at nice 19 beside it. Each is `bench/cpu_train_step.py` (text encoder + UNet + AdamW,
batch 32 of 16x16 latents) in a child process, policies interleaved round by round; the
ratios against the first policy are what to read. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

STEP = [sys.executable, str(Path(__file__).with_name("cpu_train_step.py")), "--variants", "fp32", "--loss-steps", "0"]
RATE = re.compile(r"fp32\s+([\d.]+) samples/s")


def env_for(policy: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy != "-":
        key, value = policy.split("=", 1)
        env[key] = value
    return env


def rate(args: list[str], env: dict[str, str]) -> float:
    out = subprocess.run(STEP + args, env=env, capture_output=True, text=True, check=True).stdout
    return float(RATE.search(out)[1])


def alone(policy: str, steps: int) -> float:
    return rate(["--rounds", "3", "--steps", str(steps)], env_for(policy))


def foreground_beside(policy: str, steps: int) -> float:
    """The foreground's samples/s (libgomp's default wait) while `policy` trains at nice 19."""
    background = subprocess.Popen(["nice", "-n", "19"] + STEP + ["--rounds", "1000", "--steps", "4"],
                                  env=env_for(policy), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(10)    # past its start-up and warm-up: training
        return rate(["--rounds", "3", "--steps", str(steps)], env_for("-"))
    finally:
        background.kill()
        background.wait()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policies", nargs="+", default=["OMP_WAIT_POLICY=PASSIVE", "GOMP_SPINCOUNT=10000"])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=4, help="timed steps a measurement")
    args = p.parse_args(argv)
    rates: dict[str, dict[str, list[float]]] = {"alone": {}, "foreground beside it": {}}
    for _ in range(args.rounds):
        for policy in args.policies:
            rates["alone"].setdefault(policy, []).append(alone(policy, args.steps))
            rates["foreground beside it"].setdefault(policy, []).append(foreground_beside(policy, args.steps))
    for what, by_policy in rates.items():
        print(f"{what}: samples/s (median of {args.rounds}), ratio to the first policy")
        base = statistics.median(by_policy[args.policies[0]])
        for policy, xs in by_policy.items():
            m = statistics.median(xs)
            print(f"  {policy:26s} {m:6.1f}  x{m / base:.2f}  ({', '.join(f'{x:.1f}' for x in xs)})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
