"""The only way weights reach models/default: evaluate an exported model, compare, then copy.

    python -m training.train --run training/runs/cpu2 --phase none --export /tmp/m
    python -m training.ship --model /tmp/m --eval-dir training/runs/cpu2/eval \\
        --judge-width 32 --judge-stem-stride 2 --judge-steps 4000 --judge-batch 128 --batch 16 --device cpu

1. `training.evaluate` scores the folder (the judge is cached in --eval-dir; its options are
   passed through), and the weights' sha256 is written into the metrics.
2. The verdict (`verdict`): with nothing shipped, the issue's first-ship bar (top-5 >= 60%,
   style >= 85%, background colour >= 85%); with a model shipped, the candidate must beat its
   metrics.json on the same evaluation (same prompts, steps, guidance and judge): no figure
   lower, at least one higher.
3. Only then are the folder's files copied into models/default (the model card, the word list
   and anything else not written by an export stay), with metrics.json beside them, and the
   subject grid is drawn (--grid). Whether most subjects are recognisable is a person's call:
   look at the grid before committing. Nothing is written when the verdict says no.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "default"
FIRST_SHIP = {"top5": 0.60, "style": 0.85, "colour": 0.85}   # the bar for a first model
# training.model.SIZES that may ship: within the card's limits (weights <= 48 MiB in fp16, files <= 16 MiB,
# 20 steps with guidance <= 1.5 s on 2 cores). "f4" (64 px through a 4x VAE) is what Config.cpu() and
# Config.gpu() train; "default" is the 128 px architecture. The toy and the A/B sizes never ship.
SIZES_THAT_SHIP = ("default", "f4")
SCORES = ("top5", "style", "colour")
# What must match for two evaluations to be compared.
SAME_EVALUATION = ("prompts", "steps", "guidance", "judge")
# An export's own files and folders: replaced on shipping. Everything else in models/default stays.
# defaults.json (core/model_defaults.py: the guidance a prompt gets) is among them: the evaluation ran at
# the export's, so the shipped folder keeps that one, or none when the export has none.
EXPORTED = ("model_index.json", "training.json", "vocabulary.json", "defaults.json", "scheduler", "text_encoder",
            "tokenizer", "unet", "vae")


def weights_sha256(folder: Path) -> str:
    """One digest over every safetensors file in the folder (relative names and bytes, sorted)."""
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*.safetensors")):
        h.update(str(f.relative_to(folder)).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def verdict(candidate: dict, shipped: dict | None) -> list[str]:
    """Reasons not to ship (empty: ship). `candidate`/`shipped`: evaluate's metrics.json."""
    mine = candidate["generated"]["all"]
    if shipped is None:
        return [f"{k} {mine[k]:.3f} is below the first-ship bar {bar:.2f}" for k, bar in FIRST_SHIP.items() if mine[k] < bar]
    differ = [k for k in SAME_EVALUATION if candidate.get(k) != shipped.get(k)]
    if differ:
        return ["not the shipped model's evaluation (" + ", ".join(
            f"{k}: {candidate.get(k)!r} here, {shipped.get(k)!r} shipped" for k in differ)
                + "): evaluate with the same settings"]
    theirs = shipped["generated"]["all"]
    reasons = [f"{k} {mine[k]:.3f} is below the shipped model's {theirs[k]:.3f}" for k in SCORES if mine[k] < theirs[k]]
    if not reasons and all(mine[k] == theirs[k] for k in SCORES):
        reasons.append("no better than the shipped model on any of " + ", ".join(SCORES))
    return reasons


def copy_into(model: Path, shipped: Path) -> None:
    """Replace the export's files in `shipped` with `model`'s, leaving the rest (model card...)."""
    shipped.mkdir(parents=True, exist_ok=True)
    for name in EXPORTED:
        dest = shipped / name
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        src = model / name
        if src.is_dir():
            shutil.copytree(src, dest)
        elif src.exists():
            shutil.copy2(src, dest)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.split("\n\n")[0],
                                epilog="Other options (--judge-width, --batch, --device, --n-single...) go to training.evaluate.")
    p.add_argument("--model", type=Path, required=True, help="an exported folder (training.train --phase none --export DIR)")
    p.add_argument("--data", type=Path, default=Path("training/build/data"))
    p.add_argument("--eval-dir", type=Path, required=True, help="where the judge is cached and the metrics are written")
    p.add_argument("--grid", type=Path, default=REPO / "docs" / "default-model-grid.png",
                   help="the 40 subjects in 3 styles, drawn from the shipped folder")
    p.add_argument("--to", type=Path, default=SHIPPED, help=argparse.SUPPRESS)   # tests
    args, evaluate_args = p.parse_known_args(argv)

    from training import evaluate

    model = args.model.resolve()
    if model == args.to.resolve():
        p.error(f"--model must be an export outside {args.to} (training.train --phase none --export /tmp/m)")
    trained = json.loads((model / "training.json").read_text()) if (model / "training.json").exists() else None
    if trained is None:
        print(f"{model} has no training.json: not a folder written by `training.train --export`. Nothing shipped.")
        return 1
    if trained["config"].get("size") not in SIZES_THAT_SHIP:
        print(f"{model} was trained at size {trained['config'].get('size')!r}, which does not ship (the sizes "
              f"that do: {', '.join(SIZES_THAT_SHIP)}). Nothing shipped.")
        return 1
    if (trained.get("unet_step") or 0) < trained["config"].get("min_ship_steps", 0):
        print(f"{model} holds a UNet of {trained.get('unet_step')} steps; the run's min_ship_steps is "
              f"{trained['config']['min_ship_steps']}: untrained weights never ship. Nothing shipped.")
        return 1
    rc = evaluate.main(["--model", str(model), "--data", str(args.data), "--out", str(args.eval_dir), *evaluate_args])
    if rc:
        return rc
    metrics = json.loads((args.eval_dir / "metrics.json").read_text())
    metrics["weights_sha256"] = weights_sha256(model)
    metrics["unet_step"] = trained.get("unet_step")
    (args.eval_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")

    shipped_path = args.to / "metrics.json"
    shipped = json.loads(shipped_path.read_text()) if shipped_path.exists() else None
    reasons = verdict(metrics, shipped)
    if reasons:
        print("Not shipped: " + "; ".join(reasons) + ". Nothing was written to " + str(args.to) + ".")
        return 1
    copy_into(model, args.to)
    shutil.copy2(args.eval_dir / "metrics.json", shipped_path)
    print(f"Shipped step {metrics['unet_step']} ({metrics['weights_sha256'][:12]}) to {args.to}: "
          + ", ".join(f"{k} {metrics['generated']['all'][k]:.3f}" for k in SCORES))
    import torch

    from training import subject_grid

    args.grid.parent.mkdir(parents=True, exist_ok=True)
    # The grid runs in this process: keep its thread count (subject_grid's own default is 2).
    subject_grid.main(["--model", str(args.to), "--zoom", "2", "--out", str(args.grid),
                       "--threads", str(torch.get_num_threads())])
    print(f"Look at {args.grid} before committing: most of the 40 subjects must be recognisable in all three styles.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
