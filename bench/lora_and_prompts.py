"""What LoRA and prompt weights cost per image on this CPU, next to a plain prompt, same run.

    .venv/bin/python bench/lora_and_prompts.py                  # the default model's architecture (random weights)
    .venv/bin/python bench/lora_and_prompts.py --repeats 5 --steps 20 --threads 2

Cases, interleaved run by run so a noisy machine affects all alike:
  plain      "cat face, 3d style"
  lora       the same with one rank-4 LoRA at 0.8 (adapters stay active: peft adds a small matmul per layer)
  2 loras    alternating two LoRAs image by image (set_adapters on every switch)
  weighted   "(cat face:1.3), [3d style]" (compel instead of the pipeline's encoder)
  long       a prompt of two text-encoder windows (two encoder passes, twice the cross-attention context)
Prints seconds per image (min-med-max) and each case's median over plain's. Not a test: no thresholds.
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (2 = the CI machine)")
    args = ap.parse_args()

    import torch

    from bench.default_model_speed import build_pipeline
    from core.generator import Generator
    from core.loader import load_model
    from core.lora import LoraLibrary
    from core.request import GenerationRequest
    from tests.lora_fixture import make_lora
    from training.model import ModelSize

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp())
    folder = tmp / "default-arch"
    build_pipeline(ModelSize()).save_pretrained(folder, safe_serialization=True)
    for name, seed in (("a", 1), ("b", 2)):
        make_lora(folder, tmp / "loras" / f"{name}.safetensors", seed=seed)
    model = load_model(str(folder), device="cpu")
    gen = Generator(model)
    library = LoraLibrary(tmp / "loras", model)
    gen.loras.library = library
    room = gen.prompts.window - 2
    long = ", ".join(["cat face, 3d style on a blue background"] * (room // 8 + 2))
    cases = {"plain": ["cat face, 3d style"], "lora": ["cat face, 3d style <lora:a:0.8>"],
             "2 loras": ["cat face, 3d style <lora:a:0.8>", "cat face, 3d style <lora:b:0.8>"],
             "weighted": ["(cat face:1.3), [3d style]"], "long": [long]}
    times: dict[str, list[float]] = {k: [] for k in cases}

    def one(prompt: str) -> float:
        req = library.resolve(GenerationRequest(prompt, seed=1, steps=args.steps).resolve(model.limits))
        t = time.perf_counter()
        gen.generate(req)
        return time.perf_counter() - t

    for prompts in cases.values():  # warm-up: adapters loaded, compel built
        for p in prompts:
            one(p)
    for r in range(args.repeats):
        for name, prompts in cases.items():
            times[name].append(one(prompts[r % len(prompts)]))

    base = statistics.median(times["plain"])
    print(f"default model architecture, {model.limits.native_size} px, {args.steps} steps, guidance 7, "
          f"{args.threads} threads, {args.repeats} interleaved repeats; window {gen.prompts.window} tokens, "
          f"long prompt {gen.prompts.tokens(long, 'a1111')} tokens in {gen.prompts.chunks(long)} chunks")
    print(f"{'case':<10} {'s/img (min-med-max)':>22} {'vs plain':>9}")
    for name, xs in times.items():
        med = statistics.median(xs)
        print(f"{name:<10} {min(xs):>6.3f}-{med:.3f}-{max(xs):.3f} {med / base:>9.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
