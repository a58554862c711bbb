"""Train the default model: tokenizer, then the VAE, then text encoder + UNet together.

On the developer machine's CPU (`Config.cpu()`, the default there), in the background, over many
working sessions; each invocation stops itself with a checkpoint after --minutes, the next resumes:

    nice -n 19 python -m training.train --data training/build/data --run training/runs/cpu8 --minutes 150

On the lent GPU machine, in one call (`training/device.sh train`; `Config.gpu()`, the default on a
GPU): each phase's schedule fitted to the time the call has, from its first steps' speed:

    python -m training.train --data training/build/data --run RUN --minutes 7.6 --fit vae=1.5 --fit unet=999
    python -m training.train --data training/build/data --run RUN --phase none --export /tmp/m
    python -m training.ship --model /tmp/m --eval-dir training/runs/cpu8/eval     # evaluates; copies into models/default if it passes

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
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

# On a CPU the trainer's OpenMP threads wait between the thousands of small parallel regions
# of every step. Sleeping at once (OMP_WAIT_POLICY=PASSIVE, this trainer's setting until
# 2026-12-01) cost a fifth of the step's speed alone; a short spin first keeps it, and a
# foreground job beside the nice-19 trainer ran as fast either way (bench/omp_wait.py: x1.27
# alone, x1.01 foreground). A policy set by the caller stands. Must be set before torch loads OpenMP.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")
import torch  # noqa: E402

from training import data as D  # noqa: E402
from training import model as M  # noqa: E402
from training import sources as S  # noqa: E402
from training.common import ScheduleFit, checkpoint_info, log, stop_on_signals  # noqa: E402
from training.export import Export  # noqa: E402
from training.pool import LatentPool  # noqa: E402
from training.tokenizer import load_tokenizer, train_tokenizer  # noqa: E402
from training.unet_phase import UNetPhase  # noqa: E402
from training.vae_phase import VAEPhase  # noqa: E402
from training.vocab import Vocabulary, learned_split  # noqa: E402


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
    decoder_gan: float = 0.0       # the decoder phase's adversarial loss against a patch discriminator, x its adaptive weight; 0 = off
    threads: int = 0               # torch threads on a CPU; 0 = every core
    unet_steps: int = 20000        # text encoder + UNet; reached over several resumed runs (~20 it/s hoped on an H100)
    lr: float = 3e-4
    text_lr: float = 0.0           # the text encoder's learning rate; 0 = lr
    warmup: int = 500
    ema: float = 0.9995
    unet_px: int = 0               # picture size the UNet trains on (64, 96, 128); 0 = the model's size
    judge_px: int = 0              # which cached judge (by its picture size) reads the subject grid, training.ceiling and training.evaluate; 0 = unet_px
    t_exponent: float = 1.0        # training timesteps t = 999 * u**t_exponent; 0.5 leans toward high noise
    t_uniform_from: int = 0        # from this UNet step on, t_exponent 1 (uniform t); 0 = never
    pool: int = 0                  # pre-render + pre-encode this many compositions once and train from them; 0 = fresh each step
    pool_large: float = 0.0        # share of each pool batch drawn from the pool's large single emoji; 0 = the pool as drawn
    text_aux: float = 0.0          # weight of text_aux.TextAux's loss (the caption's encoding names its emoji and style); 0 = off
    text_aux_colour: float = 0.0   # within text_aux: the weight of naming the background colour too; 0 = not named
    text_aux_place: float = 0.0    # within text_aux: the weight of naming the place ("in the top left"); 0 = not named
    vocabulary: str = "all"        # "common": training.vocab's subjects and names; "all": every emoji, datasource names
    pooled_text: int = 0           # 1: the UNet also hears the caption's pooled encoding in its timestep embedding (model.unet_config)
    canonical: float = 0.0         # share of captions naming an emoji by its first (CLDR) name
    joined_colour: float = 0.0     # share of captions naming the background that join it to the subject without a comma
    pair_prob: float = 0.25        # share of samples with two emoji side by side
    drop_caption: float = 0.1      # empty caption share, for classifier-free guidance
    vocab: int = 4096
    ckpt_every: int = 1000         # steps between checkpoints (also written when time is up)
    probe_every: int = 200         # steps between the probes (conditioning, caption gain, raw word gain; also at the end)
    sample_every: int = 1000       # steps between subject grids (samples.png), at a checkpoint
    min_ship_steps: int = 5000     # training.ship refuses an export with fewer UNet steps, before evaluating it

    # What a run folder is: changing these needs a new --run. The rest (schedule, speed,
    # resolution, pool) may change from one invocation to the next, and is logged.
    IDENTITY = ("size", "seed", "vocab", "vocabulary", "vae_crop", "kl_weight", "pooled_text")

    @classmethod
    def of_run(cls, folder: Path) -> "Config":
        """The configuration a run folder holds (its config.json), keys no longer known left out."""
        saved = json.loads((folder / "config.json").read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})

    @classmethod
    def cpu(cls) -> "Config":
        """The recipe for a 2-core CPU (see the model card): small batches; 64 px pictures through
        a VAE that downsamples 4x (size "f4"), so the UNet works on the 16x16x4 latents the 128 px
        default would, at the same cost a step, but the VAE compresses 12x instead of 48x: its
        round trip of the evaluation's pictures keeps what the judge reads (training.ceiling: top 5
        90%, style 88% at 18,000 steps, where the 128 px VAE capped them at 76% and 63%). The judge is
        the one trained at 128 px (`judge_px`; it reads every picture at 64x64). The decoder may then be
        fine-tuned alone (--phase decoder, any time: the latent space stays).
        The text encoder must name each caption's emoji and style from step 0 (`text_aux`):
        trained through the UNet's loss alone it told subjects apart mostly by colour. It must
        name the background colour too (`text_aux_colour`): naming only emoji and style, it crowded
        the colour out, and cpu5-f4 drew the asked background at chance for 6,800 steps (A/B from
        there, 1,000 steps: 82% of 44 with the colour named, 34% without; subjects and styles the
        same). Half the captions naming the background join it to the subject without a comma
        (`joined_colour`), as people type it: at step 9,000, trained on the comma form alone, "cat on a
        white background, 3d style" got its background 11 times in 44 where "cat, 3d style, on a
        white background" got it 43 times. Timesteps lean to high noise until step 11,000, then are
        drawn uniformly (`t_uniform_from`): the words had taken hold, and the style, read from edges
        and fills, had stalled (A/B at 11,000: held-out style 57.6% against 53.9%, top 5 29.7% against
        27.6%, 330 prompts). The schedule is long (30,000 steps of 32): a run spans many working sessions."""
        return cls(size="f4", batch=32, vae_batch=16, vae_crop=64, vae_steps=18000, vae_lr=5e-4, vae_warmup=100,
                   decoder_steps=1500, ckpt_every=200, probe_every=1000, vocabulary="common", canonical=0.5, unet_px=64,
                   judge_px=128, pool=49152, t_exponent=0.5, t_uniform_from=11000, lr=5e-4, text_lr=1e-3, warmup=200, unet_steps=30000, ema=0.999,
                   text_aux=1.0, text_aux_colour=1.0, joined_colour=0.5, min_ship_steps=3000)

    @classmethod
    def gpu(cls) -> "Config":
        """The CPU recipe with a GPU's batches, for the lent GPU machine's one call (training/device.sh):
        the same 64 px `f4` model, vocabulary, captions, text aux and timestep schedule, 4x the UNet's batch
        and 4x the VAE's, learning rates raised by about the square root of that, no decoder fine-tune
        (cpu5-f4's gained nothing), and step counts that are ceilings: `--fit` shortens them to the time
        the call has, from the speed of the first steps (`t_uniform_from` keeps its 11/30 of the UNet's
        schedule). Checkpoints, probes and grids come seldom: the fit times plain steps. Not yet run on
        a GPU (2026-12-02): the batch and rate changes are a judgement."""
        base = cls.cpu()
        return replace(base, batch=128, vae_batch=64, vae_steps=18000, vae_lr=8e-4, vae_warmup=300,
                       decoder_steps=0, lr=8e-4, text_lr=1.5e-3, warmup=500, ckpt_every=2500,
                       probe_every=5000, sample_every=5000)

    @classmethod
    def smoke(cls) -> "Config":
        return cls(size="smoke", batch=8, vae_steps=6, unet_steps=8, warmup=2, ema=0.9, vocab=600,
                   ckpt_every=4, vae_lr=1e-3, lr=1e-3)


# ---------------------------------------------------------------------------- the run


class Run(VAEPhase, UNetPhase, LatentPool, Export):
    """One run folder and its configuration: the pieces every phase uses. The phases themselves
    are mixins, one module each (vae_phase, unet_phase, pool, export)."""

    def __init__(self, cfg: Config, data: Path, run: Path, device: str, compile_: bool = False,
                 stop_at: int | None = None, init_unet: Path | None = None, write_config: bool = True,
                 fit: dict[str, float] | None = None):
        """`write_config=False` reads a run folder without touching it (training.compare measures
        runs that are still training)."""
        self.cfg, self.run, self.device = cfg, run, torch.device(device)
        self.stop_at = stop_at          # leave the loop (with a checkpoint) at this step
        self.read_only = not write_config   # never write into the folder: no config, tokenizer or pool chunks
        self.init_unet = init_unet      # a UNet checkpoint (or its run folder) to start this run's UNet from
        self.fit = fit or {}            # phase -> minutes its schedule is shortened to fit (`--fit`)
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
            self.save_config()
        self.pack = D.Pack.load(data)
        # The VAE learns every emoji (it is a general autoencoder); the denoiser learns the vocabulary.
        self.vae_sampler = D.Sampler(self.pack, D.Split.make(self.pack, cfg.seed), cfg.seed, cfg.pair_prob, cfg.drop_caption)
        try:
            self.split, names = learned_split(self.pack, cfg.seed, cfg.vocabulary)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        self.vocabulary = Vocabulary.build(self.pack) if cfg.vocabulary == "common" else None
        self.sampler = D.Sampler(self.pack, self.split, cfg.seed, cfg.pair_prob, cfg.drop_caption, names, cfg.canonical,
                                 joined_colour=cfg.joined_colour)
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

    def save_config(self) -> None:
        """The run folder's config.json: the configuration it was started with and its schedule now."""
        (self.run / "config.json").write_text(json.dumps(asdict(self.cfg), indent=1) + "\n")

    def schedule_fit(self, phase: str, start: int, deadline: float) -> ScheduleFit | None:
        """`--fit PHASE=MINUTES`: the phase's schedule shortened to its time (at most to the
        invocation's deadline), from its first steps' speed."""
        minutes = self.fit.get(phase)
        return ScheduleFit(minutes, start, deadline) if minutes else None

    def refit(self, fit: ScheduleFit | None, phase: str, step: int) -> None:
        """After each step: once the fit has timed enough steps, the phase's total becomes what
        fits (a UNet's switch to uniform timesteps moves with it, in proportion), and is written to
        config.json so a resumed run or an export reads the same schedule."""
        key = f"{phase}_steps"
        total = getattr(self.cfg, key)
        new = fit(step, total) if fit is not None else None
        if new is None or new == total:
            return
        setattr(self.cfg, key, new)
        note = ""
        if phase == "unet" and self.cfg.t_uniform_from:
            self.cfg.t_uniform_from = max(1, round(self.cfg.t_uniform_from * new / total))
            note = f"; uniform timesteps from step {self.cfg.t_uniform_from}"
        self.save_config()
        log(f"{phase}: schedule fitted to {fit.seconds / 60:.1f} minutes (--fit {phase}={self.fit[phase]:g}, at most "
            f"to the deadline): {new} steps instead of {total}{note}")

    def _maybe_compile(self, m):
        return torch.compile(m) if self.compile else m

    def _step_of(self, phase: str) -> int | None:
        """The step a phase's checkpoint in this run reached (None: that phase never ran here)."""
        info = checkpoint_info(self.run / f"{phase}.safetensors")
        return None if info is None else info["step"]

    def vae_factor(self) -> int:
        return 2 ** (len(self.size.vae_channels) - 1)

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
    p.add_argument("--minutes", type=float, default=None,
                   help="stop, checkpoint and exit after this long (resume by running again); SIGTERM or Ctrl-C "
                        "does the same at once, without the probes")
    p.add_argument("--stop-at", type=int, default=None, help="checkpoint and exit when a phase reaches this step")
    p.add_argument("--export", type=Path, default=None, help="write the diffusers folder here after training")
    p.add_argument("--smoke", action="store_true", help="toy model, a few steps on the CPU (for tests)")
    p.add_argument("--recipe", choices=("cpu", "gpu", "128"), default=None,
                   help="the starting configuration: cpu (Config.cpu, 64 px, small batches; the default on a CPU), "
                        "gpu (Config.gpu, the same model with a GPU's batches; the default on a GPU), 128 (Config(), "
                        "the 128 px feasibility recipe)")
    p.add_argument("--fit", action="append", default=[], metavar="PHASE=MINUTES",
                   help="shorten the vae or unet phase's schedule so it ends about MINUTES after its first step, "
                        "from the speed of its first 50 steps (for a machine of unknown speed; training/device.sh)")
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
    recipe = args.recipe or ("cpu" if device == "cpu" else "gpu")
    cfg = Config.smoke() if args.smoke else {"cpu": Config.cpu, "gpu": Config.gpu, "128": Config}[recipe]()
    fit = {}
    for kv in args.fit:
        phase, _, minutes = kv.partition("=")
        try:
            fit[phase] = float(minutes)
        except ValueError:
            fit[phase] = -1.0
        if phase not in ("vae", "unet") or not fit[phase] > 0:
            p.error(f"--fit {kv}: give a phase (vae or unet) and its minutes, e.g. --fit unet=5")
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
        S.build_pack(S.fetch(S.cache_dir()), args.data)

    if device == "cpu" and not args.smoke:
        # Pinned on purpose: one thread a core; run it under `nice -n 19` beside other work.
        torch.set_num_threads(cfg.threads or os.cpu_count() or 1)
    deadline = time.time() + (args.minutes * 60 if args.minutes else float("inf"))
    run = Run(cfg, args.data, args.run, device, compile_=args.compile, stop_at=args.stop_at, init_unet=args.init_unet,
              fit=fit)
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
    stop_on_signals()
    raise SystemExit(main())
