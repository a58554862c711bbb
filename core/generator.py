"""The denoise loop: one loop for txt2img, img2img, seed variations and inpainting.

Each image being made is a `Trajectory`: its own noise (drawn on the CPU from its own seed),
its own scheduler instance, timesteps, text embeddings and guidance. `Generator.denoise`
advances a list of trajectories together, one UNet call per step for all of them, so the
same code serves one image at a time (the CPU default: bit-identical reproduction) and
step-level batching of many requests on a GPU.

Reading order, as in a diffusers pipeline:
  1. encode the prompts            (Generator.encode)
  2. prepare noise and latents     (Generator.start: per image, from its seed)
  3. denoise                       (Generator.denoise: scale, UNet, guidance, scheduler step, inpaint blend)
  4. decode                        (Generator.decode: the VAE, once per finished image)
  (5. the hires fix: upscale and repaint the decoded picture larger; core/hires.py)
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image

from core import hires
from core.jobs import JobError
from core.loader import LoadedModel
from core.lora import LoraSwitch
from core.prompts import PromptEncoder
from core.request import GenerationRequest
from core.samplers import make_scheduler


class Cancelled(Exception):
    """Raised inside the loop when the job was asked to stop."""


# ---- noise ----------------------------------------------------------------------------------------


def cpu_noise(seed: int, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Generator]:
    """Gaussian noise from `seed` on the CPU (identical on every device), and the generator
    that keeps going for the sampler's own noise (Euler a)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(shape, generator=g, dtype=torch.float32), g


def slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical linear interpolation (Shoemake 1985) between two noise tensors: A1111's seed variations."""
    if t <= 0:
        return a
    if t >= 1:
        return b
    a_n = a / a.norm()
    b_n = b / b.norm()
    dot = (a_n * b_n).sum().clamp(-1.0, 1.0)
    if dot.abs() > 0.9995:  # nearly parallel: linear is exact enough and avoids dividing by ~0
        return (1 - t) * a + t * b
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


# ---- one image ----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Trajectory:
    """One image on its way from noise to picture."""

    request: GenerationRequest
    index: int
    scheduler: Any
    timesteps: torch.Tensor
    latents: torch.Tensor  # 1 x C x h x w on the model's device
    embeds: torch.Tensor  # (2 or 1) x L x D: [negative, positive] when guidance is on
    added_cond: dict[str, torch.Tensor] | None  # SDXL's pooled text embeds and size ids
    noise: torch.Tensor
    step_generator: torch.Generator
    init_latents: torch.Tensor | None = None  # img2img / inpaint source in latent space
    mask_latent: torch.Tensor | None = None  # 1 x 1 x h x w, 1 = repaint
    inpaint_cond: torch.Tensor | None = None  # 9-channel UNets: mask + masked-image latents
    init_pixels: np.ndarray | None = None  # for pasting unmasked pixels back exactly
    mask_pixels: np.ndarray | None = None
    i: int = 0

    @property
    def guided(self) -> bool:
        return self.request.guidance > 1.0

    @property
    def done(self) -> bool:
        return self.i >= len(self.timesteps)

    @property
    def total(self) -> int:
        return len(self.timesteps)

    def unet_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, dict[str, torch.Tensor] | None]:
        t = self.timesteps[self.i]
        x = self.scheduler.scale_model_input(self.latents, t)
        if self.inpaint_cond is not None:
            x = torch.cat([x, self.inpaint_cond], dim=1)
        rows = 2 if self.guided else 1
        x = x.expand(rows, *x.shape[1:])
        ts = t.reshape(1).expand(rows).to(self.latents.device)
        return x, ts, self.embeds, self.added_cond

    def step(self, noise_pred: torch.Tensor) -> None:
        """Guidance, the scheduler's step, and (for ordinary UNets) the inpainting blend."""
        if self.guided:
            uncond, cond = noise_pred.chunk(2)
            noise_pred = uncond + self.request.guidance * (cond - uncond)
        t = self.timesteps[self.i]
        extra = {"generator": self.step_generator} if _takes_generator(self.scheduler) else {}
        self.latents = self.scheduler.step(noise_pred, t, self.latents, return_dict=False, **extra)[0]
        self.i += 1
        if self.mask_latent is not None and self.inpaint_cond is None:
            # Keep the unmasked area on the source's own noisy trajectory, so it stays the source.
            known = self.init_latents
            if not self.done:
                known = self.scheduler.add_noise(known, self.noise.to(known.device, known.dtype),
                                                 self.timesteps[self.i].reshape(1))
            self.latents = (1 - self.mask_latent) * known + self.mask_latent * self.latents


def _takes_generator(scheduler) -> bool:
    import inspect

    return "generator" in inspect.signature(scheduler.step).parameters


# ---- the generator --------------------------------------------------------------------------------


class Generator:
    """Runs requests on one loaded model. Not thread-safe: the job service owns it."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.device = model.device
        self.channels_last = False  # set by speed_up(); the UNet's input is then made channels_last too
        self.prompts = PromptEncoder(model)  # prompt weights, BREAK and long prompts (core/prompts.py)
        self.loras = LoraSwitch(model)  # LoRA adapters (core/lora.py); the service gives it the folder

    def speed_up(self, *, attention: str = "sdpa", channels_last: bool = False,
                 compile_unet: bool = False) -> dict[str, str]:
        """Switchable UNet speed-ups (settings STATUARY_ATTENTION / _CHANNELS_LAST / _COMPILE).
        None changes what is computed, only how: outputs move by float rounding, within the
        1/255 contract. Returns the fingerprint fields that say which ran (empty for the defaults)."""
        unet = self.model.unet
        notes: dict[str, str] = {}
        if attention == "math":
            from diffusers.models.attention_processor import AttnProcessor

            unet.set_attn_processor(AttnProcessor())
            notes["attention"] = "math"
        elif attention != "sdpa":
            raise ValueError(f"attention {attention!r}: use sdpa or math")
        if channels_last:
            unet.to(memory_format=torch.channels_last)
            self.channels_last = True
            notes["unet_memory_format"] = "channels_last"
        if compile_unet:
            # The batch size changes as requests join and leave: after the second size torch.compile
            # marks the batch dimension dynamic instead of recompiling for every size.
            self.model.unet = torch.compile(unet, fullgraph=False)
            notes["unet_compiled"] = f"torch.compile (inductor, torch {torch.__version__})"
        return notes

    def _guidance(self, request: GenerationRequest) -> float:
        """The request's guidance; the model's own where a request made by hand (not resolved) leaves it open."""
        return self.model.limits.default_guidance if request.guidance is None else request.guidance

    # 1. encode the prompts
    @torch.no_grad()
    def encode(self, request: GenerationRequest) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None]:
        m = self.model
        guided = self._guidance(request) > 1.0
        self.loras.activate(request.loras)  # a LoRA may change the text encoder too
        if self.prompts.needs_compel(request):  # weights, BREAK or a prompt longer than the window
            embeds, pooled = self.prompts.encode(request, guided)
            if m.kind != "sdxl":
                return embeds, None
            time_ids = torch.tensor([[request.height, request.width, 0, 0, request.height, request.width]],
                                    dtype=m.dtype, device=self.device)
            return embeds, {"text_embeds": pooled, "time_ids": time_ids.repeat(embeds.shape[0], 1)}
        with self.prompts.lock:
            return self._encode_plain(request, guided)

    def _encode_plain(self, request: GenerationRequest, guided: bool):
        """The pipeline's own encoder: the words as written, cut at the text encoder's window."""
        m = self.model
        if m.kind == "sdxl":
            pe, ne, pooled, neg_pooled = m.pipeline.encode_prompt(
                request.prompt, device=self.device, num_images_per_prompt=1, do_classifier_free_guidance=guided,
                negative_prompt=request.negative_prompt or None)
            w, h = request.width, request.height
            time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=m.dtype, device=self.device)
            if guided:
                return torch.cat([ne, pe]), {"text_embeds": torch.cat([neg_pooled, pooled]),
                                             "time_ids": time_ids.repeat(2, 1)}
            return pe, {"text_embeds": pooled, "time_ids": time_ids}
        pe, ne = m.pipeline.encode_prompt(request.prompt, self.device, 1, guided,
                                          negative_prompt=request.negative_prompt or None)
        return (torch.cat([ne, pe]) if guided else pe), None

    # 2. prepare noise and latents
    @torch.no_grad()
    def start(self, request: GenerationRequest, index: int,
              encoded: tuple[torch.Tensor, dict[str, torch.Tensor] | None] | None = None) -> Trajectory:
        """A trajectory for image `index` of a resolved request."""
        m = self.model
        if request.guidance is None:   # made by hand, leaving it to the model (as the sampler below)
            request = dataclasses.replace(request, guidance=self._guidance(request))
        embeds, added = encoded if encoded is not None else self.encode(request)
        shape = (1, m.latent_channels, request.height // m.vae_scale_factor, request.width // m.vae_scale_factor)
        noise, step_gen = cpu_noise(request.image_seed(index), shape)
        for earlier_seed, earlier_strength in request.variation_chain:  # a walk's earlier steps, in order
            noise = slerp(earlier_strength, noise, cpu_noise(earlier_seed, shape)[0])
        vseed = request.image_variation_seed(index)
        if request.variation_strength > 0 and vseed is not None:
            noise = slerp(request.variation_strength, noise, cpu_noise(vseed, shape)[0])
        noise = noise.to(self.device, m.dtype)

        # A resolved request names its sampler; one made by hand may leave it to the model.
        scheduler = make_scheduler(request.sampler or m.limits.default_sampler, m.scheduler_config)
        scheduler.set_timesteps(request.steps, device=self.device)
        if hasattr(scheduler, "set_begin_index"):
            # Say where we start instead of letting the scheduler find it from the first timestep:
            # on a zero-terminal-SNR schedule Karras sigmas repeat the first timestep, the lookup
            # then picks the second one, and the loop runs off the end of the sigmas.
            scheduler.set_begin_index(0)
        timesteps = scheduler.timesteps
        traj = Trajectory(request=request, index=index, scheduler=scheduler, timesteps=timesteps, latents=noise,
                          embeds=embeds, added_cond=added, noise=noise, step_generator=step_gen)

        if request.init_image is None:
            traj.latents = noise * scheduler.init_noise_sigma
            return traj

        source = _load_rgb(request.init_image, request.width, request.height)
        traj.init_latents = self._encode_image(source)
        if request.mask is not None:
            mask = _load_mask(request.mask, request.width, request.height)
            traj.init_pixels, traj.mask_pixels = source, mask
            mask_t = torch.from_numpy(mask)[None, None]
            traj.mask_latent = torch.nn.functional.interpolate(mask_t, size=shape[-2:], mode="area").to(self.device, m.dtype)
            if m.inpainting_unet:
                hard = (mask_t >= 0.5).float()
                masked = torch.from_numpy(source).permute(2, 0, 1)[None] * (1 - hard)
                masked_latents = self._encode_image(masked[0].permute(1, 2, 0).numpy())
                mask_small = torch.nn.functional.interpolate(hard, size=shape[-2:]).to(self.device, m.dtype)
                traj.inpaint_cond = torch.cat([mask_small, masked_latents], dim=1)

        self.begin_at(traj, traj.init_latents, request.strength)
        return traj

    def begin_at(self, traj: Trajectory, init_latents: torch.Tensor, strength: float) -> None:
        """Start `traj` part-way from `init_latents`, noised to where `strength` leaves them:
        img2img, inpainting and the hires fix's second pass. Strength 1 starts from pure noise."""
        scheduler, steps = traj.scheduler, traj.request.steps
        traj.init_latents = init_latents
        order = getattr(scheduler, "order", 1)
        start_steps = min(int(round(steps * strength)), steps)
        t_start = max(steps - start_steps, 0)
        timesteps = scheduler.timesteps[t_start * order:]
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(t_start * order)
        if len(timesteps) == 0:
            timesteps = scheduler.timesteps[-1:]
        traj.timesteps = timesteps
        if strength >= 1.0 and self.model.inpainting_unet:
            traj.latents = traj.noise * scheduler.init_noise_sigma
        else:
            traj.latents = scheduler.add_noise(init_latents, traj.noise, timesteps[:1])

    def _encode_image(self, rgb: np.ndarray) -> torch.Tensor:
        m = self.model
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].to(self.device, m.vae_dtype) * 2 - 1
        latents = m.vae.encode(x).latent_dist.mode()
        shift = getattr(m.vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * m.vae.config.scaling_factor).to(m.dtype)

    # 3. denoise
    @torch.no_grad()
    def denoise_step(self, trajectories: list[Trajectory], *,
                     isolate: bool = False) -> list[tuple[Trajectory, Exception]]:
        """Advance every unfinished trajectory by one step with one UNet call.

        Each trajectory may have its own timestep, sampler, guidance (one row without guidance, two
        with) and text embeddings. With `isolate`, an exception in one trajectory's own part (its
        scheduler's scaling or step) is returned with that trajectory instead of raised, and the
        others still take their step; an exception in the shared UNet call is always raised, before
        any trajectory has moved, so the caller may retry the step."""
        failed: list[tuple[Trajectory, Exception]] = []
        active, inputs = [], []
        for traj in trajectories:
            if traj.done:
                continue
            try:
                inputs.append(traj.unet_inputs())
            except Exception as exc:
                if not isolate:
                    raise
                failed.append((traj, exc))
                continue
            active.append(traj)
        if not active:
            return failed
        if len({LoraSwitch.key(t.request.loras) for t in active}) > 1:
            raise ValueError("one UNet call cannot mix LoRA sets; group trajectories by LoraSwitch.key first")
        self.loras.activate(active[0].request.loras)
        x = torch.cat([i[0] for i in inputs])
        ts = torch.cat([i[1] for i in inputs])
        embeds = torch.cat([i[2] for i in inputs])
        added = None
        if inputs[0][3] is not None:
            added = {k: torch.cat([i[3][k] for i in inputs]) for k in inputs[0][3]}
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = self.model.unet(x, ts, encoder_hidden_states=embeds, added_cond_kwargs=added, return_dict=False)[0]
        offset = 0
        for traj, inp in zip(active, inputs):
            rows = inp[0].shape[0]
            try:
                traj.step(out[offset:offset + rows])
            except Exception as exc:
                if not isolate:
                    raise
                failed.append((traj, exc))
            offset += rows
        return failed

    # 4. decode
    @torch.no_grad()
    def decode(self, traj: Trajectory) -> Image.Image:
        m = self.model
        shift = getattr(m.vae.config, "shift_factor", None) or 0.0
        latents = traj.latents.to(m.vae_dtype) / m.vae.config.scaling_factor + shift
        pixels = m.vae.decode(latents, return_dict=False)[0]
        pixels = (pixels[0].float().clamp(-1, 1) + 1) / 2
        arr = pixels.permute(1, 2, 0).cpu().numpy()
        if not np.isfinite(arr).all():
            raise JobError("The picture came out as invalid numbers (an overflow while decoding it); try another "
                           "sampler or seed, and if it keeps happening, ask whoever runs Statuary to use float32.")
        if traj.mask_pixels is not None:
            # Paste the source back outside the mask: unmasked pixels stay exactly what they were.
            mask = traj.mask_pixels[..., None]
            arr = traj.init_pixels * (1 - mask) + arr * mask
        return Image.fromarray(np.round(arr * 255).astype(np.uint8))

    def preview(self, traj: Trajectory, max_side: int = 128) -> Image.Image:
        """A cheap picture of the current latents: the model's fitted linear latent->RGB map."""
        return self._preview_image(self._preview_latents(traj).float().cpu(), max_side)

    def previews(self, trajectories: list[Trajectory], max_side: int = 128) -> list[Image.Image]:
        """`preview` for many trajectories with one copy from the device (one sync, not one each)."""
        if not trajectories:
            return []
        lats = [self._preview_latents(t) for t in trajectories]
        if len({tuple(x.shape) for x in lats}) == 1:
            host = list(torch.stack(lats).float().cpu())
        else:
            host = [x.float().cpu() for x in lats]
        return [self._preview_image(x, max_side) for x in host]

    def _preview_latents(self, traj: Trajectory) -> torch.Tensor:
        sigma = getattr(traj.scheduler, "init_noise_sigma", 1.0)
        if not traj.done and float(sigma) > 1.5:  # sigma-scaled samplers (Euler): bring back to unit scale
            return traj.scheduler.scale_model_input(traj.latents, traj.timesteps[traj.i])[0]
        return traj.latents[0]

    def _preview_image(self, lat: torch.Tensor, max_side: int) -> Image.Image:
        weights, bias = self.model.latent_rgb
        rgb = torch.einsum("chw,cr->hwr", lat, weights) + bias
        arr = ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        im = Image.fromarray(arr)
        scale = max(1, max_side // max(im.size))
        return im.resize((im.width * scale, im.height * scale), Image.Resampling.BILINEAR) if scale > 1 else im

    # all together, one image after another
    def generate(self, request: GenerationRequest, *,
                 on_step: Callable[[Trajectory, int, int], None] | None = None,
                 should_cancel: Callable[[], bool] | None = None) -> list[tuple[Trajectory, Image.Image]]:
        """Make every image of a resolved request in turn. `on_step(traj, step, total)` runs after
        each step; `should_cancel()` is checked before each step and stops within one step."""
        encoded = self.encode(request)
        trajectories = [self.start(request, k, encoded) for k in range(request.count)]
        total = sum(t.total for t in trajectories)
        if request.hires is not None:  # the hires fix's second pass counts in the same progress
            total += request.count * hires.pass_steps(request.hires, request.steps)
        step = 0
        results = []
        for traj in trajectories:
            image = None
            while image is None:
                while not traj.done:
                    if should_cancel and should_cancel():
                        raise Cancelled()
                    self.denoise_step([traj])
                    step += 1
                    if on_step:
                        on_step(traj, step, total)
                image = self.decode(traj)
                if traj.request.hires is not None:  # first pass done: repaint it larger
                    traj, image = hires.second_pass(self, traj, image), None
            results.append((traj, image))
        return results


def _to_8bit(im: Image.Image) -> Image.Image:
    """16-bit greyscale (Pillow's I;16 modes) as 8-bit 'L', scaled; Pillow's own convert() would
    clip every value above 255 and turn the picture almost white. Other modes pass as they are
    (request validation refuses the ones convert() cannot make RGB of)."""
    if im.mode.startswith("I;16"):
        values = np.asarray(im).astype(np.float32)
        return Image.fromarray(np.round(values / 257.0).astype(np.uint8), "L")
    return im


def _load_rgb(data: bytes, width: int, height: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        im = _to_8bit(im).convert("RGB")
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.LANCZOS)
        return np.asarray(im, dtype=np.float32) / 255.0


def _load_mask(data: bytes, width: int, height: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        if im.mode in ("RGBA", "LA"):  # painted strokes on a transparent layer: alpha is the mask
            im = im.getchannel("A")
        im = _to_8bit(im).convert("L")
        if im.size != (width, height):
            im = im.resize((width, height), Image.Resampling.NEAREST)
        return (np.asarray(im, dtype=np.float32) / 255.0)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def image_distance(a: Image.Image, b: Image.Image) -> int:
    """Largest per-pixel difference (0-255) between two images of one size."""
    x = np.asarray(a.convert("RGB"), dtype=np.int16)
    y = np.asarray(b.convert("RGB"), dtype=np.int16)
    if x.shape != y.shape:
        return 255
    return int(np.abs(x - y).max()) if x.size else 0

