"""Round trip: tiny diffusers model -> LDM single file -> diffusers `from_single_file`, offline.

Working call (diffusers 0.42.1):
    Pipe.from_single_file(str(ckpt), config=str(diffusers_folder), local_files_only=True)
where Pipe is StableDiffusionPipeline for a 4-channel UNet and StableDiffusionInpaintPipeline
for a 9-channel one: the pipeline class is the class you call it on (model_index.json's
_class_name is ignored), so StableDiffusionPipeline would load the 9-channel UNet and only
fail at inference.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from ldm_export import export_single_file  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

COMPONENTS = ("unet", "vae", "text_encoder")
CASES = {
    "txt2img": (False, "StableDiffusionPipeline", "v1"),
    "inpaint": (True, "StableDiffusionInpaintPipeline", "inpainting"),
}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail loudly if anything tries to reach the network (whether or not HF_HUB_OFFLINE is set)."""

    def refuse(*args, **kwargs):
        raise RuntimeError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory):
    inpainting, pipe_name, model_type = CASES[request.param]
    root = tmp_path_factory.mktemp(request.param)
    folder = build_tiny_model(root / "diffusers", inpainting=inpainting)
    ckpt = export_single_file(folder, root / "model.safetensors")
    # Same folder without any weight files: proves from_single_file takes every weight from the
    # checkpoint (otherwise it would fall back to from_pretrained on the folder and the
    # equality check below would pass vacuously).
    configs_only = root / "configs_only"
    shutil.copytree(folder, configs_only, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return folder, configs_only, ckpt, pipe_name, model_type


def _pipe_cls(name):
    import diffusers

    return getattr(diffusers, name)


def _assert_same_params(loaded, reference):
    for name in COMPONENTS:
        got = dict(getattr(loaded, name).named_parameters())
        want = dict(getattr(reference, name).named_parameters())
        assert got.keys() == want.keys(), f"{name}: parameter names differ"
        for key, tensor in want.items():
            assert got[key].device.type != "meta", f"{name}.{key} left on meta device"
            assert torch.equal(got[key], tensor), f"{name}.{key} differs after round trip"


def test_layout_is_ldm(exported):
    from safetensors.torch import load_file

    _, _, ckpt, _, _ = exported
    sd = load_file(str(ckpt))
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(k.startswith(prefixes) for k in sd)
    for p in prefixes:
        assert any(k.startswith(p) for k in sd), p
    # LDM VAE mid-attention projections are 1x1 convs
    assert sd["first_stage_model.encoder.mid.attn_1.q.weight"].ndim == 4
    assert sd["first_stage_model.decoder.mid.attn_1.proj_out.weight"].ndim == 4
    assert "model.diffusion_model.input_blocks.0.0.weight" in sd
    assert "model.diffusion_model.middle_block.1.proj_in.weight" in sd


def test_infer_model_type(exported):
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    _, _, ckpt, _, model_type = exported
    detected = infer_diffusers_model_type(load_single_file_checkpoint(str(ckpt), local_files_only=True))
    print(f"infer_diffusers_model_type({ckpt.name}) = {detected!r}")
    assert detected == model_type


@pytest.mark.parametrize("config_kind", ["full_folder", "configs_only"])
def test_from_single_file_round_trip(exported, config_kind):
    folder, configs_only, ckpt, pipe_name, _ = exported
    cls = _pipe_cls(pipe_name)
    config = folder if config_kind == "full_folder" else configs_only
    pipe = cls.from_single_file(str(ckpt), config=str(config), local_files_only=True)
    assert type(pipe) is cls
    reference = cls.from_pretrained(str(folder), local_files_only=True)
    _assert_same_params(pipe, reference)
    assert pipe.vae.config.scaling_factor == reference.vae.config.scaling_factor
    assert type(pipe.scheduler) is type(reference.scheduler)


def test_loaded_pipeline_runs(exported):
    from PIL import Image

    _, configs_only, ckpt, pipe_name, _ = exported
    cls = _pipe_cls(pipe_name)
    pipe = cls.from_single_file(str(ckpt), config=str(configs_only), local_files_only=True)
    kwargs = dict(num_inference_steps=2, height=64, width=64, output_type="np",
                  generator=torch.Generator().manual_seed(0))
    if pipe_name == "StableDiffusionInpaintPipeline":
        kwargs.update(image=Image.new("RGB", (64, 64), "red"), mask_image=Image.new("L", (64, 64), 255))
    images = pipe("a red cat", **kwargs).images
    assert images.shape == (1, 64, 64, 3)
