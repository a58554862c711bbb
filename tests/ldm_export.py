"""Export a diffusers-format SD 1.x folder to ONE original-layout (CompVis/LDM) checkpoint.

Used by tests to exercise the single-file loading path
(`StableDiffusionPipeline.from_single_file(path, config=<diffusers folder>, local_files_only=True)`)
offline, against a tiny random model (see tiny_model.py).

Key layout written (the inverse of diffusers' `convert_ldm_unet_checkpoint`,
`convert_ldm_vae_checkpoint` and `convert_ldm_clip_checkpoint` in
diffusers/loaders/single_file_utils.py, 0.42.1):

* UNet  -> ``model.diffusion_model.*``
  (input_blocks / middle_block / output_blocks, time_embed, out)
* VAE   -> ``first_stage_model.*``
  (encoder.down.N.block.M, decoder.up.<reversed N>.block.M, mid.block_1/attn_1/block_2,
  norm_out, quant_conv / post_quant_conv). Mid-attention q/k/v/proj_out are written as
  1x1 convs ([C, C, 1, 1]) like real LDM checkpoints; diffusers squeezes them back.
* CLIP  -> ``cond_stage_model.transformer.text_model.*`` (HF CLIPTextModel naming).

Only ordinary SD 1.x UNet/VAE layouts are supported (no class/addition embeddings,
no controlnet, no SDXL/SD2 OpenCLIP). Every source key must map, otherwise ValueError.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
CLIP_PREFIX = "cond_stage_model.transformer."

# diffusers ResnetBlock2D (UNet) sub-module -> LDM ResBlock sub-module
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
# top-level UNet modules
_UNET_TOP = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
# diffusers VAE ResnetBlock2D -> LDM ResnetBlock: same names except the shortcut
_VAE_RESNET = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2",
               "conv_shortcut": "nin_shortcut"}
# diffusers VAE mid Attention -> LDM AttnBlock
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = {
    "conv_in": "conv_in",
    "conv_out": "conv_out",
    "conv_norm_out": "norm_out",
}


def _split_param(rest: str) -> tuple[str, str]:
    """'resnets.0.norm1.weight' tail -> ('norm1', 'weight'); module may contain dots."""
    module, _, param = rest.rpartition(".")
    return module, param


def _map_module(table: dict[str, str], module: str, full_key: str) -> str:
    if module not in table:
        raise ValueError(f"unsupported sub-module {module!r} in {full_key!r}")
    return table[module]


# --------------------------------------------------------------------------- UNet
def _unet_to_ldm(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    if not isinstance(config["layers_per_block"], int):
        raise ValueError(f"per-block layers_per_block {config['layers_per_block']} not supported")
    lpb = config["layers_per_block"]
    n_down = len(config["down_block_types"])
    for bad in ("class_embed_type", "addition_embed_type", "num_class_embeds", "encoder_hid_dim"):
        if config.get(bad) is not None:
            raise ValueError(f"UNet config {bad}={config[bad]!r} is not supported by this exporter")

    out: dict[str, torch.Tensor] = {}

    def put(ldm_key: str, key: str) -> None:
        if UNET_PREFIX + ldm_key in out:
            raise ValueError(f"two diffusers keys map to {ldm_key!r} (second: {key!r})")
        out[UNET_PREFIX + ldm_key] = sd[key]

    for key in sd:
        module, param = _split_param(key)
        if module in _UNET_TOP:
            put(f"{_UNET_TOP[module]}.{param}", key)
            continue

        m = re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
        if m:
            b, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = 1 + b * (lpb + 1) + layer
            if kind == "resnets":
                sub, p = _split_param(rest)
                put(f"input_blocks.{idx}.0.{_map_module(_UNET_RESNET, sub, key)}.{p}", key)
            else:  # Transformer2DModel: inner names are identical in LDM SpatialTransformer
                put(f"input_blocks.{idx}.1.{rest}", key)
            continue

        m = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key)
        if m:
            b = int(m[1])
            if b == n_down - 1:
                raise ValueError(f"downsampler on last down block is not an SD 1.x layout: {key}")
            put(f"input_blocks.{1 + b * (lpb + 1) + lpb}.0.op.{m[2]}", key)
            continue

        m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
        if m:
            kind, j, rest = m[1], int(m[2]), m[3]
            if kind == "resnets":
                if j > 1:
                    raise ValueError(f"mid block with >2 resnets not supported: {key}")
                sub, p = _split_param(rest)
                put(f"middle_block.{2 * j}.{_map_module(_UNET_RESNET, sub, key)}.{p}", key)
            else:
                if j != 0:
                    raise ValueError(f"mid block with >1 attention not supported: {key}")
                put(f"middle_block.1.{rest}", key)
            continue

        m = re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
        if m:
            b, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            idx = b * (lpb + 1) + layer
            if kind == "resnets":
                sub, p = _split_param(rest)
                put(f"output_blocks.{idx}.0.{_map_module(_UNET_RESNET, sub, key)}.{p}", key)
            else:
                put(f"output_blocks.{idx}.1.{rest}", key)
            continue

        m = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key)
        if m:
            b = int(m[1])
            idx = b * (lpb + 1) + lpb  # the upsampler sits in the block's last output block
            has_attn = any(k.startswith(f"up_blocks.{b}.attentions.{lpb}.") for k in sd)
            put(f"output_blocks.{idx}.{2 if has_attn else 1}.conv.{m[2]}", key)
            continue

        raise ValueError(f"unsupported UNet key {key!r}")
    return out


# --------------------------------------------------------------------------- VAE
def _vae_to_ldm(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    n_up = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}

    def put(ldm_key: str, key: str, tensor: torch.Tensor | None = None) -> None:
        if VAE_PREFIX + ldm_key in out:
            raise ValueError(f"two diffusers keys map to {ldm_key!r} (second: {key!r})")
        out[VAE_PREFIX + ldm_key] = sd[key] if tensor is None else tensor

    for key in sd:
        if key.split(".")[0] in ("quant_conv", "post_quant_conv"):
            put(key, key)
            continue

        m = re.fullmatch(r"(encoder|decoder)\.(.+)", key)
        if not m:
            raise ValueError(f"unsupported VAE key {key!r}")
        part, rest = m[1], m[2]
        module, param = _split_param(rest)

        if module in _VAE_TOP:
            put(f"{part}.{_VAE_TOP[module]}.{param}", key)
            continue

        mm = re.fullmatch(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", module)
        if mm and part == "encoder":
            put(f"encoder.down.{mm[1]}.block.{mm[2]}.{_map_module(_VAE_RESNET, mm[3], key)}.{param}", key)
            continue
        mm = re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", module)
        if mm and part == "encoder":
            put(f"encoder.down.{mm[1]}.downsample.conv.{param}", key)
            continue

        mm = re.fullmatch(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", module)
        if mm and part == "decoder":  # LDM numbers decoder levels in reverse
            lvl = n_up - 1 - int(mm[1])
            put(f"decoder.up.{lvl}.block.{mm[2]}.{_map_module(_VAE_RESNET, mm[3], key)}.{param}", key)
            continue
        mm = re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", module)
        if mm and part == "decoder":
            put(f"decoder.up.{n_up - 1 - int(mm[1])}.upsample.conv.{param}", key)
            continue

        mm = re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", module)
        if mm:
            put(f"{part}.mid.block_{int(mm[1]) + 1}.{_map_module(_VAE_RESNET, mm[2], key)}.{param}", key)
            continue
        mm = re.fullmatch(r"mid_block\.attentions\.0\.(.+)", module)
        if mm:
            sub = _map_module(_VAE_ATTN, mm[1], key)
            t = sd[key]
            if sub != "norm" and param == "weight" and t.ndim == 2:
                t = t[:, :, None, None].contiguous()  # Linear -> 1x1 Conv2d, as in LDM AttnBlock
            put(f"{part}.mid.attn_1.{sub}.{param}", key, t)
            continue

        raise ValueError(f"unsupported VAE key {key!r}")
    return out


# --------------------------------------------------------------------------- CLIP
def _clip_to_ldm(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, t in sd.items():
        if key.endswith("position_ids"):
            continue  # buffer, not a parameter
        if key.startswith("text_projection"):
            raise ValueError(f"CLIPTextModelWithProjection is not an SD 1.x text encoder: {key}")
        # transformers >= 5.6 saves CLIPTextModel flat (no 'text_model.'); LDM checkpoints carry it.
        inner = key if key.startswith("text_model.") else "text_model." + key
        out[CLIP_PREFIX + inner] = t
    return out


def _load_component(folder: Path, name: str) -> dict[str, torch.Tensor]:
    sub = folder / name
    files = sorted(sub.glob("*.safetensors"))
    files = [f for f in files if "fp16" not in f.name] or files
    if not files:
        raise FileNotFoundError(f"no .safetensors weights in {sub}")
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


def export_single_file(diffusers_folder: Path, out_path: Path) -> Path:
    """Write unet + vae + text_encoder of `diffusers_folder` as one LDM-layout .safetensors."""
    folder, out_path = Path(diffusers_folder), Path(out_path)
    unet_cfg = json.loads((folder / "unet" / "config.json").read_text())
    vae_cfg = json.loads((folder / "vae" / "config.json").read_text())

    state: dict[str, torch.Tensor] = {}
    for part in (
        _unet_to_ldm(_load_component(folder, "unet"), unet_cfg),
        _vae_to_ldm(_load_component(folder, "vae"), vae_cfg),
        _clip_to_ldm(_load_component(folder, "text_encoder")),
    ):
        clash = state.keys() & part.keys()
        if clash:
            raise ValueError(f"duplicate LDM keys: {sorted(clash)[:5]}")
        state.update(part)

    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(out_path), metadata={"format": "pt"})
    return out_path


if __name__ == "__main__":
    import sys

    print(export_single_file(Path(sys.argv[1]), Path(sys.argv[2])))
