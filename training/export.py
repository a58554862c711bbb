"""Export a run's EMA weights as a diffusers folder (fp16 safetensors, sharded, with the
tokenizer, word list and training record) to a scratch folder; `training.ship` evaluates it and
only it copies weights into models/default. A mixin of `training.train.Run`."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from training import model as M
from training.common import load_checkpoint, log, unprefixed

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "default"
MIB = 2**20


class Export:
    def export(self, out: Path, shard: str = "15MB") -> Path:
        """Write the diffusers folder from the EMA weights, fp16 safetensors only, to a scratch
        folder: training.ship evaluates it and copies it into models/default if it passes."""
        from diffusers import StableDiffusionPipeline

        ckpt = self.run / "unet.safetensors"
        if not ckpt.exists():
            raise SystemExit(f"no UNet checkpoint in {self.run}: train first")
        flat, info = load_checkpoint(ckpt)
        if out.resolve() == SHIPPED.resolve():
            raise SystemExit(f"refusing to export into {SHIPPED}: unevaluated weights never ship. Export to a scratch "
                             f"folder, then `python -m training.ship --model <it>` evaluates it and copies it there "
                             f"only if it passes")
        tok = self.tokenizer()
        vae = self.frozen_vae()
        vae.register_to_config(scaling_factor=self.latent_scale(vae))
        text, unet = self.build_denoiser(tok)
        text.load_state_dict(unprefixed("text", flat))
        unet.load_state_dict(unprefixed("unet", flat))
        ema = unprefixed("ema", flat)
        for i, p in enumerate(list(text.parameters()) + list(unet.parameters())):
            p.data.copy_(ema[str(i)])
        # The native size is the one the UNet last trained at (a CPU run may ship 64 px first).
        px = info.get("px", self.size.image_size)
        unet.register_to_config(sample_size=px // self.vae_factor())
        vae.register_to_config(sample_size=px)
        pipe = StableDiffusionPipeline(
            vae=vae.cpu().half(), text_encoder=text.cpu().half(), tokenizer=tok, unet=unet.cpu().half(),
            scheduler=M.inference_scheduler(), safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in ("vae", "text_encoder", "unet"):
            getattr(pipe, name).save_pretrained(tmp / name, safe_serialization=True, max_shard_size=shard)
        # transformers reads `dtype` from config.json and would load the text encoder in
        # fp16 while diffusers loads the UNet in fp32 by default, and a plain
        # from_pretrained() would then fail on mixed dtypes. Weights stay fp16 on disk;
        # the default load is fp32, and torch_dtype=torch.float16 still gives fp16.
        cfg_path = tmp / "text_encoder" / "config.json"
        tcfg = json.loads(cfg_path.read_text())
        for key in ("dtype", "torch_dtype"):
            if key in tcfg:
                tcfg[key] = "float32"
        cfg_path.write_text(json.dumps(tcfg, indent=2) + "\n")
        # CLIP's own files (vocab.json + merges.txt), exactly as trained; save_pretrained
        # would write only tokenizer.json.
        shutil.copytree(self.run / "tokenizer", tmp / "tokenizer")
        pipe.scheduler.save_pretrained(tmp / "scheduler")
        M.write_model_index(tmp)
        if self.vocabulary is not None:     # the words it knows: the UI's examples and word list
            (tmp / "vocabulary.json").write_text(json.dumps(self.vocabulary.to_json(self.pack), indent=1,
                                                            ensure_ascii=False) + "\n")
        (tmp / "training.json").write_text(json.dumps({
            "config": asdict(self.cfg), "unet_step": info["step"], "latent_scale": info.get("latent_scale"),
            "unet_seconds": info.get("seconds"), "unet_started_from": info.get("lineage", []),
            "vae_step": self._step_of("vae"), "decoder_step": self._step_of("decoder"),
            "data": {"sources": self.pack.sources, "stats": {k: {kk: vv for kk, vv in v.items() if kk != "unmatched"}
                                                                for k, v in self.pack.stats["styles"].items()}},
        }, indent=1) + "\n")
        check_weight_sizes(tmp)
        # Replace the folder's generated files, keeping what we do not write (MODEL_CARD.md).
        out.mkdir(parents=True, exist_ok=True)
        for item in tmp.iterdir():
            dest = out / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            os.replace(item, dest)
        tmp.rmdir()
        log(f"exported step {info['step']} to {out}")
        return out


def check_weight_sizes(folder: Path, per_file: int = 16 * MIB, total: int = 48 * MIB) -> None:
    files = sorted(folder.rglob("*.safetensors"))
    sizes = {str(f.relative_to(folder)): f.stat().st_size for f in files}
    big = {k: v for k, v in sizes.items() if v > per_file}
    if big or sum(sizes.values()) > total:
        raise SystemExit(f"weights too large (limit {per_file / MIB:.0f} MiB a file, {total / MIB:.0f} MiB in all): {sizes}")
    if any(folder.rglob("*.bin")) or any(folder.rglob("*.pt")) or any(folder.rglob("*.ckpt")):
        raise SystemExit("pickle weights in the export: safetensors only")
