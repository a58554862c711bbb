"""The default model's architecture: Stable Diffusion components, sized for a laptop CPU.

Every component is a stock diffusers/transformers class, so
`StableDiffusionPipeline.from_pretrained("models/default")` loads the result with no
custom code. Sizes were picked with `bench/default_model_speed.py` (20 steps with
guidance at 128x128 on 2 CPU threads) and the weight-size limits (fp16, <= 16 MiB per
file, <= 48 MiB in all).

`ModelSize` is the one knob: "default" is what ships, "smoke" is a toy for CPU tests.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

# Latent scaling: set from the trained VAE's latent std at export (see train.py); this
# is only the starting value written into the config before the VAE is measured.
DEFAULT_SCALING_FACTOR = 1.0


@dataclass(frozen=True)
class ModelSize:
    image_size: int = 128            # pixels; the VAE downsamples 8x -> 16x16x4 latents
    vae_channels: tuple[int, ...] = (32, 64, 96, 96)  # 4 levels = 3 downsamples = 8x
    vae_layers: int = 1
    latent_channels: int = 4
    text_width: int = 256            # CLIP hidden size == UNet cross-attention dim
    text_layers: int = 4
    text_heads: int = 4
    max_tokens: int = 48             # captions are short; fewer positions = faster attention
    unet_channels: tuple[int, ...] = (96, 192, 224)
    unet_layers: int = 1
    unet_attn_levels: tuple[bool, ...] = (False, True, True)  # cross-attention at 8x8 and 4x4... see unet_config
    unet_head_dim: int = 32

    def to_json(self) -> dict:
        return asdict(self)


SIZES: dict[str, ModelSize] = {
    "default": ModelSize(),
    # The default with 8 latent channels: does a wider latent lift what the VAE gives back
    # (`training.ceiling`)? An A/B of the VAE, not yet a model that ships (docs/training/RUNS.md).
    "c8": ModelSize(latent_channels=8),
    # 64 px pictures through a VAE that downsamples 4x: the same 16x16x4 latents as the default
    # (so the same UNet and the same cost a step), a quarter of the default's compression (12x
    # against 48x). The evaluation's judge reads every picture at 64x64 and the sprites are 64 px
    # PNGs, so 64 px loses little of what is judged (training.ceiling's "real @64" control).
    "f4": ModelSize(image_size=64, vae_channels=(32, 64, 96)),
    # Tiny, for the CPU tests: a few hundred thousand parameters, seconds to train.
    "smoke": ModelSize(
        image_size=32,
        vae_channels=(8, 16),
        text_width=32,
        text_layers=1,
        text_heads=2,
        max_tokens=32,
        unet_channels=(32, 32),
        unet_attn_levels=(False, True),
        unet_head_dim=16,
    ),
}


def vae_config(size: ModelSize) -> dict:
    n = len(size.vae_channels)
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(size.vae_channels),
        layers_per_block=size.vae_layers,
        latent_channels=size.latent_channels,
        norm_num_groups=min(32, size.vae_channels[0]),
        sample_size=size.image_size,
        scaling_factor=DEFAULT_SCALING_FACTOR,
    )


def unet_config(size: ModelSize, pooled_text: bool = False, fine_text: bool = False) -> dict:
    """`pooled_text`: the UNet also reads the caption through its timestep embedding, an
    attention-pooled summary of the text encoder's output added to it (diffusers'
    `addition_embed_type="text"`, as DeepFloyd IF and Imagen do), so every ResNet block hears
    the subject, not only the cross-attention at 8x8 and 4x4. A stock pipeline needs nothing
    more: the UNet computes it from `encoder_hidden_states`. It costs 0.3 M parameters (ADM's
    scale-shift GroupNorm would cost 1 M more, past the 48 MiB the weights may take). Side by
    side with cross-attention alone on cpu3 (steps 600 to 2,000, see docs/training/RUNS.md) it changed
    no probe, so `Config.cpu()` leaves it off.

    `fine_text`: the last up block (the finest level, 16x16 latents, where the picture's edges
    and fills are drawn last) becomes a `CrossAttnUpBlock2D` too, so the caption is heard there
    directly, not only through what 8x8 passes up. The down path's finest block is left as it is
    (it reads the noisy latent; the up path draws). Its transformers are stock ones (self-attention
    over the 256 positions, cross-attention to the caption, feed-forward): a stock pipeline loads
    it. Measured, not trained: it takes a CPU training step to x0.58 (`bench/cpu_train_step.py`'s
    "fine" variant; docs/training/RUNS.md, thirty-ninth session), so no run uses it yet.

    GroupNorm groups hold at least two channels: the timestep embedding reaches a block as a
    per-channel bias before a GroupNorm, which with one channel a group would take it out whole.
    """
    n = len(size.unet_channels)
    down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in size.unet_attn_levels)
    up = tuple("CrossAttnUpBlock2D" if a or (fine_text and k == 0) else "UpBlock2D"
               for k, a in reversed(list(enumerate(size.unet_attn_levels))))
    assert len(down) == n, "one attention flag per UNet level"
    vae_down = 2 ** (len(size.vae_channels) - 1)
    return dict(
        sample_size=size.image_size // vae_down,
        in_channels=size.latent_channels,
        out_channels=size.latent_channels,
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2DCrossAttn",
        block_out_channels=tuple(size.unet_channels),
        layers_per_block=size.unet_layers,
        cross_attention_dim=size.text_width,
        attention_head_dim=size.unet_head_dim,
        norm_num_groups=min(32, size.unet_channels[0] // 2),
        **(dict(addition_embed_type="text", addition_embed_type_num_heads=size.text_heads) if pooled_text else {}),
    )


def text_config(size: ModelSize, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> CLIPTextConfig:
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=size.text_width,
        intermediate_size=4 * size.text_width,
        projection_dim=size.text_width,
        num_hidden_layers=size.text_layers,
        num_attention_heads=size.text_heads,
        max_position_embeddings=size.max_tokens,
        hidden_act="quick_gelu",
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def scheduler() -> DDPMScheduler:
    """v-prediction on a cosine schedule: what the feasibility run found worked.

    `rescale_betas_zero_snr` makes the last step pure noise, so a plain text prompt can
    produce any background colour (with the stock schedule a little of the mean leaks).
    """
    return DDPMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        timestep_spacing="trailing",
        clip_sample=False,
        steps_offset=1,
    )


def v_pair(z: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor):
    """(noisy latent, v target) for latents `z` at timesteps `t`: the v-prediction pair that
    training, the monitor's probes and the benches all score the UNet on."""
    acp = alphas_cumprod[t]
    a, s = acp.sqrt()[:, None, None, None], (1 - acp).sqrt()[:, None, None, None]
    return a * z + s * noise, a * noise - s * z


def build_vae(size: ModelSize) -> AutoencoderKL:
    return AutoencoderKL(**vae_config(size))


def build_unet(size: ModelSize, pooled_text: bool = False, fine_text: bool = False) -> UNet2DConditionModel:
    return UNet2DConditionModel(**unet_config(size, pooled_text, fine_text))


def build_text_encoder(size: ModelSize, vocab_size: int, bos_id: int, eos_id: int, pad_id: int) -> CLIPTextModel:
    return CLIPTextModel(text_config(size, vocab_size, bos_id, eos_id, pad_id))


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def write_model_index(folder: Path) -> None:
    """model_index.json for StableDiffusionPipeline: no safety checker, no feature extractor.

    Call it after the scheduler is saved: from_pretrained builds the class named here, not the
    one in scheduler/scheduler_config.json, so it must name what was saved (DDIM, see
    inference_scheduler) or every loader draws with another sampler than the folder ships."""
    scheduler = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())["_class_name"]
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": __import__("diffusers").__version__,
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
        "safety_checker": [None, None],
        "scheduler": ["diffusers", scheduler],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def inference_scheduler():
    """The scheduler written into the shipped folder: DDIM reads v-prediction and the
    zero-terminal-SNR schedule directly and is deterministic (eta 0), which suits
    exact reproduction. Any diffusers scheduler can be swapped in with from_config."""
    from diffusers import DDIMScheduler

    return DDIMScheduler.from_config(scheduler().config)
