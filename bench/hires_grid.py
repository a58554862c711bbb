"""What the hires fix does for a model: a grid to look at, and its cost, side by side in one run.

    .venv/bin/python bench/hires_grid.py --model models/default --out hires-grid.png
    .venv/bin/python bench/hires_grid.py --model PATH --prompts "cat face, 3d style" "a red apple" --seeds 1 2 3

For every prompt and seed, one row of four pictures made by Statuary's own job service:

    base (native size) | straight at 2x the size | hires 2x, lanczos | hires 2x, latent

written to --out as one PNG (each picture scaled to the larger size, nearest-neighbour, so
nothing is smoothed over), and the seconds per picture of each column with their ratio to the
base. Whether the hires fix *helps* is the look of the grid, judged by a person; the verdict and
the chosen settings go into the model folder's hires.json (see core/hires.py and the README),
with the grid's command line in its "note".
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from core.generator import Generator  # noqa: E402
from core.hires import Hires  # noqa: E402
from core.jobs import Owner  # noqa: E402
from core.loader import load_model  # noqa: E402
from core.request import GenerationRequest  # noqa: E402
from core.service import InProcessJobService  # noqa: E402

COLUMNS = ("base", "straight 2x", "hires 2x lanczos", "hires 2x latent")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a model folder or .safetensors file")
    ap.add_argument("--prompts", nargs="+", default=["cat face, 3d style", "a red apple, flat style"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--hires-steps", type=int, default=20)
    ap.add_argument("--strength", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="hires-grid.png")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu", max_side=0)
    service = InProcessJobService(Generator(model), None, preview_frames=0)
    native = model.limits.native_size
    big = min(2 * native, model.limits.max_side)
    print(f"model {model.model_id} ({model.sha256[:10]}), native {native} px, larger {big} px, "
          f"{args.steps} + {args.hires_steps} steps, strength {args.strength}, cpu, {args.threads} threads")
    owner = Owner("cli", "bench")
    seconds: dict[str, list[float]] = {c: [] for c in COLUMNS}
    rows = []
    try:
        # warm-up at both sizes (first calls allocate and pick kernels): not timed
        for side in (native, big):
            service.submit(GenerationRequest("warm up", seed=0, steps=2, width=side, height=side), owner).result()
        for prompt in args.prompts:
            for seed in args.seeds:
                base = GenerationRequest(prompt, seed=seed, steps=args.steps, width=native, height=native)
                hires = Hires(scale=big / native, steps=args.hires_steps, strength=args.strength)
                requests = (base, dataclasses.replace(base, width=big, height=big),
                            dataclasses.replace(base, hires=hires),
                            dataclasses.replace(base, hires=dataclasses.replace(hires, upscaler="latent")))
                row = []
                for column, request in zip(COLUMNS, requests):  # interleaved: the same load on each
                    start = time.perf_counter()
                    image = service.submit(request, owner).result().images[0].image
                    seconds[column].append(time.perf_counter() - start)
                    row.append(image.resize((big, big), Image.Resampling.NEAREST))
                rows.append(row)
    finally:
        service.close()
    grid = Image.new("RGB", (big * len(COLUMNS), big * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image.convert("RGB"), (c * big, r * big))
    grid.save(args.out)
    base = statistics.median(seconds["base"])
    print(f"{'column':<18} {'s/picture (median)':>18} {'x base':>7}")
    for column in COLUMNS:
        med = statistics.median(seconds[column])
        print(f"{column:<18} {med:>18.3f} {med / base:>7.2f}")
    print(f"grid: {args.out} ({len(rows)} rows: {', '.join(COLUMNS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
