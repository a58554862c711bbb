"""Where the denoiser's training batches come from, and how they are drawn ahead of time.

- `Prefetch`: batch recipes (and token ids) drawn a few steps ahead, in worker processes
  beside a GPU; order and content depend only on the step.
- `FreshBatches`: composed and VAE-encoded at every step (the GPU path).
- `PoolBatches`: drawn from a pool of pre-rendered, pre-encoded compositions (the CPU path:
  half an end-to-end CPU step was rendering and encoding).
Everything random is a function of (seed, step), so a resumed run draws what the
uninterrupted run would have drawn.
"""

from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

import numpy as np
import torch

from training import data as D

if TYPE_CHECKING:
    from training.train import Config, Run

_SAMPLER: D.Sampler | None = None


def _init_worker(sampler: D.Sampler) -> None:
    global _SAMPLER
    _SAMPLER = sampler
    torch.set_num_threads(1)


def _draw(step: int, n: int) -> D.Batch:
    return _SAMPLER.train_batch(step, n)


class Prefetch:
    """Draws batch recipes and token ids for steps start, start+1, ... ahead of the GPU.

    Drawing a recipe is plain Python (~17 ms for 256 samples on this laptop), so with
    `workers` > 0 it runs in forked processes, `depth` steps ahead; tokenising runs in
    the Rust tokenizer (batch encode, no GIL). Order and content depend only on the step.
    """

    def __init__(self, sampler: D.Sampler, tokenizer, batch: int, start: int, stop: int,
                 workers: int = 0, depth: int = 16):
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.sampler, self.batch, self.workers, self.depth = sampler, batch, workers, depth
        self.encode = _encoder(tokenizer) if tokenizer is not None else None
        self.error: BaseException | None = None
        self.stopping, self.pool = threading.Event(), None
        self.t = threading.Thread(target=self._run, args=(start, stop), daemon=True)
        self.t.start()

    def _run(self, start: int, stop: int) -> None:
        try:
            if self.workers:
                import collections
                import multiprocessing as mp

                # fork: the workers inherit the sampler and never touch CUDA.
                pool = self.pool = mp.get_context("fork").Pool(self.workers, _init_worker, (self.sampler,))
                pending, nxt = collections.deque(), start
                for step in range(start, stop):
                    while len(pending) < self.depth and nxt < stop:
                        pending.append(pool.apply_async(_draw, (nxt, self.batch)))
                        nxt += 1
                    b = pending.popleft().get()
                    if not self._put((step, b, self.encode(b.captions) if self.encode else None)):
                        return
            else:
                for step in range(start, stop):
                    b = self.sampler.train_batch(step, self.batch)
                    if not self._put((step, b, self.encode(b.captions) if self.encode else None)):
                        return
        except BaseException as e:   # surface it in the training loop instead of hanging
            self.error = e
            self._put(None)

    def _put(self, item) -> bool:
        while not self.stopping.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                pass
        return False

    def close(self) -> None:
        """Stop drawing (a run that ends early leaves steps unconsumed) and end the workers."""
        self.stopping.set()
        self.t.join(timeout=5)
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def get(self):
        item = self.q.get()
        if item is None:
            raise RuntimeError("batch preparation failed") from self.error
        return item


POOL_CHUNK = 1024


def _encoder(tokenizer):
    """captions -> [N, max_tokens] token ids (padded with the pad token), via the Rust tokenizer."""
    fast = tokenizer.backend_tokenizer
    fast.enable_truncation(tokenizer.model_max_length)
    fast.enable_padding(length=tokenizer.model_max_length, pad_id=tokenizer.pad_token_id, pad_token=tokenizer.pad_token)
    return lambda caps: torch.tensor([e.ids for e in fast.encode_batch(caps)], dtype=torch.long)


class PoolBatches:
    """Training batches drawn from the latent pool: indices, caption dropout and VAE-free,
    all a function of (seed, step)."""

    def __init__(self, pool: dict[str, torch.Tensor], cfg: "Config", tok, device):
        self.lat, self.ids, self.cfg, self.device = pool["latents"], pool["ids"], cfg, device
        # what each picture shows and whether its caption names the style and the colour: text_aux's labels
        self.emoji, self.style, self.said = pool["emoji"], pool["style"], pool.get("said_style")
        self.colour, self.said_colour, self.place = pool.get("colour"), pool.get("said_colour"), pool.get("place")
        self.empty = _encoder(tok)([""])[0]
        # cfg.pool_large: that share of every batch comes from the large single emoji (pool["large"])
        self.n_large = round(cfg.batch * cfg.pool_large) if cfg.pool_large else 0
        self.large = pool["large"].nonzero().flatten() if self.n_large else None
        if self.large is not None and not len(self.large):
            raise ValueError("pool_large is set but the pool holds no large single emoji")

    def __len__(self) -> int:
        return len(self.lat)

    def get(self, step: int, gen: torch.Generator, sf: float):
        """(latents, token ids, labels): labels (what the pictures show, for text_aux) when the
        pool carries its "said_style" flags, else None."""
        g = _gen(torch.device("cpu"), self.cfg.seed, 8, step)
        idx = torch.randint(0, len(self.lat), (self.cfg.batch,), generator=g)
        if self.n_large:
            pick = torch.randint(0, len(self.large), (self.n_large,), generator=g)
            idx[: self.n_large] = self.large[pick]
        ids = self.ids[idx].long()
        drop = torch.rand(self.cfg.batch, generator=g) < self.cfg.drop_caption
        ids[drop] = self.empty
        labels = None
        if self.said is not None:
            labels = {"emoji": self.emoji[idx].long(), "style": self.style[idx].long(),
                      "named": ~drop, "said_style": self.said[idx] & ~drop}
            if self.said_colour is not None:
                labels |= {"colour": self.colour[idx].long(), "said_colour": self.said_colour[idx] & ~drop}
            if self.place is not None:
                labels["place"] = torch.where(drop, -1, self.place[idx].long())
            labels = {k: v.to(self.device) for k, v in labels.items()}
        return (self.lat[idx].float() * sf).to(self.device), ids.to(self.device), labels

    def close(self) -> None:
        pass


class FreshBatches:
    """Training batches composed and VAE-encoded at every step (the GPU path)."""

    def __init__(self, run: "Run", vae, tok, step: int):
        self.run, self.vae = run, vae
        self.renderer = run.renderer_at(run.px)
        self.pre = Prefetch(run.sampler, tok, run.cfg.batch, step, run.cfg.unet_steps, workers=run.workers)
        self.enc = run._maybe_compile(vae.encoder)

    def get(self, step: int, gen: torch.Generator, sf: float):
        """(latents, token ids, labels): what the pictures show, for text_aux."""
        _, batch, ids = self.pre.get()
        vae = self.vae
        with torch.no_grad(), self.run.autocast():
            x = self.renderer(batch)
            moments = vae.quant_conv(self.enc(x)) if vae.quant_conv is not None else self.enc(x)
            mean, logvar = moments.float().chunk(2, dim=1)
            z = (mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * torch.randn(mean.shape, device=x.device, generator=gen)) * sf
        named = torch.tensor([c != "" for c in batch.captions])
        labels = {"emoji": torch.as_tensor(batch.emoji), "style": torch.as_tensor(batch.style), "named": named,
                  "said_style": torch.as_tensor(batch.said_style) & named, "colour": torch.as_tensor(batch.colour),
                  "said_colour": torch.as_tensor(batch.said_colour) & named,
                  "place": torch.where(named, torch.as_tensor(batch.place), -1)}
        return z, ids.to(self.run.device, non_blocking=True), {k: v.to(self.run.device) for k, v in labels.items()}

    def close(self) -> None:
        self.pre.close()


def _gen(device: torch.device, *seed: int) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(np.random.SeedSequence(list(seed)).generate_state(1, np.uint64)[0] >> 1))
    return g
