"""The distributed service does what the in-process one does with LoRAs, the hires fix and
prompt notes: real Redis, real PostgreSQL, real `statuary worker` processes on the tiny model,
the CeleryJobService in this process, and the in-process service on the same model and LoRA
folder side by side. The same request gives the same PNG bytes whichever made it; a LoRA that
is missing, not safetensors or made for another model is refused by the front-end with the
in-process service's sentence, and nothing reaches the queue or the record."""

from __future__ import annotations

import shutil

import pytest

from core.hires import Hires, HiresDefaults
from core.jobs import Owner
from core.request import GenerationRequest, InvalidRequest
from tests.lora_fixture import lora_dir, lora_generator, lora_tensors  # noqa: F401 -- fixtures

pytestmark = pytest.mark.slow

ANA = Owner("web", "ana", "Ana")
TIMEOUT = 300


@pytest.fixture
def local(tmp_path, lora_generator, lora_dir):  # noqa: F811 -- fixtures
    """The in-process service on the same model and LoRA folder, recording in its own SQLite."""
    from core.lora import LoraLibrary
    from core.service import InProcessJobService
    from storage import Store, db

    store = Store(db.create(f"sqlite:///{tmp_path / 'local.db'}"), tmp_path / "local")
    db.upgrade(store.engine)
    svc = InProcessJobService(lora_generator, store, loras=LoraLibrary(lora_dir, lora_generator.model))
    yield svc, store
    svc.close()
    store.close()


def celery(cluster, **env):
    from core.distributed.service import CeleryJobService
    from storage import open_store

    settings = cluster.settings(**env)
    store = open_store(settings)
    return CeleryJobService(settings, store), store


def png(result, i: int = 0) -> bytes:
    with open(result.images[i].path, "rb") as f:
        return f.read()


def nothing_queued(cluster, store) -> None:
    import redis
    from sqlalchemy import func, select

    from core.distributed.broker import QUEUE
    from core.distributed.quota import Line
    from storage.models import Generation

    r = redis.Redis.from_url(cluster.redis.url)
    assert Line(r).waiting_count() == 0 and r.llen(QUEUE) == 0
    with store._read() as s:
        assert s.scalar(select(func.count()).select_from(Generation)) == 0


def test_loras_through_the_workers_same_bytes_same_refusals_nothing_queued(cluster, local, lora_dir,  # noqa: F811
                                                                          tiny_model_dir, tmp_path):
    from safetensors.torch import save_file

    from core.lora import folder_catalog

    folder = tmp_path / "loras"  # the shared LoRA folder (STATUARY_LORA_DIR) every machine mounts
    shutil.copytree(lora_dir, folder)
    bad = lora_tensors(tiny_model_dir)
    first = next(k for k in bad if k.startswith("unet.") and k.endswith("lora_A.weight"))
    bad[first] = bad[first][:, :-1].contiguous()  # one input too few: a LoRA for another base model's layer
    save_file(bad, str(folder / "other-model.safetensors"))
    (folder / "evil.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64)  # a pickle with a safetensors name
    in_process, local_store = local
    in_process._loras.folder = folder
    env = {"STATUARY_LORA_DIR": str(folder), "STATUARY_THREADS": "2"}
    cluster.start_worker(**env)
    cluster.start_worker(**env)
    cluster.wait_workers(2)
    svc, store = celery(cluster, **env)
    try:
        # Refused by the front-end with the in-process service's very sentence; nothing queued or recorded.
        said = []
        for req in (GenerationRequest("cat <lora:nope:0.7>", seed=1, steps=2),
                    GenerationRequest("cat", seed=1, steps=2, loras=[("other-model", 1.0)]),
                    GenerationRequest("cat", seed=1, steps=2, loras=[("evil", 1.0)])):
            with pytest.raises(InvalidRequest) as theirs:
                svc.submit(req, ANA)
            with pytest.raises(InvalidRequest) as ours:
                in_process.submit(req, ANA)
            assert str(theirs.value) == str(ours.value)
            said.append(str(theirs.value))
        assert "there is no nope.safetensors in the LoRA folder" in said[0]
        assert "other-model.safetensors does not fit the loaded model" in said[1] and "another base model" in said[1]
        assert "evil.safetensors is not a safetensors file" in said[2]
        nothing_queued(cluster, store)

        assert svc.lora_catalog() == in_process.lora_catalog() == folder_catalog(folder)
        assert {c["name"] for c in svc.lora_catalog()} >= {"pix", "pixk", "ink", "tagged"}

        # A job with a LoRA: the same PNG bytes as in-process, the file's sha256 in the recipe.
        req = GenerationRequest("red cat <lora:pix:0.8>", seed=11, steps=3, count=2)
        theirs = svc.submit(req, ANA).result(TIMEOUT)
        ours = in_process.submit(req, ANA).result(TIMEOUT)
        assert [png(theirs, i) for i in (0, 1)] == [png(ours, i) for i in (0, 1)]
        assert store.get(theirs.images[0].id).request["loras"] == local_store.get(ours.images[0].id).request["loras"]
        (name, weight, sha), = theirs.request.loras
        assert (name, weight, len(sha)) == ("pix", 0.8, 64)
        plain = in_process.submit(GenerationRequest("red cat", seed=11, steps=3), ANA).result(TIMEOUT)
        assert png(plain) != png(ours)  # the LoRA did something

        # Its reproduction through the workers (either may take it): byte-identical.
        again = store.reproduce(theirs.images[1].id, svc, ANA).result(TIMEOUT)
        assert png(again) == png(theirs, 1)
    finally:
        svc.close()
        store.close()


def test_hires_fix_and_prompt_notes_through_the_workers(cluster, local, tiny_model_dir, tmp_path):
    in_process, local_store = local
    cluster.start_worker(STATUARY_THREADS="2")
    cluster.wait_workers(1)
    svc, store = celery(cluster)
    try:
        assert svc.hires_defaults == in_process.hires_defaults
        assert svc.model_info["hires_helps"] is True

        for hires in (Hires(scale=2, steps=3, strength=0.5), Hires(scale=1.5, steps=4, strength=0.7,
                                                                   upscaler="latent")):
            req = GenerationRequest("a red fox", seed=5, steps=3, hires=hires)
            theirs = svc.submit(req, ANA).result(TIMEOUT)
            ours = in_process.submit(req, ANA).result(TIMEOUT)
            assert theirs.images[0].image.size == ours.images[0].image.size != (64, 64)
            assert png(theirs) == png(ours)

        # Upscale 2x of an image (the bot's button, storage.upscale with the service's defaults).
        base = svc.submit(GenerationRequest("a red fox", seed=6, steps=3), ANA).result(TIMEOUT)
        local_base = in_process.submit(GenerationRequest("a red fox", seed=6, steps=3), ANA).result(TIMEOUT)
        up = store.upscale(base.images[0].id, svc, ANA).result(TIMEOUT)
        local_up = local_store.upscale(local_base.images[0].id, in_process, ANA).result(TIMEOUT)
        assert png(up) == png(local_up)

        # Prompt notes: the worker records them in the fingerprint, as in-process.
        long = " ".join(["a small red fox in the snow"] * 20)
        for syntax in ("plain", "a1111"):
            req = GenerationRequest(long, seed=7, steps=2, prompt_syntax=syntax)
            theirs = svc.submit(req, ANA).result(TIMEOUT)
            handle = in_process.submit(req, ANA)
            ours = handle.result(TIMEOUT)
            notes = {k: v for k, v in ours.fingerprint.items() if k.startswith(("prompt_", "negative_prompt_"))}
            assert notes and notes == handle.notes
            assert {k: theirs.fingerprint.get(k) for k in notes} == notes
            assert store.generation(theirs.generation_id).fingerprint | notes == store.generation(
                theirs.generation_id).fingerprint
            assert png(theirs) == png(ours)
    finally:
        svc.close()
        store.close()


def test_the_model_folders_hires_json_reaches_the_front_end(cluster, tiny_model_dir, tmp_path):
    model = tmp_path / "tiny-no-hires"
    shutil.copytree(tiny_model_dir, model)
    (model / "hires.json").write_text('{"helps": false, "scale": 1.5, "steps": 12, "strength": 0.4, '
                                      '"note": "measured on the tiny model"}')
    cluster.start_worker(STATUARY_MODEL=str(model))
    cluster.wait_workers(1)
    svc, store = celery(cluster, STATUARY_MODEL=str(model))
    try:
        assert svc.hires_defaults == HiresDefaults.load(model)
        assert svc.hires_defaults.helps is False and svc.hires_defaults.hires.steps == 12
        assert svc.model_info["hires_helps"] is False
        assert "measured on the tiny model" in svc.hires_defaults.refusal
    finally:
        svc.close()
        store.close()


def test_the_models_samplers_reach_the_front_end(cluster, tmp_path):
    """A worker on the default model's kind of schedule announces its samplers: the front-end
    refuses Karras spacing with the in-process sentence (nothing queued) and records DDIM, the
    model's default, for a request that names no sampler."""
    from tests.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-zero-snr", zero_snr=True)
    cluster.start_worker(STATUARY_MODEL=str(model))
    cluster.wait_workers(1)
    svc, store = celery(cluster, STATUARY_MODEL=str(model))
    try:
        assert svc.limits.default_sampler == "ddim" and "dpmpp_2m_karras" not in svc.limits.samplers
        with pytest.raises(InvalidRequest, match="Karras spacing does not suit this model's noise schedule"):
            svc.submit(GenerationRequest("a cat", seed=1, steps=2, sampler="dpmpp_2m_karras"), ANA)
        nothing_queued(cluster, store)
        result = svc.submit(GenerationRequest("a cat", seed=1, steps=2), ANA).result(TIMEOUT)
        assert store.generation(result.generation_id).request["sampler"] == "ddim"
    finally:
        svc.close()
        store.close()


def test_a_lora_file_replaced_after_queueing_fails_the_job_and_records_what_was_asked(cluster, lora_dir,  # noqa: F811
                                                                                    tmp_path):
    """The worker runs the file the front-end checked, or nothing: a file replaced under the same
    name between queueing and running fails the job with one sentence (before this check the
    worker ran the new file and recorded its sha256 as if it had been asked for)."""
    import signal

    from core.jobs import JobFailed

    folder = tmp_path / "loras"
    shutil.copytree(lora_dir, folder)
    env = {"STATUARY_LORA_DIR": str(folder)}
    first = cluster.start_worker(**env)
    cluster.wait_workers(1)
    first.send_signal(signal.SIGKILL)  # its announcement stays; no worker takes jobs now
    first.wait(30)
    svc, store = celery(cluster, **env)
    try:
        handle = svc.submit(GenerationRequest("red cat <lora:pix:1>", seed=3, steps=2), ANA)
        asked = store.generation(handle.generation_id).request["loras"]
        (folder / "pix.safetensors").write_bytes((lora_dir / "ink.safetensors").read_bytes())
        cluster.start_worker(**env)
        with pytest.raises(JobFailed, match=r"LoRA pix.safetensors changed after this job was queued; submit it again"):
            handle.result(TIMEOUT)
        rec = store.generation(handle.generation_id)
        assert rec.status == "failed" and rec.request["loras"] == asked
    finally:
        svc.close()
        store.close()
