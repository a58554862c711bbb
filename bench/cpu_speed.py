"""Seconds per image on this CPU: Statuary's generator next to plain diffusers, same model, same run.

    .venv/bin/python bench/cpu_speed.py                 # the tiny test-size model and the default model
                                                        # (its architecture with random weights until it ships)
    .venv/bin/python bench/cpu_speed.py --model PATH    # any model folder or .safetensors file
    .venv/bin/python bench/cpu_speed.py --threads 2 --steps 20 --repeats 5

Prints the median and spread of seconds per image (20 steps, guidance 7, DPM++ 2M) for
(a) diffusers' StableDiffusionPipeline and (b) Statuary's Generator, interleaved run by run so
that a noisy machine affects both alike, and the ratio (b)/(a). Not a test: no thresholds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def bench(spec: str, steps: int, repeats: int, prompt: str) -> dict:
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from core.generator import Generator
    from core.loader import load_model
    from core.request import GenerationRequest

    model = load_model(spec, device="cpu")
    gen = Generator(model)
    pipe = model.pipeline
    pipe.set_progress_bar_config(disable=True)
    # DPM++ 2M without Karras sigmas: diffusers' own pipeline runs off the end of the Karras
    # sigmas on a zero-terminal-SNR schedule like the default model's (our loop does not).
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(model.scheduler_config, algorithm_type="dpmsolver++")
    size = model.limits.native_size
    request = GenerationRequest(prompt, seed=1, steps=steps, guidance=7.0, sampler="dpmpp_2m").resolve(model.limits)

    def run_diffusers():
        pipe(prompt, num_inference_steps=steps, guidance_scale=7.0, height=size, width=size,
             generator=torch.Generator().manual_seed(1))

    def run_statuary():
        gen.generate(request)

    run_diffusers(), run_statuary()  # warm-up
    a, b = [], []
    for _ in range(repeats):
        for fn, out in ((run_diffusers, a), (run_statuary, b)):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
    return {"model": model.model_id, "size": size, "a": a, "b": b}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="model to time (repeatable); default: tiny + default")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (2 = the CI machine)")
    ap.add_argument("--prompt", default="cat face, 3d style")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    specs = args.model
    if not specs:
        from tests.tiny_model import build_tiny_model

        specs = [str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny-sd"))]
        if (ROOT / "models" / "default" / "model_index.json").is_file():
            specs.append(str(ROOT / "models" / "default"))
        else:
            # Random weights run exactly as fast as trained ones: time the default model's architecture.
            from bench.default_model_speed import build_pipeline
            from training.model import ModelSize

            folder = Path(tempfile.mkdtemp()) / "default-arch"
            build_pipeline(ModelSize()).save_pretrained(folder, safe_serialization=True)
            specs.append(str(folder))
            print("(models/default has no weights yet: its architecture is timed with random weights)")
    print(f"{'model':<12} {'size':>5} {'diffusers s/img (min-med-max)':>30} {'statuary s/img (min-med-max)':>30} {'ratio':>6}")
    for spec in specs:
        r = bench(spec, args.steps, args.repeats, args.prompt)

        def fmt(xs):
            return f"{min(xs):.3f}-{statistics.median(xs):.3f}-{max(xs):.3f}"

        ratio = statistics.median(r["b"]) / statistics.median(r["a"])
        print(f"{r['model'][:12]:<12} {r['size']:>5} {fmt(r['a']):>30} {fmt(r['b']):>30} {ratio:>6.2f}")
    print(f"({args.steps} steps, guidance 7, DPM++ 2M, {args.threads} threads, {args.repeats} interleaved repeats)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
