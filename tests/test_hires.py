"""The hires fix: validation, both upscalers, one job's progress over both passes, batching,
the recipe, byte-identical reproduction on the CPU, per-model defaults, and the command line."""

from __future__ import annotations

import dataclasses
import json

import pytest

from core.hires import Hires, HiresDefaults, pass_steps
from core.jobs import Done, Owner, Progress
from core.request import GenerationRequest, InvalidRequest, ModelLimits
from tests.test_cli import statuary

OWNER = Owner("cli", "tester")
TINY = ModelLimits(native_size=64, max_side=128, multiple=8)


def test_bad_settings_are_named_with_what_is_allowed():
    bad = GenerationRequest("a cat", width=96, height=96,
                            hires=Hires(scale=2.5, steps=0, strength=0, upscaler="bicubic"))
    with pytest.raises(InvalidRequest) as e:
        bad.validate(TINY)
    text = str(e.value)
    assert "hires_scale: 2.5 is not allowed; use a number from 1 to 2." in text
    assert "hires_steps: 0 is not allowed; use a whole number from 1 to 150" in text
    assert "hires_strength: 0 is not allowed; use a number above 0 and up to 1." in text
    assert "hires_upscaler: 'bicubic' is not allowed; use one of lanczos, latent." in text
    with pytest.raises(InvalidRequest, match=r"hires_scale: 2 is not allowed; at 96x96 it would make 192x192, "
                                             r"beyond this model's largest side 128; use at most 1.33"):
        GenerationRequest("a cat", width=96, height=96, hires=Hires(scale=2)).validate(TINY)
    with pytest.raises(InvalidRequest, match="does not apply to inpainting"):
        GenerationRequest("a cat", init_image=b"x", mask=b"y", hires=Hires()).validate()


def test_recipe_round_trip_and_old_recipes_unchanged():
    plain = GenerationRequest("a cat", seed=1, width=64, height=64)
    assert "hires" not in plain.to_dict()
    r = dataclasses.replace(plain, hires=Hires(scale=1.5)).resolve(TINY)
    assert r.to_dict()["hires"] == {"scale": 1.5, "steps": 20, "strength": 0.5, "upscaler": "lanczos"}
    assert GenerationRequest.from_dict(r.to_dict()) == r


@pytest.mark.parametrize("upscaler", ["lanczos", "latent"])
def test_one_job_two_passes_progress_counts_both_and_reproduces_bytes(service_factory, upscaler):
    svc = service_factory()
    req = GenerationRequest("a red fox", seed=5, steps=4, count=2,
                            hires=Hires(scale=2, steps=6, strength=0.5, upscaler=upscaler))
    handle = svc.submit(req, OWNER)
    events = list(handle.iter_events())
    result = next(e for e in events if isinstance(e, Done)).result
    progress = [e for e in events if isinstance(e, Progress)]
    per_image = 4 + pass_steps(req.hires, 4)
    assert [p.step for p in progress] == list(range(1, 2 * per_image + 1))
    assert {p.total for p in progress} == {2 * per_image}
    assert [im.image.size for im in result.images] == [(128, 128)] * 2
    # a plain run of the same recipe is the first pass: the hires one is a different, larger picture
    plain = svc.submit(dataclasses.replace(req, hires=None, count=1), OWNER).result()
    assert plain.images[0].image.size == (64, 64)
    again = svc.submit(result.request.image_request(1), OWNER).result()
    assert again.images[0].image.tobytes() == result.images[1].image.tobytes()


def test_batched_service_makes_the_same_pixels(service_factory):
    req = GenerationRequest("a blue bird", seed=9, steps=3, hires=Hires(scale=1.5, steps=4, strength=0.6))
    one = service_factory().submit(req, OWNER).result().images[0].image
    batched = service_factory(batch_max=4)
    handles = [batched.submit(req, OWNER), batched.submit(GenerationRequest("a cat", seed=1, steps=5), OWNER)]
    results = [h.result(timeout=120) for h in handles]
    assert results[0].images[0].image.size == (96, 96) and results[1].images[0].image.size == (64, 64)
    import numpy as np

    diff = np.abs(np.asarray(one, dtype=int) - np.asarray(results[0].images[0].image, dtype=int)).max()
    assert diff <= 1  # batched matrix products differ in the last bits (ARCHITECTURE.md)


def test_model_folder_defaults(tmp_path):
    assert HiresDefaults.load(tmp_path).helps and HiresDefaults.load(None).hires == Hires()
    (tmp_path / "hires.json").write_text(json.dumps({"helps": False, "scale": 1.5, "note": "a 128 vs 256 grid"}))
    d = HiresDefaults.load(tmp_path)
    assert not d.helps and d.hires.scale == 1.5 and "a 128 vs 256 grid" in d.refusal
    (tmp_path / "hires.json").write_text(json.dumps({"scale": 3, "colour": 1}))
    with pytest.raises(ValueError, match="unknown keys colour"):
        HiresDefaults.load(tmp_path)
    (tmp_path / "hires.json").write_text(json.dumps({"scale": 3}))
    with pytest.raises(ValueError, match="hires_scale: 3 is not allowed"):
        HiresDefaults.load(tmp_path)


def test_cli_generate_info_reproduce_and_upscale(tmp_path, tiny_model_dir):
    model = ["--model", str(tiny_model_dir)]
    out = tmp_path / "fox.png"
    r = statuary([*model, "generate", "a fox", "--seed", "3", "--steps", "3", "--hires-scale", "2",
                  "--hires-steps", "4", "--hires-upscaler", "latent", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(out).size == (128, 128)
    image_id = r.stdout.split(" id ")[1].split()[0]
    info = statuary([*model, "info", image_id], tmp_path)
    assert "hires fix: 2x (latent), 4 steps at strength 0.5" in info.stdout and "{" not in info.stdout
    rep = statuary([*model, "reproduce", image_id], tmp_path)
    assert rep.returncode == 0 and "(identical file)" in rep.stdout, rep.stdout + rep.stderr

    bad = statuary([*model, "generate", "a fox", "--hires-scale", "3", "--hires-upscaler", "nearest"], tmp_path)
    assert bad.returncode == 2 and "hires-scale: 3.0 is not allowed; use a number from 1 to 2." in bad.stderr
    assert "hires-upscaler: 'nearest' is not allowed" in bad.stderr and "Traceback" not in bad.stderr

    plain = statuary([*model, "generate", "a fox", "--seed", "3", "--steps", "3"], tmp_path)
    plain_id = plain.stdout.split(" id ")[1].split()[0]
    up = statuary([*model, "upscale", plain_id, "--scale", "1.5", "--steps", "4"], tmp_path)
    assert up.returncode == 0, up.stderr
    up_id = up.stdout.split()[0]
    up_info = statuary([*model, "info", up_id], tmp_path).stdout
    assert f"parents: {plain_id}" in up_info and "hires fix: 1.5x (lanczos)" in up_info
    again = statuary([*model, "upscale", up_id], tmp_path)
    assert again.returncode == 2 and "made with the hires fix already" in again.stderr


def test_png_text_carries_it_and_a1111_files_are_read_back():
    from storage.pngmeta import a1111_parameters, parse_a1111
    from webui.recipes import a1111_hires

    hires = Hires(scale=2, steps=8, upscaler="latent")
    d = GenerationRequest("a fox", seed=1, width=64, height=64, guidance=7.0, hires=hires).to_dict()
    text = a1111_parameters(d, "", "")
    assert "Denoising strength: 0.5, Hires upscale: 2, Hires steps: 8, Hires upscaler: Latent" in text
    p = parse_a1111(text)
    assert a1111_hires(p) == ({"scale": 2.0, "steps": 8, "strength": 0.5, "upscaler": "latent"}, "")
    hires, note = a1111_hires({**p, "Hires upscaler": "R-ESRGAN 4x+"})
    assert hires["upscaler"] == "lanczos" and "R-ESRGAN 4x+ is not available here; Lanczos stands in" in note
