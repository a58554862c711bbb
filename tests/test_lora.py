"""LoRA (core/lora.py): files from the LoRA folder in both formats, checked at submit, switched
per UNet call without leaking into other requests, stored by name, sha256 and weight, and
reproduced exactly; `verify` says when a file changed and `reproduce` which one is missing."""

from __future__ import annotations

import numpy as np
import pytest

from core.jobs import Owner
from core.request import GenerationRequest, InvalidRequest
from tests.lora_fixture import lora_dir, lora_generator, make_lora  # noqa: F401 -- fixtures

ANA = Owner("cli", "ana", "Ana")
BEN = Owner("cli", "ben", "Ben")
TIMEOUT = 120


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image.convert("RGB"), dtype=np.int16)


@pytest.fixture
def lora_service(lora_generator, lora_dir):
    from core.lora import LoraLibrary
    from core.service import InProcessJobService

    made = []

    def make(recorder=None, folder=None, **kwargs):
        library = LoraLibrary(folder or lora_dir, lora_generator.model)
        svc = InProcessJobService(lora_generator, recorder, loras=library, **kwargs)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def run(svc, prompt="red cat", owner=ANA, **kw):
    return svc.submit(GenerationRequest(prompt, seed=11, steps=3, **kw), owner).result(TIMEOUT)


def test_both_formats_load_and_make_the_same_picture_and_no_lora_stays_the_base_model(lora_service):
    svc = lora_service()
    before = pixels(run(svc))
    peft = run(svc, "red cat <lora:pix:1>")
    kohya = run(svc, loras=[("pixk", 1.0)])
    assert np.abs(pixels(peft) - before).max() > 4  # it does something
    assert np.array_equal(pixels(peft), pixels(kohya))  # kohya keys, converted by diffusers: the same LoRA
    assert np.array_equal(pixels(run(svc)), before)  # adapters disabled: bit-identical to the base model
    half = run(svc, "red cat <lora:pix:0.5>")
    assert not np.array_equal(pixels(half), pixels(peft))
    # the tag leaves the prompt and joins the list with the file's sha256
    assert peft.request.prompt == "red cat"
    (name, weight, sha), = peft.request.loras
    assert (name, weight, len(sha)) == ("pix", 1.0, 64)
    assert np.array_equal(pixels(run(svc, loras=[("PIX", 1)])), pixels(peft))  # the same file by either spelling


def test_bad_loras_are_refused_at_submit_with_the_name_and_why(lora_service, lora_dir, tmp_path_factory):
    from tests.tiny_model import build_tiny_sdxl

    folder = tmp_path_factory.mktemp("more-loras")
    for f in lora_dir.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    sdxl = build_tiny_sdxl(tmp_path_factory.mktemp("models") / "tiny-sdxl")
    make_lora(sdxl, folder / "xl-style.safetensors", "peft")
    (folder / "evil.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle with a new name
    svc = lora_service(folder=folder)

    def refusal(**kw) -> str:
        with pytest.raises(InvalidRequest) as e:
            svc.submit(GenerationRequest(**{"prompt": "red cat", "seed": 1, "steps": 2, **kw}), ANA)
        return str(e.value)

    assert "there is no nope.safetensors in the LoRA folder" in refusal(prompt="cat <lora:nope:0.7>")
    msg = refusal(loras=[("xl-style", 1.0)])
    assert "xl-style.safetensors does not fit the loaded model" in msg and "another base model" in msg
    assert "evil.safetensors is not a safetensors file: it is a Python pickle" in refusal(loras=[("evil", 1.0)])
    assert "use a LoRA weight from -2 to 2" in refusal(loras=[("pix", 2.5)])
    assert "use a LoRA weight from -2 to 2" in refusal(prompt="cat <lora:pix:heavy>")
    assert "each LoRA may be given once" in refusal(prompt="cat <lora:pix:1>", loras=[("pix", 0.5)])
    assert "belongs in the prompt" in refusal(negative_prompt="<lora:pix:1>")
    assert svc.status()["queued"] == 0 and svc.status()["running"] is None


def test_batched_requests_never_see_each_others_lora(lora_service):
    """Step batching with three requests in flight at once: each image equals the same request
    made alone, so no request's LoRA leaked into another's UNet call or text encoding."""
    reqs = [("red cat <lora:pix:1>", ANA), ("red cat", BEN), ("red cat <lora:ink:0.8>", Owner("cli", "c", "C"))]
    alone_svc = lora_service()
    alone = [pixels(run(alone_svc, p, o)) for p, o in reqs]
    assert np.abs(alone[0] - alone[1]).max() > 4 and np.abs(alone[2] - alone[1]).max() > 4
    batched = lora_service(batch_max=4)
    handles = [batched.submit(GenerationRequest(p, seed=11, steps=3), o) for p, o in reqs]
    together = [pixels(h.result(TIMEOUT)) for h in handles]
    for a, b in zip(alone, together):
        assert np.abs(a - b).max() <= 1  # the batching contract; a leaked LoRA moves pixels by more than 4


def test_the_catalog_lists_the_folder_with_trigger_words(lora_service):
    catalog = {c["name"]: c["trigger_words"] for c in lora_service().lora_catalog()}
    assert catalog == {"ink": [], "pix": [], "pixk": [], "tagged": ["pixelart", "outline", "cat"]}


def test_stored_by_name_sha_and_weight_reproduced_exactly_and_drift_reported(lora_service, lora_dir,
                                                                             settings_factory, tmp_path):
    from storage import open_store

    folder = tmp_path / "loras"
    folder.mkdir()
    (folder / "pix.safetensors").write_bytes((lora_dir / "pix.safetensors").read_bytes())
    store = open_store(settings_factory())
    svc = lora_service(recorder=store, folder=folder)
    first = run(svc, "red (cat:1.2) <lora:pix:0.8>").images[0]
    rec = store.get(first.id)
    assert rec.request["loras"] == [["pix", 0.8, first_sha(folder)]]
    again = store.reproduce(first.id, svc, ANA).result(TIMEOUT).images[0]
    assert open(again.path, "rb").read() == rec.path.read_bytes()
    assert store.verify(first.id, svc).verdict == "exact"

    (folder / "pix.safetensors").write_bytes((lora_dir / "ink.safetensors").read_bytes())  # same name, new file
    v = store.verify(first.id, svc)
    assert v.verdict == "drifted" and v.fingerprint_diff["lora pix sha256"][0] == rec.request["loras"][0][2]

    (folder / "pix.safetensors").unlink()
    with pytest.raises(InvalidRequest, match="there is no pix.safetensors in the LoRA folder .* \\(the recipe used "
                                             "the file with sha256 " + rec.request["loras"][0][2][:12]):
        store.reproduce(first.id, svc, ANA)
    store.close()


def first_sha(folder) -> str:
    import hashlib

    return hashlib.sha256((folder / "pix.safetensors").read_bytes()).hexdigest()


def test_the_cli_takes_lora_name_weight_and_info_shows_it(tmp_path, tiny_model_dir, lora_dir):
    from tests.test_cli import statuary

    env = {"STATUARY_LORA_DIR": str(lora_dir)}
    listed = statuary(["loras"], tmp_path, **env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == ["ink", "pix", "pixk", "tagged  trigger words: pixelart, outline, cat"]
    r = statuary(["--model", str(tiny_model_dir), "generate", "red cat", "--lora", "pix:0.8", "--seed", "3",
                  "--steps", "2"], tmp_path, **env)
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.split(" id ")[1].split()[0]
    info = statuary(["info", image_id], tmp_path, **env)
    assert info.returncode == 0, info.stderr
    assert "loras: pix at 0.8 (sha256 " in info.stdout and "prompt_syntax: a1111" in info.stdout
    bad = statuary(["--model", str(tiny_model_dir), "generate", "red cat", "--lora", "pix:9"], tmp_path, **env)
    assert bad.returncode == 2 and "lora: 'pix:9' is not allowed; use a LoRA weight from -2 to 2" in bad.stderr
    assert "Traceback" not in bad.stderr
    missing = statuary(["--model", str(tiny_model_dir), "generate", "red cat", "--lora", "gone"], tmp_path, **env)
    assert missing.returncode == 2 and "there is no gone.safetensors in the LoRA folder" in missing.stderr
