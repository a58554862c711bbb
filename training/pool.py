"""The latent pool: compositions at the UNet's size, rendered, VAE-encoded and tokenised once
and kept in the run folder in chunks, so the UNet phase trains without rendering or encoding.
A mixin of `training.train.Run`."""

from __future__ import annotations

import os
import time

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from training import data as D
from training.batches import POOL_CHUNK, _encoder
from training.common import log, stop_signalled

POOL_SEED = 30_000_000     # pool chunk k is drawn at step POOL_SEED + k


class LatentPool:
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
            if time.time() > deadline or stop_signalled():
                log(f"pool: {k} of {n_chunks} chunks; stopping, run again to go on")
                return None
            tmp = path.with_suffix(".tmp")
            save_file(self.compose_latents(sampler, POOL_SEED + k, chunk, vae, encode), str(tmp))
            os.replace(tmp, path)
            made += 1
            log(f"pool: chunk {k + 1}/{n_chunks} ({made * chunk / (time.time() - t0):.1f} pictures/s)")
        chunks = [load_file(str(folder / f"chunk-{k:05d}.safetensors")) for k in range(n_chunks)]
        pool = {key: torch.cat([c[key] for c in chunks])[: self.cfg.pool] for key in chunks[0]}
        if self.cfg.joined_colour or self.cfg.pool_large or self.cfg.text_aux:
            # the recipes drawn again once (~3.5 s for 48 chunks) for the captions and the labels
            batches = [sampler.train_batch(POOL_SEED + k, chunk) for k in range(n_chunks)]
            if self.cfg.joined_colour:
                pool["ids"] = self.pool_captions(batches, sampler.joined_colour, encode, chunks[0])[: self.cfg.pool]
            if self.cfg.pool_large or self.cfg.text_aux:
                pool.update({k: v[: self.cfg.pool] for k, v in self.pool_recipe_flags(batches).items()})
        if self.cfg.pool_large:
            log(f"pool: {int(pool['large'].sum())} large single emoji, {self.cfg.pool_large:.0%} of each batch")
        log(f"pool: {len(pool['latents'])} pictures at {self.px} px from {folder}")
        return pool

    @staticmethod
    def pool_recipe_flags(batches: list[D.Batch]) -> dict[str, torch.Tensor]:
        """Labels from the pool pictures' recipes (`batches`, one a chunk): "large", one emoji at the
        "large" size (for pool_large); "said_style", the caption names the style (for text_aux's
        labels); "colour" and "said_colour", the background and whether the caption names it (for
        text_aux_colour); "place", the place the caption names or -1 (for text_aux_place). A
        chunk's recipes are a pure function of its seed, so they are drawn again (no rendering,
        ~70 ms a chunk of 1,024) instead of being stored: pools made before these labels existed
        work too."""
        low = D.SIZES["large"][0]
        large, said, colour, said_colour, place = [], [], [], [], []
        for b in batches:
            large.append(torch.as_tensor((b.emoji[:, 1] < 0) & (b.scale[:, 0] >= low)))
            said.append(torch.as_tensor(b.said_style))
            colour.append(torch.as_tensor(b.colour, dtype=torch.int8))
            said_colour.append(torch.as_tensor(b.said_colour))
            place.append(torch.as_tensor(b.place, dtype=torch.int8))
        return {"large": torch.cat(large), "said_style": torch.cat(said), "colour": torch.cat(colour),
                "said_colour": torch.cat(said_colour), "place": torch.cat(place)}

    @staticmethod
    def pool_captions(batches: list[D.Batch], joined: float, encode, first: dict) -> torch.Tensor:
        """The pool's token ids from its recipes drawn again (`batches`) by the pool sampler, whose phrasing may have
        changed since the pool was made (`joined_colour`): the pictures are the same, only the
        captions' wording moves. Chunk 0's emoji and styles drawn again must be the stored ones
        (`first`), or the recipes are not the pool's own and its captions cannot be drawn again."""
        if not (np.array_equal(batches[0].emoji, first["emoji"].numpy()) and
                np.array_equal(batches[0].style, first["style"].numpy())):
            raise SystemExit("the latent pool's pictures are not those its recipes draw now (the data pack or the "
                             "vocabulary changed since it was made?), so its captions cannot be drawn again: "
                             "set joined_colour=0, or build a new pool")
        log(f"pool: captions drawn again, {joined:.0%} of those naming the background joined to the subject")
        return torch.cat([encode(b.captions).to(first["ids"].dtype) for b in batches])

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
                         self.sampler.names, self.cfg.canonical, joined_colour=self.cfg.joined_colour)
