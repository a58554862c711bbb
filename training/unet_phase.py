"""The UNet phase of a run: text encoder + UNet trained together on the latent pool (or on
fresh batches), with the probes, the subject grid and its judge every `probe_every` steps. A
mixin of `training.train.Run`."""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from training import model as M
from training.batches import FreshBatches, PoolBatches, _gen
from training.common import (load_checkpoint, log, lr_at, monitoring, prefixed, save_checkpoint, stop_signalled,
                             unprefixed)
from training.monitor import (SAMPLE_SUBJECTS, CaptionGain, ConditioningProbe, GridJudge, TextSeparation, WordGain,
                              background_colour, background_line, ema_weights, finish_from_noise, placement,
                              placement_line, sample_grid)
from training.text_aux import TextAux


def t_exponent_at(step: int, cfg) -> float:
    """The exponent of the training timesteps' draw t = 999 u^e at `step`: `t_exponent` (0.5 leans
    to high noise, where the prompt decides what is drawn, and lets the words take hold early),
    then 1 (uniform) from `t_uniform_from`, when the low-noise steps that draw edges and flat fills
    need their share (cpu5-f4's A/B at 11,000: held-out style 57.6% uniform, 53.9% leaning)."""
    return 1.0 if cfg.t_uniform_from and step >= cfg.t_uniform_from else cfg.t_exponent


class UNetPhase:
    def learned_names(self) -> dict[int, list[str]]:
        """Emoji id -> its words (canonical first), for the emoji this run's UNet learns."""
        return {e: n for e, n in self.sampler.names.items() if e in self.split.emoji}

    def build_denoiser(self, tok):
        torch.manual_seed(self.cfg.seed + 1)
        text = M.build_text_encoder(self.size, len(tok), tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
        unet = M.build_unet(self.size, bool(self.cfg.pooled_text))
        return text.to(self.device), unet.to(self.device)

    def train_unet(self, deadline: float) -> int:
        cfg, ckpt = self.cfg, self.run / "unet.safetensors"
        start_from = self._init_source() if not ckpt.exists() and self.init_unet else None
        tok = self.tokenizer()
        vae = self.frozen_vae()
        sf = self.latent_scale(vae)
        # The pipelines drawing the subject grid and the probes' pictures divide latents by this before
        # decoding, as the export's will (training.export sets the same number).
        vae.register_to_config(scaling_factor=sf)
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
            text.load_state_dict(unprefixed("text", flat))
            unet.load_state_dict(unprefixed("unet", flat))
            ema_sd = unprefixed("ema", flat)
            for i, e in enumerate(ema):
                e.copy_(ema_sd[str(i)])
            step, aux_state = info["step"], unprefixed("aux", flat)
            for g, base in zip(opt.param_groups, (cfg.text_lr or cfg.lr, cfg.lr)):
                g["base_lr"] = base           # a resumed run may have changed its rates
            log(f"unet: resumed at step {step}")
        elif start_from is not None:
            flat, info = load_checkpoint(start_from)
            text.load_state_dict(unprefixed("text", flat))
            unet.load_state_dict(unprefixed("unet", flat))
            ema_sd = unprefixed("ema", flat)
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
        pool = None
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
            aux = TextAux(text.config.hidden_size, len(self.pack.emoji), cfg.text_aux_colour,
                          cfg.text_aux_place).to(self.device)
            changed = []
            if aux_state:   # a head turned on since the checkpoint (the colour's) starts new; one turned off goes
                keys = aux.load_state_dict(aux_state, strict=False)
                changed = [f"{k} new" for k in keys.missing_keys] + [f"{k} dropped" for k in keys.unexpected_keys]
            # Its own optimizer, not a third group of `opt`: checkpoints with and without the head
            # then resume each other. Its moments are not kept; they rebuild in a few dozen steps.
            aux_opt = torch.optim.AdamW(aux.parameters(), lr=1e-3, weight_decay=0.0)
            log(f"text aux: weight {cfg.text_aux:g}"
                + (f", background colour {cfg.text_aux_colour:g}" if cfg.text_aux_colour else "")
                + (f", place {cfg.text_aux_place:g}" if cfg.text_aux_place else "")
                + f", head {'resumed' if aux_state else 'new'}"
                + (f" ({', '.join(changed)})" if changed else ""))
        log(f"unet: {self.px} px, batch {cfg.batch}, lr {cfg.lr:g} (text {cfg.text_lr or cfg.lr:g}), "
            f"t = 999 u^{cfg.t_exponent:g}" + (f" (u^1 from step {cfg.t_uniform_from})" if cfg.t_uniform_from else "")
            + f", {'pool of ' + str(len(source)) if cfg.pool else 'fresh batches'}")
        t0, start, losses = time.time(), step, []
        fit = self.schedule_fit("unet", step, deadline)
        while step < cfg.unet_steps:
            for g in opt.param_groups:
                g["lr"] = lr_at(step, g["base_lr"], cfg.warmup, cfg.unet_steps)
            gen = _gen(self.device, cfg.seed, 6, step)
            z, ids, labels = source.get(step, gen, sf)
            noise = torch.randn(z.shape, device=z.device, generator=gen)
            u = torch.rand(z.shape[0], device=z.device, generator=gen)
            t = (u ** t_exponent_at(step, cfg) * (sched.config.num_train_timesteps - 1)).round().long()
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
            self.refit(fit, "unet", step)
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
            stop = time.time() > deadline or step == self.stop_at or stop_signalled()
            look = stop and not stop_signalled()    # the probes and grid at a stop take minutes: not when a signal asks
            if (step % cfg.probe_every == 0 or step == cfg.unet_steps or look) and not stop_signalled():
                with monitoring(f"unet step {step}: the probes", text, unet):
                    log(probe(text, unet))
                    if separation is not None:
                        log(separation(text))
                    if gain is not None:
                        log(gain(text, unet, acp))
                        log(words(text, unet, acp))
            stop = stop or stop_signalled()         # a signal that cut the probes short stops here
            if step % cfg.ckpt_every == 0 or step == cfg.unet_steps or stop:
                tensors = {**prefixed("text", text), **prefixed("unet", unet),
                           **{f"ema.{i}": e for i, e in enumerate(ema)},
                           **(prefixed("aux", aux) if aux is not None else {})}
                save_checkpoint(ckpt, tensors, opt, {"step": step, "loss": loss.item(), "latent_scale": sf,
                                                     "px": self.px, "lineage": lineage,
                                                     "seconds": round(seconds + time.time() - t0, 1)})
                if (self.draws_grids and (step % cfg.sample_every == 0 or step == cfg.unet_steps or look)
                        and not stop_signalled()):
                    with monitoring(f"unet step {step}: the subject grid and its probes", text, unet):
                        self.sample_and_judge(text, unet, vae, tok, params, ema, words, pool, sf, acp, step)
                    stop = stop or stop_signalled()     # the checkpoint of this step is written
            if stop and step < cfg.unet_steps:
                log(f"unet: stopping at step {step}; run again to resume")
                break
        source.close()
        return step

    @property
    def draws_grids(self) -> bool:
        """The subject grid and its probes, with each checkpoint at `sample_every`: not for the toy size
        (the tests' runs), where 120 pictures a checkpoint would cost more than the training."""
        return self.cfg.size != "smoke"

    def sample_and_judge(self, text, unet, vae, tok, params, ema, words, pool, sf: float, acp, step: int) -> None:
        """With the EMA weights (what an export ships): the subject grid (samples.png), the background
        colour and place probes, the EMA's word gain and finish.png (with a pool), then the grid judged."""
        with ema_weights(params, ema):
            pictures = sample_grid(text, unet, vae, tok, self.px, self.vae_factor(), self.run, step)
            background = background_colour(text, unet, vae, tok, self.px, self.vae_factor())
            log(background_line(background))
            place = placement(text, unet, vae, tok, self.px, self.vae_factor())
            log(placement_line(place))
            if words is not None:   # the raw weights' figure swings with the rate; the EMA's ships
                log(words(text, unet, acp, weights="EMA"))
                finish_from_noise(text, unet, vae, tok, pool, sf, self.run / "finish.png")
        self.judge_grid(pictures, step, {"background": background["right"],
                                         "background_pictures": background["pictures"],
                                         "place": place["right"], "place_pictures": place["pictures"]})

    def judge_grid(self, pictures: torch.Tensor, step: int, also: dict | None = None) -> dict | None:
        """Score the subject grid with the evaluation's cached judge, if there is one for this
        vocabulary and size; log it and append it to grid_scores.jsonl (the run's curve), with
        `also` (the background colour and place probes' counts)."""
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
            f.write(json.dumps({"step": step, "judge": judge.path.name, **score, **(also or {})}) + "\n")
        return score

    def grid_judge(self) -> GridJudge | None:
        """The evaluation's cached judge for this vocabulary and size (`judge_px`), set to read sample_grid's
        pictures; None without a word list or before `training.evaluate --judge-only` cached one."""
        if self.vocabulary is None:
            return None
        return GridJudge.find(self.run / "eval", self.cfg.vocabulary, self.cfg.judge_px or self.px, len(self.pack.emoji),
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
