"""Tiny LoRA files for the tiny test model, in both formats users download.

`make_lora(model_dir, path, fmt="peft")` trains nothing: it adds a rank-4 LoRA with random
weights (seeded) to the model's UNet attention and text-encoder attention, and saves it as
diffusers/PEFT keys ("unet.<module>.lora_A.weight") or, with fmt="kohya", under kohya/A1111's
names ("lora_unet_<module>.lora_down.weight", ".alpha"), the same numbers either way, so the
two files must make the same picture.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
RANK = 4


def lora_tensors(model_dir: str | Path, seed: int = 1, scale: float = 0.5) -> dict[str, torch.Tensor]:
    """diffusers/PEFT-named LoRA tensors for the model in `model_dir`."""
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, get_peft_model_state_dict
    from transformers import CLIPTextModel

    model_dir = Path(model_dir)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    text = CLIPTextModel.from_pretrained(model_dir / "text_encoder")
    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=UNET_TARGETS, init_lora_weights=False))
    text.add_adapter(LoraConfig(r=RANK, lora_alpha=RANK, target_modules=TEXT_TARGETS, init_lora_weights=False))
    out = {}
    for prefix, module in (("unet", unet), ("text_encoder", text)):
        for key, value in get_peft_model_state_dict(module).items():
            out[f"{prefix}.{key}"] = (value * scale).contiguous()
    return out


def to_kohya(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same LoRA under kohya's names, alpha = rank (a scale of 1, as PEFT's lora_alpha = r)."""
    out = {}
    for key, value in tensors.items():
        prefix, rest = key.split(".", 1)
        module, kind = rest.rsplit(".lora_", 1)
        base = ("lora_unet_" if prefix == "unet" else "lora_te_") + module.replace(".", "_")
        out[f"{base}.lora_{'down' if kind.startswith('A') else 'up'}.weight"] = value
        out[f"{base}.alpha"] = torch.tensor(float(RANK))
    return out


def make_lora(model_dir: str | Path, path: str | Path, fmt: str = "peft", seed: int = 1,
              metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    tensors = lora_tensors(model_dir, seed)
    if fmt == "kohya":
        tensors = to_kohya(tensors)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata or {})
    return path


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, tiny_model_dir):
    """pix (diffusers/PEFT keys), pixk (the same numbers under kohya's names), ink (another
    LoRA), tagged (trigger words in its metadata)."""
    folder = tmp_path_factory.mktemp("loras")
    make_lora(tiny_model_dir, folder / "pix.safetensors", "peft", seed=1)
    make_lora(tiny_model_dir, folder / "pixk.safetensors", "kohya", seed=1)
    make_lora(tiny_model_dir, folder / "ink.safetensors", "peft", seed=2)
    make_lora(tiny_model_dir, folder / "tagged.safetensors", "kohya", seed=3, metadata={
        "ss_tag_frequency": json.dumps({"10_set": {"pixelart": 12, "cat": 3, "outline": 7}})})
    return folder


@pytest.fixture(scope="module")
def lora_generator(tiny_model_dir):
    """A generator of its own: adapters stay loaded on its model, so the other tests' model never sees one."""
    from core.generator import Generator
    from core.loader import load_model

    return Generator(load_model(str(tiny_model_dir), device="cpu"))
