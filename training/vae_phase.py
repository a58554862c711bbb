"""The VAE phases of a run: the autoencoder trained on (cropped) compositions, then its decoder
alone with the encoder frozen, and the latent scaling factor. A mixin of `training.train.Run`,
which holds the configuration, the run folder and the renderers."""

from __future__ import annotations

import json
import math
import time

import torch
import torch.nn.functional as F

from training import data as D
from training import model as M
from training.batches import Prefetch, _gen
from training.common import (load_checkpoint, log, lr_at, monitoring, prefixed, save_checkpoint, stop_signalled,
                             unprefixed)
from training.discriminator import PatchDiscriminator, adaptive_weight, discriminator_loss, generator_loss
from training.monitor import corner_error, vae_round_trip


class VAEPhase:
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
            vae.load_state_dict(unprefixed("vae", flat))
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
        fit = self.schedule_fit("vae", step, deadline)
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
            self.refit(fit, "vae", step)
            if step % 50 == 0 or step == cfg.vae_steps:
                last_loss = loss.item()
                n = cfg.vae_batch or cfg.batch
                log(f"vae step {step}/{cfg.vae_steps} loss {last_loss:.4f} "
                    f"{(step - start) * n / max(1e-9, time.time() - t0):.1f} samples/s")
                if not math.isfinite(last_loss):
                    raise FloatingPointError(f"vae loss is {last_loss} at step {step}")
            if self._checkpoint("vae", step, cfg.vae_steps, deadline, vae, opt, ckpt,
                                lambda: prefixed("vae", vae), loss):
                break
        pre.close()
        return step

    def _checkpoint(self, phase: str, step: int, total: int, deadline: float, vae, opt, ckpt,
                    tensors, loss: torch.Tensor, also=None) -> bool:
        """The end of one VAE or decoder step: a checkpoint every `ckpt_every` steps, at the
        phase's last step and when this invocation runs out of time (`--minutes`, `--stop-at`) or is
        asked to stop by a signal, with the round trips every `sample_every` (and at a stop, unless a
        signal asked for it). `tensors` gives what to save; `loss` is read (a device sync) only when it
        is saved; `also()` saves what else the phase keeps. True when the loop must stop here."""
        cfg = self.cfg
        stop = time.time() > deadline or step == self.stop_at or stop_signalled()
        if step % cfg.ckpt_every == 0 or step == total or stop:
            save_checkpoint(ckpt, tensors(), opt, {"step": step, "loss": loss.item()})
            if also is not None:
                also()
            if (step % cfg.sample_every == 0 or step == total or stop) and not stop_signalled():
                with monitoring(f"{phase} step {step}: the round trips", vae):
                    self.round_trips(vae, phase, step)
                stop = stop or stop_signalled()     # a signal that cut them short stops here, after the checkpoint
        if stop and step < total:
            log(f"{phase}: stopping at step {step}; run again to resume")
        return stop

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
        vae.load_state_dict(unprefixed("vae", flat))
        if decoder and (self.run / "decoder.safetensors").exists():
            dec, _ = load_checkpoint(self.run / "decoder.safetensors")
            vae.load_state_dict(unprefixed("vae", dec), strict=False)
        vae.requires_grad_(False).eval()
        return vae

    def train_decoder(self, deadline: float) -> int:
        """Fine-tune the VAE's decoder (and post_quant_conv) with the encoder frozen, on whole
        pictures at the UNet's size and on crops at the full size. The latent space does not
        move, so the latent pool and the UNet trained on it stay valid: sharper pictures for
        free. Writes decoder.safetensors (the decoder's weights + optimizer).

        With `decoder_gan` > 0 a patch discriminator (training.discriminator) is trained beside
        it and, once it has had GAN_WARMUP steps, the decoder also learns to fool it, weighted
        by `decoder_gan` against the reconstruction (decoder_disc.safetensors keeps it)."""
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
        adv = self.discriminator() if cfg.decoder_gan > 0 else None
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
            loss = rec_loss = F.l1_loss(rec, x) + F.mse_loss(rec, x)
            if adv is not None and adv.steps >= GAN_WARMUP:
                g_loss = generator_loss(adv.disc(rec))
                adv.weight = adaptive_weight(rec_loss, g_loss, vae.decoder.conv_out.weight, cfg.decoder_gan)
                loss = rec_loss + adv.weight * g_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            if adv is not None:
                adv.step(x, rec.detach())
            step += 1
            if step % 50 == 0 or step == cfg.decoder_steps:
                log(f"decoder step {step}/{cfg.decoder_steps} loss {loss.item():.4f} (reconstruction {rec_loss.item():.4f}"
                    + (f", {adv.line()}" if adv is not None else "")
                    + f") {(step - start) * n / max(1e-9, time.time() - t0):.1f} samples/s")
            if self._checkpoint("decoder", step, cfg.decoder_steps, deadline, vae, opt, ckpt,
                                lambda: {f"vae.{k}": v for k, v in vae.state_dict().items()
                                         if k.startswith(("decoder.", "post_quant_conv."))}, loss,
                                also=adv.save if adv is not None else None):
                break
        pre.close()
        return step

    def discriminator(self) -> "Adversary":
        """The decoder phase's discriminator, resumed from decoder_disc.safetensors when there is one."""
        adv = Adversary(self.run / "decoder_disc.safetensors", self.device, self.cfg.decoder_lr)
        if adv.steps:
            log(f"decoder: discriminator resumed at its step {adv.steps}")
        return adv

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


GAN_WARMUP = 100   # discriminator steps before its verdict reaches the decoder: a random one only adds noise


class Adversary:
    """The discriminator of the decoder phase, its optimizer and its checkpoint (never exported)."""

    def __init__(self, path, device, lr: float):
        self.path = path
        self.disc = PatchDiscriminator().to(device)
        self.opt = torch.optim.AdamW(self.disc.parameters(), lr=lr, betas=(0.5, 0.9), weight_decay=0.0)
        self.steps, self.weight, self.loss = 0, torch.zeros(()), torch.full((), float("nan"))
        if path.exists():
            flat, info = load_checkpoint(path, self.opt)
            self.disc.load_state_dict(unprefixed("disc", flat))
            self.steps = info["step"]

    def step(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.loss = discriminator_loss(self.disc(real), self.disc(fake))
        self.opt.zero_grad(set_to_none=True)
        self.loss.backward()
        self.opt.step()
        self.steps += 1

    def save(self) -> None:
        save_checkpoint(self.path, prefixed("disc", self.disc), self.opt, {"step": self.steps, "loss": self.loss.item()})

    def line(self) -> str:
        return f"discriminator {self.loss.item():.3f}, adversarial weight {float(self.weight):.3f}"
