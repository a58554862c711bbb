"""Train the default model: tokenizer, then the VAE, then text encoder + UNet together.

On the device machine (`training/device.sh` wraps these; each call fits the 10-minute
limit, stops itself with a checkpoint after --minutes and the next call resumes):

    python -m training.train --data training/build/data --run training/runs/main --minutes 8      # VAE, then UNet
    python -m training.train --data training/build/data --run training/runs/main --minutes 8      # resumes
    python -m training.train --data training/build/data --run training/runs/main --phase none --export /tmp/m
    python -m training.ship --model /tmp/m --eval-dir training/runs/main/eval     # evaluates; copies into models/default if it passes

On a CPU, in seconds, with a toy-sized model (what the tests run):

    python -m training.train --smoke --data training/build/data --run /tmp/statuary-smoke --export /tmp/statuary-smoke/model

Design notes, candidly:
- The feasibility run sat at 6.8 steps/s with the GPU idle, so here the sprites live on
  the GPU as one uint8 tensor and each batch is composed there (`data.Renderer`); the CPU
  only draws the batch recipe and tokenises captions, in a thread, a few steps ahead.
- Everything random is a function of (seed, step), so a resumed run draws exactly the
  batches the uninterrupted run would have drawn.
- Checkpoints are safetensors (weights, EMA, optimizer moments) plus a JSON sidecar, so
  nothing here ever calls torch.load.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# Beside other work on a CPU, an OpenMP team that spins while it waits takes the cores from
# the foreground even under `nice -n 19` (measured: a foreground UNet step went from 0.7 s
# to 2-10 s); waiting passively lets nice do its job. Must be set before torch loads OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from training import data as D
from training import model as M
from training.batches import POOL_CHUNK, FreshBatches, PoolBatches, Prefetch, _encoder, _gen  # noqa: F401 (Prefetch: tests)
from training.monitor import (SAMPLE_SUBJECTS, CaptionGain, ConditioningProbe, GridJudge, TextSeparation, WordGain,
                              ema_weights, corner_error, finish_from_noise, sample_grid, vae_round_trip)
from training.text_aux import TextAux
from training.tokenizer import load_tokenizer, train_tokenizer
from training.vocab import Vocabulary, learned_split

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models" / "default"
MIB = 2**20
POOL_SEED = 30_000_000     # pool chunk k is drawn at step POOL_SEED + k


@dataclass
class Config:
    size: str = "default"          # training.model.SIZES key
    seed: int = 0                  # split, batches, noise, initial weights
    batch: int = 256               # per step; large batches keep the GPU busy
    vae_steps: int = 4000           # ~1M composed pictures; emoji are simple
    vae_lr: float = 3e-4
    vae_batch: int = 0             # VAE batch; 0 = `batch`
    vae_crop: int = 0              # train the (convolutional) VAE on random crops this wide; 0 = whole canvas
    vae_warmup: int = 500
    kl_weight: float = 1e-6        # tiny: we want a sharp autoencoder, not a generative VAE
    decoder_steps: int = 0         # then the VAE's decoder alone (encoder frozen: latents, pool and UNet stay valid)
    decoder_lr: float = 2e-4
    threads: int = 0               # torch threads on a CPU; 0 = every core
    unet_steps: int = 20000        # text encoder + UNet; reached over several resumed runs (~20 it/s hoped on an H100)
    lr: float = 3e-4
    text_lr: float = 0.0           # the text encoder's learning rate; 0 = lr
    warmup: int = 500
    ema: float = 0.9995
    unet_px: int = 0               # picture size the UNet trains on (64, 96, 128); 0 = the model's size
    t_exponent: float = 1.0        # training timesteps t = 999 * u**t_exponent; 0.5 leans toward high noise
    pool: int = 0                  # pre-render + pre-encode this many compositions once and train from them; 0 = fresh each step
    pool_large: float = 0.0        # share of each pool batch drawn from the pool's large single emoji; 0 = the pool as drawn
    text_aux: float = 0.0          # weight of text_aux.TextAux's loss (the caption's encoding names its emoji and style); 0 = off
    vocabulary: str = "all"        # "common": training.vocab's subjects and names; "all": every emoji, datasource names
    canonical: float = 0.0         # share of captions naming an emoji by its first (CLDR) name
    pair_prob: float = 0.25        # share of samples with two emoji side by side
    drop_caption: float = 0.1      # empty caption share, for classifier-free guidance
    vocab: int = 4096
    ckpt_every: int = 1000         # steps between checkpoints (also written when time is up)
    probe_every: int = 200         # steps between the probes (conditioning, caption gain, raw word gain; also at the end)
    sample_every: int = 1000       # steps between subject grids (samples.png), at a checkpoint
    min_ship_steps: int = 5000     # training.ship refuses an export with fewer UNet steps, before evaluating it

    # What a run folder is: changing these needs a new --run. The rest (schedule, speed,
    # resolution, pool) may change from one invocation to the next, and is logged.
    IDENTITY = ("size", "seed", "vocab", "vocabulary", "vae_crop", "kl_weight")

    @classmethod
    def cpu(cls) -> "Config":
        """The recipe for a 2-core CPU (see the model card): small batches, VAE on crops. The UNet
        trains at 128 px: at 64 px even the VAE's round trip of real pictures is unrecognisable
        (vae_round_trip-64.png), so no 64 px UNet can draw an emoji people know. A 64 px run's
        UNet is a fine start for it (--init-unet). The decoder is then fine-tuned alone
        (--phase decoder, any time: the latent space stays) on whole pictures too, which crops
        never show it: the frame a crop-trained decoder draws along the picture's edge."""
        return cls(batch=32, vae_batch=16, vae_crop=64, vae_steps=6000, vae_lr=5e-4, vae_warmup=100, decoder_steps=1500,
                   ckpt_every=200, probe_every=1000, vocabulary="common", canonical=0.5, unet_px=128, pool=49152,
                   t_exponent=0.5, lr=5e-4, text_lr=1e-3, warmup=200, unet_steps=12000, ema=0.999,
                   min_ship_steps=3000)

    @classmethod
    def smoke(cls) -> "Config":
        return cls(size="smoke", batch=8, vae_steps=6, unet_steps=8, warmup=2, ema=0.9, vocab=600,
                   ckpt_every=4, vae_lr=1e-3, lr=1e-3)


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], opt: torch.optim.Optimizer | None, info: dict) -> None:
    """Weights + optimizer moments in one safetensors file, step etc. in a JSON sidecar. Atomic."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    opt_meta = None
    if opt is not None:
        sd = opt.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                flat[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().cpu()
        opt_meta = {"param_groups": sd["param_groups"], "state_keys": {str(p): sorted(st) for p, st in sd["state"].items()}}
    tmp = path.with_suffix(".tmp")
    save_file(flat, str(tmp))
    os.replace(tmp, path)
    side = path.with_suffix(".json")
    side.with_suffix(".json.tmp").write_text(json.dumps({**info, "optimizer": opt_meta}, indent=1))
    os.replace(side.with_suffix(".json.tmp"), side)


def load_checkpoint(path: Path, opt: torch.optim.Optimizer | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    flat = load_file(str(path))
    info = json.loads(path.with_suffix(".json").read_text())
    if opt is not None and info.get("optimizer"):
        meta = info["optimizer"]
        state = {int(p): {k: flat[f"optim.{p}.{k}"] for k in keys} for p, keys in meta["state_keys"].items()}
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return {k: v for k, v in flat.items() if not k.startswith("optim.")}, info


def _prefixed(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def _unprefixed(prefix: str, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in flat.items() if k.startswith(prefix + ".")}


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine to 10% of base at `total`. A function of step only."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


# ---------------------------------------------------------------------------- the run


class Run:
    def __init__(self, cfg: Config, data: Path, run: Path, device: str, compile_: bool = False,
                 stop_at: int | None = None, init_unet: Path | None = None, write_config: bool = True):
        """`write_config=False` reads a run folder without touching it (training.compare measures
        runs that are still training)."""
        self.cfg, self.run, self.device = cfg, run, torch.device(device)
        self.stop_at = stop_at          # leave the loop (with a checkpoint) at this step
        self.read_only = not write_config   # never write into the folder: no config, tokenizer or pool chunks
        self.init_unet = init_unet      # a UNet checkpoint (or its run folder) to start this run's UNet from
        # Processes drawing batch recipes: none on a CPU (tests), several beside a GPU.
        self.workers = max(1, min(8, (os.cpu_count() or 2) - 4)) if self.device.type == "cuda" else 0
        self.size = M.SIZES[cfg.size]
        self.compile = compile_
        run.mkdir(parents=True, exist_ok=True)
        cfg_path = run / "config.json"
        if cfg_path.exists():   # a run folder belongs to one configuration
            old = json.loads(cfg_path.read_text())
            diff = {k: (old.get(k), v) for k, v in asdict(cfg).items() if k in old and old[k] != v}
            fixed = {k: d for k, d in diff.items() if k in Config.IDENTITY}
            if fixed:
                raise SystemExit(f"{run} was started with a different configuration: {fixed}. "
                                 "Use a new --run folder or the same options.")
            if diff and write_config:
                log(f"schedule changed on resume: {diff}")
        if write_config:
            cfg_path.write_text(json.dumps(asdict(cfg), indent=1) + "\n")
        self.pack = D.Pack.load(data)
        # The VAE learns every emoji (it is a general autoencoder); the denoiser learns the vocabulary.
        self.vae_sampler = D.Sampler(self.pack, D.Split.make(self.pack, cfg.seed), cfg.seed, cfg.pair_prob, cfg.drop_caption)
        try:
            self.split, names = learned_split(self.pack, cfg.seed, cfg.vocabulary)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        self.vocabulary = Vocabulary.build(self.pack) if cfg.vocabulary == "common" else None
        self.sampler = D.Sampler(self.pack, self.split, cfg.seed, cfg.pair_prob, cfg.drop_caption, names, cfg.canonical)
        self.px = cfg.unet_px or self.size.image_size
        self.bf16 = self.device.type == "cuda"
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self._renderers: dict[int, D.Renderer] = {}

    # -- pieces ---------------------------------------------------------------------------
    @property
    def renderer(self) -> D.Renderer:
        """Composes pictures at the model's full size (the VAE's training pictures)."""
        return self.renderer_at(self.size.image_size)

    def renderer_at(self, px: int) -> D.Renderer:
        if px not in self._renderers:
            t0 = time.time()
            sprite_px = min(px, self.size.image_size)
            self._renderers[px] = D.Renderer(self.pack.sprites(sprite_px), px, self.device)
            log(f"sprites: {self._renderers[px].full.shape[0]} at {sprite_px} px on {self.device} in {time.time() - t0:.1f} s")
        return self._renderers[px]

    def tokenizer(self):
        folder = self.run / "tokenizer"
        if not (folder / "vocab.json").exists() and self.read_only:
            raise SystemExit(f"{self.run}: no tokenizer, and the run folder is open read-only (training makes one)")
        if not (folder / "vocab.json").exists():
            n = 40 if self.cfg.size == "smoke" else 400
            caps = [c for k in range(n) for c in self.sampler.train_batch(10_000_000 + k, 256).captions]
            caps += [n_ for e in self.pack.emoji for n_ in e["names"]]     # every name, at least once
            caps += [n_ for ns in self.sampler.names.values() for n_ in ns]
            train_tokenizer(caps, folder, vocab_size=self.cfg.vocab, max_tokens=self.size.max_tokens)
            log(f"tokenizer: trained on {len(caps)} captions -> {folder}")
        return load_tokenizer(folder)

    def autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else torch.autocast("cpu", enabled=False)

    def _opt(self, params, lr):
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=0.01, fused=fused)

    def _maybe_compile(self, m):
        return torch.compile(m) if self.compile else m

    # -- phase 1: VAE ------------------------------------------------------------------------
    def build_vae(self):
        torch.manual_seed(self.cfg.seed)
        return M.build_vae(self.size).to(self.device)

    def train_vae(self, deadline: float) -> int:
        cfg, ckpt = self.cfg, self.run / "vae.safetensors"
        vae = self.build_vae()
        opt = self._opt(vae.parameters(), cfg.vae_lr)
        step = 0
        if ckpt.exists():
            flat, info = load_checkpoint(ckpt, opt)
            vae.load_state_dict(_unprefixed("vae", flat))
            step = info["step"]
            log(f"vae: resumed at step {step}")
        if step >= cfg.vae_steps:
            return step
        if (self.run / "unet.safetensors").exists() or any(self.run.glob("pool-*")):
            # The latent pool and the UNet live in this VAE's latent space: changing it now
            # would silently spoil both. (A run whose VAE stopped short on time keeps it.)
            log(f"vae: frozen at step {step} of {cfg.vae_steps}: the UNet phase has begun")
            return cfg.vae_steps
        fwd = self._maybe_compile(vae)
        pre = Prefetch(self.vae_sampler, None, cfg.vae_batch or cfg.batch, step, cfg.vae_steps, workers=self.workers)
        t0, last_loss, start = time.time(), float("nan"), step
        while step < cfg.vae_steps:
            _, batch, _ = pre.get()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg.vae_lr, cfg.vae_warmup, cfg.vae_steps)
            x = self.vae_pictures(batch, step)
            with self.autocast():
                post = fwd.encode(x).latent_dist
                z = post.mean + post.std * torch.randn(post.mean.shape, device=x.device,
                                                       generator=_gen(self.device, cfg.seed, 5, step))
                rec = fwd.decode(z).sample.float()
            loss = F.l1_loss(rec, x) + F.mse_loss(rec, x) + cfg.kl_weight * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 50 == 0 or step == cfg.vae_steps:
                last_loss = loss.item()
                n = cfg.vae_batch or cfg.batch
                log(f"vae step {step}/{cfg.vae_steps} loss {last_loss:.4f} "
                    f"{(step - start) * n / max(1e-9, time.time() - t0):.1f} samples/s")
                if not math.isfinite(last_loss):
                    raise FloatingPointError(f"vae loss is {last_loss} at step {step}")
            stop = time.time() > deadline or step == self.stop_at
            if step % cfg.ckpt_every == 0 or step == cfg.vae_steps or stop:
                save_checkpoint(ckpt, _prefixed("vae", vae), opt, {"step": step, "loss": loss.item()})
                if step % cfg.sample_every == 0 or step == cfg.vae_steps or stop:
                    self.round_trips(vae, "vae", step)
            if stop and step < cfg.vae_steps:
                log(f"vae: stopping at step {step}; run again to resume")
                break
        pre.close()
        return step

    def vae_pictures(self, batch: D.Batch, step: int) -> torch.Tensor:
        """The VAE's training pictures for one step: whole canvases, or with `vae_crop` a
        random square window of each (the VAE is convolutional, so crops teach it the same
        thing at a fraction of the cost)."""
        x = self.renderer(batch)
        c = self.cfg.vae_crop
        if not c or c >= x.shape[-1]:
            return x
        g = _gen(torch.device("cpu"), self.cfg.seed, 7, step)
        off = torch.randint(0, x.shape[-1] - c + 1, (x.shape[0], 2), generator=g)
        return torch.stack([im[:, y:y + c, x_:x_ + c] for im, (y, x_) in zip(x, off.tolist())])

    def round_trips(self, vae, phase: str, step: int) -> None:
        """Twelve fixed training pictures and the VAE's reconstruction of them, at the VAE's
        training size and at the UNet's (vae_round_trip-<px>.png in the run folder; look at
        them): the most any UNet trained on this VAE can draw."""
        batch = self.vae_sampler.train_batch(99_000_000, 12)
        figures = []
        for px in sorted({self.size.image_size, self.px}):
            with self.autocast():
                l1 = vae_round_trip(vae, self.renderer_at(px), batch, self.run / f"vae_round_trip-{px}.png")
            figures.append(f"{px} px L1 {l1:.4f}")
        log(f"{phase} step {step}: round trip of 12 training pictures: {', '.join(figures)} (vae_round_trip-*.png)")
        with self.autocast():
            err = corner_error(vae, self.px, D.COLOURS.values())
        log(f"{phase} step {step}: round trip of plain backgrounds at {self.px} px, error in the corners "
            + ", ".join(f"{k} {v:.3f}" for k, v in err.items()))

    def frozen_vae(self, decoder: bool = True):
        """The trained VAE, frozen; with the fine-tuned decoder (`decoder.safetensors`) when there is one."""
        ckpt = self.run / "vae.safetensors"
        if not ckpt.exists():
            raise SystemExit(f"no VAE checkpoint in {self.run}: run --phase vae first")
        flat, info = load_checkpoint(ckpt)
        if info["step"] < self.cfg.vae_steps:
            log(f"warning: VAE trained for {info['step']} of {self.cfg.vae_steps} steps")
        vae = self.build_vae()
        vae.load_state_dict(_unprefixed("vae", flat))
        if decoder and (self.run / "decoder.safetensors").exists():
            dec, _ = load_checkpoint(self.run / "decoder.safetensors")
            vae.load_state_dict(_unprefixed("vae", dec), strict=False)
        vae.requires_grad_(False).eval()
        return vae

    def train_decoder(self, deadline: float) -> int:
        """Fine-tune the VAE's decoder (and post_quant_conv) with the encoder frozen, on whole
        pictures at the UNet's size and on crops at the full size. The latent space does not
        move, so the latent pool and the UNet trained on it stay valid: sharper pictures for
        free. Writes decoder.safetensors (the decoder's weights + optimizer)."""
        cfg, ckpt = self.cfg, self.run / "decoder.safetensors"
        vae = self.frozen_vae()
        parts = [vae.decoder] + ([vae.post_quant_conv] if vae.post_quant_conv is not None else [])
        params = [p for m in parts for p in m.parameters()]
        for p in params:
            p.requires_grad_(True)
        vae.decoder.train()
        opt = self._opt(params, cfg.decoder_lr)
        step = 0
        if ckpt.exists():
            _, info = load_checkpoint(ckpt, opt)
            step = info["step"]
            log(f"decoder: resumed at step {step}")
        n = cfg.vae_batch or cfg.batch
        pre = Prefetch(self.vae_sampler, None, n, 50_000_000 + step, 50_000_000 + cfg.decoder_steps, workers=self.workers)
        small, t0, start = self.renderer_at(self.px), time.time(), step
        while step < cfg.decoder_steps:
            _, batch, _ = pre.get()
            for g in opt.param_groups:
                g["lr"] = lr_at(step, cfg.decoder_lr, cfg.vae_warmup // 4, cfg.decoder_steps)
            # half whole pictures at the UNet's size (what the model's samples decode), half crops
            x = small(batch) if step % 2 == 0 else self.vae_pictures(batch, step)
            with torch.no_grad(), self.autocast():
                z = vae.encode(x).latent_dist.mean
            with self.autocast():
                rec = vae.decode(z).sample.float()
            loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            if step % 50 == 0 or step == cfg.decoder_steps:
                log(f"decoder step {step}/{cfg.decoder_steps} loss {loss.item():.4f} "
                    f"{(step - start) * n / max(1e-9, time.time() - t0):.1f} samples/s")
            stop = time.time() > deadline or step == self.stop_at
            if step % cfg.ckpt_every == 0 or step == cfg.decoder_steps or stop:
                tensors = {f"vae.{k}": v for k, v in vae.state_dict().items() if k.startswith(("decoder.", "post_quant_conv."))}
                save_checkpoint(ckpt, tensors, opt, {"step": step, "loss": loss.item()})
                if step % cfg.sample_every == 0 or step == cfg.decoder_steps or stop:
                    self.round_trips(vae, "decoder", step)
            if stop and step < cfg.decoder_steps:
                log(f"decoder: stopping at step {step}; run again to resume")
                break
        pre.close()
        return step

    def latent_scale(self, vae) -> float:
        """1 / std of the VAE's latents over a few batches (SD's scaling_factor), cached."""
        path = self.run / "latent_scale.json"
        if path.exists():
            return json.loads(path.read_text())["scaling_factor"]
        zs = []
        with torch.no_grad(), self.autocast():
            for k in range(8):
                zs.append(vae.encode(self.renderer(self.vae_sampler.train_batch(20_000_000 + k, min(64, self.cfg.batch)))).latent_dist.mean.float())
        sf = float(1.0 / torch.cat(zs).std().clamp_min(1e-4))
        path.write_text(json.dumps({"scaling_factor": sf}) + "\n")
        log(f"latent scaling factor {sf:.4f}")
        return sf

    # -- phase 2: text encoder + UNet ----------------------------------------------------
    def learned_names(self) -> dict[int, list[str]]:
        """Emoji id -> its words (canonical first), for the emoji this run's UNet learns."""
        return {e: n for e, n in self.sampler.names.items() if e in self.split.emoji}

    def build_denoiser(self, tok):
        torch.manual_seed(self.cfg.seed + 1)
        text = M.build_text_encoder(self.size, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
        unet = M.build_unet(self.size)
        return text.to(self.device), unet.to(self.device)

    def train_unet(self, deadline: float) -> int:
        cfg, ckpt = self.cfg, self.run / "unet.safetensors"
        start_from = self._init_source() if not ckpt.exists() and self.init_unet else None
        tok = self.tokenizer()
        vae = self.frozen_vae()
        sf = self.latent_scale(vae)
        text, unet = self.build_denoiser(tok)
        params = list(text.parameters()) + list(unet.parameters())
        ema = [p.detach().clone().float() for p in params]
        # The text encoder gets its own (higher) rate: prompts must start to matter early.
        groups = [{"params": list(text.parameters()), "base_lr": cfg.text_lr or cfg.lr},
                  {"params": list(unet.parameters()), "base_lr": cfg.lr}]
        opt = self._opt(groups, cfg.lr)
        step = 0
        # Where the weights came from before this run's step 0 (`--init-unet`), and wall time
        # spent in this phase: carried in every checkpoint, written to training.json on export.
        lineage, seconds, aux_state = [], 0.0, {}
        if ckpt.exists():
            flat, info = load_checkpoint(ckpt, opt)
            lineage, seconds = info.get("lineage", []), info.get("seconds", 0.0)
            text.load_state_dict(_unprefixed("text", flat))
            unet.load_state_dict(_unprefixed("unet", flat))
            ema_sd = _unprefixed("ema", flat)
            for i, e in enumerate(ema):
                e.copy_(ema_sd[str(i)])
            step, aux_state = info["step"], _unprefixed("aux", flat)
            for g, base in zip(opt.param_groups, (cfg.text_lr or cfg.lr, cfg.lr)):
                g["base_lr"] = base           # a resumed run may have changed its rates
            log(f"unet: resumed at step {step}")
        elif start_from is not None:
            flat, info = load_checkpoint(start_from)
            text.load_state_dict(_unprefixed("text", flat))
            unet.load_state_dict(_unprefixed("unet", flat))
            ema_sd = _unprefixed("ema", flat)
            for i, e in enumerate(ema):
                e.copy_(ema_sd[str(i)])
            lineage = info.get("lineage", []) + [{"run": start_from.parent.name, "step": info["step"], "px": info.get("px"),
                                                  "seconds": info.get("seconds")}]
            log(f"unet: starting from {start_from} (its step {info['step']} at {info.get('px')} px): weights and "
                f"EMA; step 0 here, a fresh optimizer")
        if step >= cfg.unet_steps:
            return step
        sched = M.scheduler()
        acp = sched.alphas_cumprod.to(self.device)
        text_f, unet_f = self._maybe_compile(text), self._maybe_compile(unet)
        if cfg.pool:
            pool = self.latent_pool(vae, tok, deadline)
            if pool is None:
                return step                   # out of time while encoding; the next run goes on
            source = PoolBatches(pool, cfg, tok, self.device)
            gain = CaptionGain(pool, sf, self.device, cfg.seed)
            words = WordGain(pool, sf, tok, self.learned_names(), self.device, cfg.seed)
        else:
            source, gain, words = FreshBatches(self, vae, tok, step), None, None
        probe = ConditioningProbe(tok, self.device, self.px // self.vae_factor(), cfg.seed)
        separation = TextSeparation(tok, self.learned_names(), self.device) if self.vocabulary is not None else None
        aux, aux_opt, aux_losses = None, None, []
        if cfg.text_aux:
            aux = TextAux(text.config.hidden_size, len(self.pack.emoji)).to(self.device)
            if aux_state:
                aux.load_state_dict(aux_state)
            # Its own optimizer, not a third group of `opt`: checkpoints with and without the head
            # then resume each other. Its moments are not kept; they rebuild in a few dozen steps.
            aux_opt = torch.optim.AdamW(aux.parameters(), lr=1e-3, weight_decay=0.0)
            log(f"text aux: weight {cfg.text_aux:g}, head {'resumed' if aux_state else 'new'}")
        log(f"unet: {self.px} px, batch {cfg.batch}, lr {cfg.lr:g} (text {cfg.text_lr or cfg.lr:g}), "
            f"t = 999 u^{cfg.t_exponent:g}, {'pool of ' + str(len(source)) if cfg.pool else 'fresh batches'}")
        t0, start, losses = time.time(), step, []
        while step < cfg.unet_steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, g["base_lr"], cfg.warmup, cfg.unet_steps)
            gen = _gen(self.device, cfg.seed, 6, step)
            z, ids, labels = source.get(step, gen, sf)
            noise = torch.randn(z.shape, device=z.device, generator=gen)
            u = torch.rand(z.shape[0], device=z.device, generator=gen)
            t = (u ** cfg.t_exponent * (sched.config.num_train_timesteps - 1)).round().long()
            noisy, target = M.v_pair(z, noise, t, acp)
            with self.autocast():
                h = text_f(ids)[0]
                pred = unet_f(noisy, t, encoder_hidden_states=h).sample
            loss = F.mse_loss(pred.float(), target)
            total = loss
            if aux is not None:
                aux_loss = aux.loss(h, labels)
                total = loss + cfg.text_aux * aux_loss
                aux_losses.append(aux_loss.detach())
                aux_opt.zero_grad(set_to_none=True)
            opt.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if aux is not None:
                aux_opt.step()
            step += 1
            decay = min(cfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach().float() for p in params], 1 - decay)
            losses.append(loss.detach())
            if step % 50 == 0 or step == cfg.unet_steps:
                mean_loss = torch.stack(losses).mean().item()
                losses.clear()
                if not math.isfinite(mean_loss):
                    raise FloatingPointError(f"unet loss is {mean_loss} at step {step}")
                rate = (step - start) * cfg.batch / max(1e-9, time.time() - t0)
                aux_note = ""
                if aux_losses:
                    aux_note = f" text aux {torch.stack(aux_losses).mean().item():.3f}"
                    aux_losses.clear()
                log(f"unet step {step}/{cfg.unet_steps} loss {mean_loss:.4f}{aux_note} lr {opt.param_groups[1]['lr']:.2e} "
                    f"{rate:.1f} samples/s")
            stop = time.time() > deadline or step == self.stop_at
            if step % cfg.probe_every == 0 or step == cfg.unet_steps or stop:
                log(probe(text, unet))
                if separation is not None:
                    log(separation(text))
                if gain is not None:
                    log(gain(text, unet, acp))
                    log(words(text, unet, acp))
            if step % cfg.ckpt_every == 0 or step == cfg.unet_steps or stop:
                tensors = {**_prefixed("text", text), **_prefixed("unet", unet),
                           **{f"ema.{i}": e for i, e in enumerate(ema)},
                           **(_prefixed("aux", aux) if aux is not None else {})}
                save_checkpoint(ckpt, tensors, opt, {"step": step, "loss": loss.item(), "latent_scale": sf,
                                                     "px": self.px, "lineage": lineage,
                                                     "seconds": round(seconds + time.time() - t0, 1)})
                if cfg.size != "smoke" and (step % cfg.sample_every == 0 or stop):
                    with ema_weights(params, ema):
                        pictures = sample_grid(text, unet, vae, tok, self.px, self.vae_factor(), self.run, step)
                        if words is not None:   # the raw weights' figure swings with the rate; the EMA's ships
                            log(words(text, unet, acp, weights="EMA"))
                            finish_from_noise(text, unet, vae, tok, pool, sf, self.run / "finish.png")
                    self.judge_grid(pictures, step)
            if stop and step < cfg.unet_steps:
                log(f"unet: stopping at step {step}; run again to resume")
                break
        source.close()
        return step

    def judge_grid(self, pictures: torch.Tensor, step: int) -> dict | None:
        """Score the subject grid with the evaluation's cached judge, if there is one for this
        vocabulary and size; log it and append it to grid_scores.jsonl (the run's curve)."""
        judge = self.grid_judge()
        if judge is None:
            if self.vocabulary is None:
                return None
            log(f"subject grid not judged: no cached judge for {self.px} px in {self.run / 'eval'} "
                f"(python -m training.evaluate --judge-only --size {self.px} --out {self.run / 'eval'})")
            return None
        score = judge(pictures)
        log(GridJudge.line(score))
        with open(self.run / "grid_scores.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "judge": judge.path.name, **score}) + "\n")
        return score

    def grid_judge(self) -> GridJudge | None:
        """The evaluation's cached judge for this vocabulary and size, set to read sample_grid's
        pictures; None without a word list or before `training.evaluate --judge-only` cached one."""
        if self.vocabulary is None:
            return None
        return GridJudge.find(self.run / "eval", self.cfg.vocabulary, self.px, len(self.pack.emoji),
                              [self.vocabulary.subjects[w] for w in SAMPLE_SUBJECTS])

    def _init_source(self) -> Path:
        """The checkpoint `--init-unet` names (a file, or a run folder holding unet.safetensors),
        after checking it reads prompts with this run's tokenizer (copied here when this run has
        none yet): a text encoder is tied to its token ids."""
        src = Path(self.init_unet)
        path = src / "unet.safetensors" if src.is_dir() else src
        if not path.is_file():
            raise SystemExit(f"--init-unet {src}: no UNet checkpoint there (unet.safetensors)")
        theirs, mine = path.parent / "tokenizer", self.run / "tokenizer"
        if not (theirs / "vocab.json").is_file():
            raise SystemExit(f"--init-unet {src}: its run folder has no tokenizer/ to check the token ids against")
        if not (mine / "vocab.json").exists():
            shutil.copytree(theirs, mine, dirs_exist_ok=True)
        if (theirs / "vocab.json").read_bytes() != (mine / "vocab.json").read_bytes():
            raise SystemExit(f"--init-unet {src}: its tokenizer differs from this run's ({mine}); its text encoder "
                             "would read other words. Start from a run with the same tokenizer.")
        return path

    def _step_of(self, phase: str) -> int | None:
        """The step a phase's checkpoint in this run reached (None: that phase never ran here)."""
        side = self.run / f"{phase}.json"
        return json.loads(side.read_text())["step"] if side.exists() else None

    def vae_factor(self) -> int:
        return 2 ** (len(self.size.vae_channels) - 1)

    def latent_pool(self, vae, tok, deadline: float) -> dict[str, torch.Tensor] | None:
        """`cfg.pool` compositions at the UNet's size, rendered, VAE-encoded (mean, fp16) and
        tokenised once, in chunks of POOL_CHUNK (fewer for a small pool) kept in the run folder. Chunk k is a pure
        function of (seed, k), so an interrupted pool resumes where it stopped. Captions are
        drawn without dropout; training drops them, so each picture also serves unconditioned."""
        folder = self.run / f"pool-{self.px}"
        if not self.read_only:
            folder.mkdir(exist_ok=True)
        chunk = min(POOL_CHUNK, self.cfg.pool)
        n_chunks = -(-self.cfg.pool // chunk)
        sampler, encode = self.pool_sampler(), _encoder(tok)
        t0, made = time.time(), 0
        for k in range(n_chunks):
            path = folder / f"chunk-{k:05d}.safetensors"
            if path.exists():
                continue
            if self.read_only:
                raise SystemExit(f"{folder}: the latent pool at {self.px} px lacks chunk {k} of {n_chunks}, and the run "
                                 "folder is open read-only (training builds the pool)")
            if time.time() > deadline:
                log(f"pool: {k} of {n_chunks} chunks; stopping, run again to go on")
                return None
            tmp = path.with_suffix(".tmp")
            save_file(self.compose_latents(sampler, POOL_SEED + k, chunk, vae, encode), str(tmp))
            os.replace(tmp, path)
            made += 1
            log(f"pool: chunk {k + 1}/{n_chunks} ({made * chunk / (time.time() - t0):.1f} pictures/s)")
        chunks = [load_file(str(folder / f"chunk-{k:05d}.safetensors")) for k in range(n_chunks)]
        pool = {key: torch.cat([c[key] for c in chunks])[: self.cfg.pool] for key in chunks[0]}
        if self.cfg.pool_large or self.cfg.text_aux:
            pool.update({k: v[: self.cfg.pool] for k, v in self.pool_recipe_flags(sampler, chunk, n_chunks).items()})
        if self.cfg.pool_large:
            log(f"pool: {int(pool['large'].sum())} large single emoji, {self.cfg.pool_large:.0%} of each batch")
        log(f"pool: {len(pool['latents'])} pictures at {self.px} px from {folder}")
        return pool

    @staticmethod
    def pool_recipe_flags(sampler: D.Sampler, chunk: int, n_chunks: int) -> dict[str, torch.Tensor]:
        """[n_chunks * chunk] bools from the pool pictures' recipes: "large", one emoji at the
        "large" size (for pool_large); "said_style", the caption names the style (for text_aux's
        labels). A chunk's recipes are a pure function of its seed, so they are drawn again (no
        rendering, ~70 ms a chunk of 1,024) instead of being stored: pools made before these flags
        existed work too."""
        low = D.SIZES["large"][0]
        large, said = [], []
        for k in range(n_chunks):
            b = sampler.train_batch(POOL_SEED + k, chunk)
            large.append(torch.as_tensor((b.emoji[:, 1] < 0) & (b.scale[:, 0] >= low)))
            said.append(torch.as_tensor(b.said_style))
        return {"large": torch.cat(large), "said_style": torch.cat(said)}

    def compose_latents(self, sampler: D.Sampler, seed_step: int, n: int, vae, encode) -> dict[str, torch.Tensor]:
        """n compositions drawn by `sampler` at `seed_step`, rendered at the UNet's size and
        VAE-encoded (latent means, fp16), with token ids, emoji and style: one pool chunk."""
        renderer = self.renderer_at(self.px)     # (cached) only a missing chunk needs the sprites
        b = sampler.train_batch(seed_step, n)
        with torch.no_grad(), self.autocast():
            x = renderer(b)
            lat = [vae.encode(x[j:j + 64]).latent_dist.mean.float().cpu().half() for j in range(0, n, 64)]
        return {"latents": torch.cat(lat).contiguous(), "ids": encode(b.captions).to(torch.int16).contiguous(),
                "emoji": torch.as_tensor(b.emoji, dtype=torch.int16), "style": torch.as_tensor(b.style, dtype=torch.int8)}

    def pool_sampler(self) -> D.Sampler:
        """What the latent pool is drawn with: the training sampler without caption dropout."""
        return D.Sampler(self.pack, self.split, self.cfg.seed, self.cfg.pair_prob, 0.0,
                         self.sampler.names, self.cfg.canonical)

    # -- export -----------------------------------------------------------------------------
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
        text.load_state_dict(_unprefixed("text", flat))
        unet.load_state_dict(_unprefixed("unet", flat))
        ema = _unprefixed("ema", flat)
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


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("training/build/data"),
                   help="data pack from `python -m training.data build` (built here if missing and --fetch)")
    p.add_argument("--fetch", action="store_true", help="build the data pack with npm first if it is missing")
    p.add_argument("--run", type=Path, default=Path("training/runs/main"), help="run folder: config, tokenizer, checkpoints")
    p.add_argument("--phase", choices=("all", "vae", "unet", "decoder", "none"), default="all",
                   help="what to train in this invocation (all = VAE then UNet; decoder = fine-tune the VAE's decoder, "
                        "any time after the VAE, up to --set decoder_steps=N)")
    p.add_argument("--minutes", type=float, default=None, help="stop, checkpoint and exit after this long (resume by running again)")
    p.add_argument("--stop-at", type=int, default=None, help="checkpoint and exit when a phase reaches this step")
    p.add_argument("--export", type=Path, default=None, help="write the diffusers folder here after training")
    p.add_argument("--smoke", action="store_true", help="toy model, a few steps on the CPU (for tests)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the VAE encoder, text encoder and UNet")
    p.add_argument("--shard", default="15MB", help="largest safetensors file in the export")
    p.add_argument("--init-unet", type=Path, default=None, metavar="RUN_OR_FILE",
                   help="start this run's UNet and text encoder from another run's checkpoint (same tokenizer), e.g. "
                        "the 64 px UNet for a 128 px phase; used only while this run has no UNet checkpoint")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a Config value, e.g. --set unet_steps=40000 (unknown keys are errors)")
    args = p.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    cfg = Config.smoke() if args.smoke else Config.cpu() if device == "cpu" else Config()
    known = {f.name: f.type for f in fields(Config)}
    saved = args.run / "config.json"
    if saved.exists():
        # A run folder remembers its settings: resuming needs only --run and --phase, and a
        # --set from an earlier invocation (a longer schedule, a lever) stays until set again.
        # Threads belong to the machine and the moment, not to the run.
        for key, value in json.loads(saved.read_text()).items():
            if key in known and key != "threads":
                setattr(cfg, key, value)
    for kv in args.set:
        key, _, value = kv.partition("=")
        if key not in known:
            p.error(f"unknown config key {key!r}; known: {', '.join(known)}")
        setattr(cfg, key, type(getattr(cfg, key))(value))

    if not (args.data / "meta.json").exists():
        if not args.fetch:
            p.error(f"no data pack at {args.data}: run `python -m training.data build --out {args.data}` or pass --fetch")
        D.build_pack(D.fetch(D.cache_dir()), args.data)

    if device == "cpu" and not args.smoke:
        # Pinned on purpose: one thread a core; run it under `nice -n 19` beside other work.
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    deadline = time.time() + (args.minutes * 60 if args.minutes else float("inf"))
    run = Run(cfg, args.data, args.run, device, compile_=args.compile, stop_at=args.stop_at, init_unet=args.init_unet)
    log(f"device {device}, size {cfg.size}, {len(run.split.train_images)} training images, "
        f"{len(run.split.eval_images)} held out")
    if args.phase in ("all", "vae"):
        if run.train_vae(deadline) < cfg.vae_steps:
            return 0        # out of time; the next invocation resumes
    if args.phase == "decoder":
        if run.train_decoder(deadline) < cfg.decoder_steps:
            return 0
    if args.phase in ("all", "unet"):
        if run.train_unet(deadline) < cfg.unet_steps:
            return 0
    if args.export:
        run.export(args.export, shard=args.shard)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
