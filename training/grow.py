"""Give a trained run's UNet the caption in its timestep embedding (`pooled_text`) without
starting over: its checkpoint is rewritten so that training resumes with the new path.

    python -m training.grow --run training/runs/cpu8-pooled     # a fork: copy the run folder first

Why: the UNet reads the caption only through cross-attention at 8x8 and 4x4 (`model.unet_config`);
the 16x16 blocks, which draw the edges and fills a style is told by, hear it only through what
the coarser levels pass up. With `pooled_text` every ResNet block also gets an attention-pooled
summary of the caption added to its timestep embedding. Tried from step 600 it changed nothing
while the words did not matter yet (RUNS.md, cpu3); this lets it be tried on a run that draws.

The new path (`add_embedding`) starts silent by default: its last LayerNorm's scale and shift are
zero, so the grown UNet draws exactly what the old one did, and gradient reaches the rest of the
path as soon as the scale moves (`--scale` starts it louder: see `grow_pooled_text`). Every other
weight, its EMA and its optimizer moments keep their values
(matched by parameter name: the new parameters sit between the old ones in the UNet's order);
the new ones start with the fresh moments AdamW gives a parameter it has not seen. The run's
config.json says `pooled_text: 1` afterwards, which makes the folder a different run (it is in
`Config.IDENTITY`): grow a fork, keep the original to compare against.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from training import model as M
from training.common import load_checkpoint, log, prefixed, save_checkpoint, unprefixed
from training.tokenizer import load_tokenizer


def _optimizer(text: torch.nn.Module, unet: torch.nn.Module) -> torch.optim.AdamW:
    """The UNet phase's two groups (text encoder, UNet); their settings come from the checkpoint."""
    return torch.optim.AdamW([{"params": list(text.parameters()), "base_lr": 0.0},
                              {"params": list(unet.parameters()), "base_lr": 0.0}], lr=0.0)


def grow_pooled_text(run: Path, scale: float = 0.0) -> dict:
    """Rewrite `run`'s UNet checkpoint (and config.json) with the pooled-text path; -> what changed.
    `scale`: the path's last LayerNorm's starting weight. 0 is silent (the same pictures), but the
    path's size is that weight alone (the LayerNorm makes what comes before it unit-sized), and AdamW
    moves a weight at most its learning rate a step: at a schedule's tail (5e-5) it grew to 0.0008 in
    350 steps on cpu8, a nudge of 0.2% to a timestep embedding of std 0.4 (t = 900) to 1.5 (t = 100).
    0.05 starts it audible (~12% at t = 900, 3% at t = 100), at the cost of a little noise at first."""
    from training.train import Config

    cfg_path, ckpt = run / "config.json", run / "unet.safetensors"
    cfg = Config.of_run(run)
    if cfg.pooled_text:
        raise SystemExit(f"{run} already has pooled_text = 1")
    if not ckpt.exists():
        raise SystemExit(f"no UNet checkpoint in {run}: train first")
    size, tok = M.SIZES[cfg.size], load_tokenizer(run / "tokenizer")
    text = M.build_text_encoder(size, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    old = M.build_unet(size, False)
    torch.manual_seed(cfg.seed + 2)
    new = M.build_unet(size, True)
    old_opt, new_opt = _optimizer(text, old), _optimizer(text, new)
    flat, info = load_checkpoint(ckpt, old_opt)
    text.load_state_dict(unprefixed("text", flat))
    old.load_state_dict(unprefixed("unet", flat))
    keys = new.load_state_dict(unprefixed("unet", flat), strict=False)
    assert not keys.unexpected_keys and all(k.startswith("add_embedding.") for k in keys.missing_keys), keys
    with torch.no_grad():
        new.add_embedding.norm2.weight.fill_(scale)
        new.add_embedding.norm2.bias.zero_()

    old_named = [(f"text.{n}", p) for n, p in text.named_parameters()] + [(f"unet.{n}", p) for n, p in old.named_parameters()]
    new_named = [(f"text.{n}", p) for n, p in text.named_parameters()] + [(f"unet.{n}", p) for n, p in new.named_parameters()]
    old_index = {n: i for i, (n, _) in enumerate(old_named)}
    old_params = dict(old_named)
    ema_old = unprefixed("ema", flat)
    ema = {}
    for j, (name, p) in enumerate(new_named):
        if name in old_index:
            ema[f"ema.{j}"] = ema_old[str(old_index[name])]
            state = old_opt.state.get(old_params[name])
            if state:
                new_opt.state[p] = state
        else:
            ema[f"ema.{j}"] = p.detach().clone().float()
    for g_new, g_old in zip(new_opt.param_groups, old_opt.param_groups):
        g_new.update({k: v for k, v in g_old.items() if k != "params"})

    added = [p for n, p in new_named if n not in old_index]
    info = {k: v for k, v in info.items() if k != "optimizer"}
    info["grown"] = info.get("grown", []) + [{"step": info["step"], "added": "pooled_text", "scale": scale,
                                               "parameters": sum(p.numel() for p in added)}]
    tensors = {**prefixed("text", text), **prefixed("unet", new), **ema, **{k: v for k, v in flat.items() if k.startswith("aux.")}}
    save_checkpoint(ckpt, tensors, new_opt, info)
    saved = json.loads(cfg_path.read_text())   # as written, keys this Config no longer knows kept
    saved["pooled_text"] = 1
    cfg_path.write_text(json.dumps(saved, indent=1) + "\n")
    log(f"{run}: pooled_text grown at step {info['step']}: {len(added)} new tensors, "
        f"{info['grown'][-1]['parameters']:,} parameters, its scale (add_embedding.norm2) {scale:g}"
        + (" (silent at first)" if not scale else ""))
    return info["grown"][-1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.grow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="the run folder to grow (a fork: it becomes another run)")
    p.add_argument("--scale", type=float, default=0.0,
                   help="the new path's starting scale (0: silent, the same pictures; see grow_pooled_text)")
    args = p.parse_args(argv)
    grow_pooled_text(args.run, args.scale)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
