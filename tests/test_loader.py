"""The one loader: diffusers folders and single files, safetensors only, content hashes."""

import pickle
import shutil
import struct

import pytest

from core.loader import ModelError, UnsafeWeights, check_safetensors, load_model
from tests.ldm_export import export_single_file


class Boom:
    """Unpickling this runs os.system: the payload a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def write_pickle(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"state_dict": Boom(marker)}, f)
    return path


def test_folder_loads_with_limits_and_hash(tiny_model, tiny_model_dir):
    assert tiny_model.kind == "sd"
    assert tiny_model.limits.native_size == 64 and tiny_model.limits.max_side == 128
    assert len(tiny_model.sha256) == 64
    again = load_model(str(tiny_model_dir), device="cpu")
    assert again.sha256 == tiny_model.sha256
    fp = tiny_model.fingerprint()
    assert {"model_sha256", "torch", "diffusers", "transformers", "device", "dtype", "attention", "noise"} <= set(fp)


def test_hash_changes_with_weights_and_is_cached(tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    a = load_model(str(copy), device="cpu", cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "model-hashes.json").is_file()
    w = next((copy / "unet").glob("*.safetensors"))
    data = bytearray(w.read_bytes())
    data[-1] ^= 1
    w.write_bytes(bytes(data))
    b = load_model(str(copy), device="cpu", cache_dir=tmp_path / "cache")
    assert a.sha256 != b.sha256


def test_single_file_checkpoint_loads_offline(tmp_path, tiny_model_dir, tiny_model):
    ckpt = export_single_file(tiny_model_dir, tmp_path / "tiny.safetensors")
    model = load_model(str(ckpt), device="cpu", config=str(tiny_model_dir))
    assert model.model_id == "tiny" and len(model.sha256) == 64
    for name, p in tiny_model.unet.state_dict().items():
        assert (model.unet.state_dict()[name] == p).all(), name


def test_single_file_inpainting_checkpoint(tmp_path, tiny_inpaint_model_dir):
    ckpt = export_single_file(tiny_inpaint_model_dir, tmp_path / "tiny-inpaint.safetensors")
    model = load_model(str(ckpt), device="cpu", config=str(tiny_inpaint_model_dir))
    assert model.inpainting_unet


def test_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = write_pickle(tmp_path / "model.ckpt", marker)
    with pytest.raises(UnsafeWeights, match="safetensors only"):
        load_model(str(ckpt), device="cpu")
    assert not marker.exists()


def test_renamed_pickle_is_refused_by_content(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = write_pickle(tmp_path / "model.safetensors", marker)
    with pytest.raises(UnsafeWeights, match="it is a Python pickle"):
        load_model(str(ckpt), device="cpu")
    assert not marker.exists()


def test_torch_zip_checkpoint_renamed_is_refused(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "model.safetensors"
    torch.save({"x": Boom(marker)}, path)
    with pytest.raises(UnsafeWeights, match="zip archive"):
        check_safetensors(path)
    assert not marker.exists()


def test_pickle_inside_a_diffusers_folder_is_refused(tmp_path, tiny_model_dir):
    marker = tmp_path / "pwned"
    copy = shutil.copytree(tiny_model_dir, tmp_path / "evil")
    w = next((copy / "unet").glob("*.safetensors"))
    write_pickle(w, marker)  # same file name, pickle inside
    with pytest.raises(UnsafeWeights, match="not a safetensors file"):
        load_model(str(copy), device="cpu")
    assert not marker.exists()


def test_folder_with_only_bin_weights_is_refused(tmp_path, tiny_model_dir):
    copy = shutil.copytree(tiny_model_dir, tmp_path / "bin")
    w = next((copy / "vae").glob("*.safetensors"))
    write_pickle(w.with_suffix(".bin"), tmp_path / "pwned")
    w.unlink()
    with pytest.raises(UnsafeWeights, match="only pickle weights"):
        load_model(str(copy), device="cpu")


def test_a_safetensors_file_whose_header_length_starts_like_a_pickle_is_accepted(tmp_path):
    """A header of 128 + 256k bytes makes the file's first byte 0x80, a pickle's first byte:
    one file in 256 (a LoRA, a shard) was refused as a pickle."""
    import torch
    from safetensors.torch import load_file, save_file

    path = tmp_path / "lora.safetensors"
    for pad in range(300):
        save_file({"w": torch.ones(2)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[:1] == b"\x80"
    check_safetensors(path)
    assert torch.equal(load_file(str(path))["w"], torch.ones(2))


def test_garbage_header_is_refused(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!" + b"\0" * 16)
    with pytest.raises(UnsafeWeights, match="not JSON"):
        check_safetensors(path)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        load_model(str(tmp_path / "nope"), device="cpu")
    empty = tmp_path / "default"
    empty.mkdir()
    with pytest.raises(ModelError, match="has not been trained and shipped yet"):
        load_model(str(empty), device="cpu")


def test_sdxl_folder_runs_every_mode(tmp_path):
    import io

    import numpy as np
    from PIL import Image

    from core.generator import Generator, png_bytes
    from core.request import GenerationRequest
    from tests.tiny_model import build_tiny_sdxl

    model = load_model(str(build_tiny_sdxl(tmp_path / "tiny-sdxl")), device="cpu")
    assert model.kind == "sdxl" and model.limits.native_size == 64
    gen = Generator(model)

    def make(**fields):
        r = GenerationRequest(**({"prompt": "a cat", "seed": 3, "steps": 3, "negative_prompt": "dog"} | fields))
        return gen.generate(r.resolve(model.limits))[0][1]

    a, b = make(), make()
    assert a.size == (64, 64) and png_bytes(a) == png_bytes(b)
    assert make(width=64, height=96).size == (64, 96)
    mask = np.zeros((64, 64), np.uint8)
    mask[:32] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, format="PNG")
    out = make(init_image=png_bytes(a), mask=buf.getvalue(), strength=1.0, prompt="a pizza")
    assert (np.asarray(out)[32:] == np.asarray(a)[32:]).all()


def test_the_pickle_payload_used_above_is_live(tmp_path):
    """So 'never runs' above means something: plain unpickling does run it."""
    marker = tmp_path / "pwned"
    with open(write_pickle(tmp_path / "x.ckpt", marker), "rb") as f:
        pickle.load(f)  # noqa: S301 -- the point of this test
    assert marker.exists()
