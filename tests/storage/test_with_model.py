"""The store with the real job service on the tiny model (CPU): reproductions are byte-identical."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from core.jobs import Owner
from core.request import GenerationRequest
from storage import read_recipe
from tests.storage.helpers import FakeService, png_bytes

ANA = Owner("discord", "1001", "Ana", guild_id="g1", channel_id="c1")
TIMEOUT = 120


@pytest.fixture
def service(store, service_factory):
    return service_factory(recorder=store, preview_frames=4)


def test_reproduce_vary_verify_on_the_cpu(store, service):
    result = service.submit(GenerationRequest("red cat face", negative_prompt="blue", seed=1234, count=2, steps=4),
                            ANA).result(TIMEOUT)
    original = store.get(result.images[1].id)
    assert original.fingerprint.items() <= service.model_info.items()
    assert read_recipe(original.path)["recipe"]["model_sha256"] == original.fingerprint["model_sha256"]

    again = store.reproduce(original.id, service, ANA).result(TIMEOUT).images[0]
    assert again.id != original.id and again.sha256 == original.sha256
    assert open(again.path, "rb").read() == original.path.read_bytes()  # byte-identical PNG
    assert store.get(again.id).parent_id == original.id and store.get(again.id).kind == "reproduce"

    same = store.vary(original.id, service, ANA, strength=0.0).result(TIMEOUT).images[0]
    with Image.open(same.path) as a, Image.open(original.path) as b:
        assert ImageChops.difference(a.convert("RGB"), b.convert("RGB")).getbbox() is None  # identical pixels
    varied = store.vary(original.id, service, ANA, strength=0.5, variation_seed=77, count=2).result(TIMEOUT)
    assert [i.variation_seed for i in varied.images] == [77, 78]
    assert all(i.sha256 != original.sha256 for i in varied.images)

    v = store.verify(original.id, service)
    assert (v.verdict, v.max_pixel_diff, v.fingerprint_diff, v.same_file) == ("exact", 0, {}, True)
    verify_rec = store.get(v.new_image_id)
    assert verify_rec.kind == "verify" and verify_rec.parent_id == original.id
    assert v.new_image_id not in [r.id for r in store.history(per_page=100).items]
    assert v.new_image_id in [r.id for r in store.history(per_page=100, include_verify=True).items]

    # the same image checked against other software: drifted, and it says what changed
    d = store.verify(original.id, FakeService(store))
    assert d.verdict == "drifted" and 0 < d.max_pixel_diff <= 255 and not d.same_file
    assert "model_sha256" in d.fingerprint_diff and "torch" in d.fingerprint_diff


def test_img2img_reproduces_from_the_stored_init_image(store, service):
    init = png_bytes(Image.new("RGB", (64, 64), (220, 40, 40)))
    first = service.submit(GenerationRequest("apple", seed=5, steps=4, init_image=init, strength=0.6),
                           ANA).result(TIMEOUT).images[0]
    req = store.request_for(first.id)
    assert req.init_image == init and req.mode == "img2img"
    again = store.reproduce(first.id, service, ANA).result(TIMEOUT).images[0]
    assert again.sha256 == first.sha256
    assert "Denoising strength: 0.6" in Image.open(first.path).text["parameters"]


def test_timeline_of_a_real_job(store, service):
    img = service.submit(GenerationRequest("dog", seed=9, steps=6), ANA).result(TIMEOUT).images[0]
    frames = store.frames(img.id)
    assert len(frames) == 4 and frames[0].size == img.frames[0].size
    webp = store.timeline_file(img.id)
    gif = store.timeline_file(img.id, "gif")
    assert webp.stat().st_size < 20_000 and gif.stat().st_size < 60_000
    with Image.open(gif) as im:
        assert im.n_frames == 4 and im.is_animated


def test_a_full_disk_fails_the_job_in_a_sentence_and_keeps_none_of_it(store, service, monkeypatch):
    import errno
    import os

    import storage.files
    from core.jobs import JobFailed

    def disk_full(path, data):   # what a full disk answers the first write with
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(storage.files, "atomic_write", disk_full)
    with pytest.raises(JobFailed) as info:
        service.submit(GenerationRequest("red cat", seed=1, steps=2, count=2), ANA).result(TIMEOUT)
    sentence = ("The disk that holds Statuary's data is full, so this job's pictures could not be kept; "
                "free some space and try again.")
    assert str(info.value) == sentence   # was "OSError: [Errno 28] No space left on device: '/.../images/..'"
    assert info.value.error_type == "DiskFull"
    monkeypatch.undo()
    assert store.history().total == 0
    failed = store.jobs(("failed",))
    assert failed.total == 1 and failed.items[0].reason == sentence
    assert not any(p.is_file() for p in (store.data_dir / "images").rglob("*"))
