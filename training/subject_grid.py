"""The picture to look at before shipping the default model: the issue's 40 must-draw subjects
in all three styles, one seed each, made by Statuary's own job service (what a user gets).

    .venv/bin/python -m training.subject_grid --model models/default --out docs/default-model-grid.png
    .venv/bin/python -m training.subject_grid --model /tmp/m --words cat pizza rocket --seed 7

Each row is one word: its label, then "<word>, 3d style", "<word>, flat style" and
"<word>, cartoon style", typed exactly like that, at the model's native size with its default
steps and guidance. The seed of every picture is --seed (the same for the whole grid, so a grid
made again is the same grid). Rows run down in --columns blocks side by side. Pictures are
scaled up --zoom times, nearest-neighbour, so nothing is smoothed over.

Whether "most of them are recognisable" is a person's judgement: look at the grid, and say what
you saw in the model card beside it (training/evaluate.py gives the numbers).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from training.monitor import SAMPLE_SUBJECTS

STYLES = ("3d style", "flat style", "cartoon style")


def prompts_for(words: list[str]) -> list[str]:
    return [f"{w}, {st}" for w in words for st in STYLES]


def compose(images: list[Image.Image], words: list[str], columns: int, zoom: int) -> Image.Image:
    """Rows of (label, 3 pictures), in `columns` blocks side by side, style names on top."""
    side = images[0].width * zoom
    rows = -(-len(words) // columns)
    font = ImageFont.load_default(size=max(12, side // 6))
    head = max(18, side // 4)
    label_w = 12 + int(max(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(w, font=font) for w in words))
    block_w = label_w + 3 * side + 12
    grid = Image.new("RGB", (block_w * columns, head + rows * side), "white")
    draw = ImageDraw.Draw(grid)
    for c in range(columns):
        for s, style in enumerate(STYLES):
            draw.text((c * block_w + label_w + s * side + 4, 2), style, fill="black", font=font)
    for i, word in enumerate(words):
        c, r = divmod(i, rows)
        x, y = c * block_w, head + r * side
        draw.text((x + 4, y + side // 2), word, fill="black", font=font, anchor="lm")
        for s in range(3):
            pic = images[3 * i + s].convert("RGB").resize((side, side), Image.Resampling.NEAREST)
            grid.paste(pic, (x + label_w + s * side, y))
    return grid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.subject_grid", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="default", help="a model folder, a .safetensors file, or 'default'")
    ap.add_argument("--words", nargs="+", default=list(SAMPLE_SUBJECTS), help="subjects, one row each")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--columns", type=int, default=2, help="blocks of rows side by side")
    ap.add_argument("--zoom", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("subject-grid.png"))
    args = ap.parse_args(argv)

    import torch

    from core.generator import Generator
    from core.jobs import Owner
    from core.loader import load_model
    from core.request import GenerationRequest
    from core.service import InProcessJobService

    torch.set_num_threads(args.threads)
    model = load_model(args.model, device="cpu")
    service = InProcessJobService(Generator(model), None, preview_frames=0)
    owner = Owner("cli", "subject-grid")
    prompts = prompts_for(args.words)
    t0 = time.perf_counter()
    try:
        images = [service.submit(GenerationRequest(p, seed=args.seed), owner).result().images[0].image for p in prompts]
    finally:
        service.close()
    compose(images, args.words, args.columns, args.zoom).save(args.out)
    print(f"{args.out}: {len(args.words)} words x {len(STYLES)} styles, seed {args.seed}, model {model.model_id} "
          f"({model.sha256[:10]}), {images[0].width} px, {(time.perf_counter() - t0) / len(prompts):.2f} s/picture")
    return 0


if __name__ == "__main__":
    sys.exit(main())
