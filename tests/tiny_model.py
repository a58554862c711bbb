"""A tiny, randomly initialised Stable Diffusion model for tests (seconds on a CPU).

Same architecture family as SD 1.x (CLIP text encoder + tokenizer, UNet2DConditionModel,
8x AutoencoderKL, scheduler config), saved with save_pretrained so the real loader reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from training.tokenizer import byte_symbols

WORDS = ["cat", "dog", "red", "blue", "apple", "pizza", "face", "style", "the", "a", "on", "background"]


def write_tokenizer(folder: Path) -> int:
    """CLIP-format vocab.json + merges.txt with byte fallback and a few whole-word merges."""
    folder.mkdir(parents=True, exist_ok=True)
    chars = byte_symbols()  # every byte has a symbol, so no word is ever lost
    vocab = chars + [c + "</w>" for c in chars]
    merges: list[str] = []
    for word in WORDS:  # merge left to right: c-a, ca-t</w>
        cur = word[0]
        for i, ch in enumerate(word[1:], 1):
            nxt = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{cur} {nxt}")
            cur = cur + nxt
            if cur not in vocab:
                vocab.append(cur)
    merges = list(dict.fromkeys(merges))
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 77, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}))
    return len(vocab)


def build_tiny_model(path: str | Path, *, inpainting: bool = False, seed: int = 0,
                     prediction_type: str = "epsilon", zero_snr: bool = False, sample_size: int = 8) -> Path:
    """`zero_snr=True` gives the default model's kind of schedule: v-prediction, cosine betas
    rescaled to zero terminal SNR, trailing timesteps. The native size is 8 * `sample_size` px
    (64 by default; 4 gives a 32 px model, below the core's usual minimum side)."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(path / "tokenizer")
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, max_position_embeddings=77, projection_dim=32,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1))
    unet = UNet2DConditionModel(
        sample_size=sample_size, in_channels=9 if inpainting else 4, out_channels=4, layers_per_block=1,
        block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=32, attention_head_dim=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4, layers_per_block=1,
        block_out_channels=(8, 8, 16, 16), sample_size=64,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    if zero_snr:
        scheduler = DDIMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                                  rescale_betas_zero_snr=True, timestep_spacing="trailing", clip_sample=False)
    else:
        scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                  clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                  prediction_type=prediction_type)
    text_encoder.save_pretrained(path / "text_encoder", safe_serialization=True)
    unet.save_pretrained(path / "unet", safe_serialization=True)
    vae.save_pretrained(path / "vae", safe_serialization=True)
    scheduler.save_pretrained(path / "scheduler")
    pipeline_class = "StableDiffusionInpaintPipeline" if inpainting else "StableDiffusionPipeline"
    (path / "model_index.json").write_text(json.dumps({
        "_class_name": pipeline_class, "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "safety_checker": [None, None], "requires_safety_checker": False,
        "image_encoder": [None, None],
        "scheduler": ["diffusers", "DDIMScheduler"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    return path


if __name__ == "__main__":
    import sys

    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tiny-sd"))


def build_tiny_sdxl(path: str | Path, seed: int = 0) -> Path:
    """A tiny random SDXL-architecture model: two text encoders (the second with a projection
    for the pooled embedding) and a UNet conditioned on text + size ids ("text_time")."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(path / "tokenizer")
    write_tokenizer(path / "tokenizer_2")
    torch.manual_seed(seed)
    config = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_attention_heads=4,
                  num_hidden_layers=2, max_position_embeddings=77, projection_dim=32, hidden_act="gelu",
                  bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1)
    CLIPTextModel(CLIPTextConfig(**config)).save_pretrained(path / "text_encoder", safe_serialization=True)
    CLIPTextModelWithProjection(CLIPTextConfig(**config)).save_pretrained(path / "text_encoder_2", safe_serialization=True)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        norm_num_groups=8, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
    ).save_pretrained(path / "unet", safe_serialization=True)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=4, layers_per_block=1,
                  block_out_channels=(8, 8, 16, 16), sample_size=64,
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  ).save_pretrained(path / "vae", safe_serialization=True)
    EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1,
                           timestep_spacing="leading").save_pretrained(path / "scheduler")
    (path / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionXLPipeline", "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None], "image_encoder": [None, None], "force_zeros_for_empty_prompt": True,
        "scheduler": ["diffusers", "EulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "tokenizer_2": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]}, indent=2))
    return path
