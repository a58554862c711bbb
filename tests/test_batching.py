"""Step-level batching in the job service (batch_max > 1), on the CPU with the tiny model.

Requests join and leave a running batch, mix samplers, step counts, guidance and sizes, and
each image still matches its solo run within the contract (max abs pixel difference <= 1).
"""

import threading

import diffusers
import pytest
import torch

from core.generator import image_distance
from core.jobs import Cancelled, Done, Failed, JobFailed, Owner, Progress, Started, UNEXPECTED

ALICE = Owner("web", "alice", "Alice")
BOB = Owner("discord", "bob", "Bob")
CAROL = Owner("web", "carol", "Carol")


def req(**fields):
    from core.request import GenerationRequest

    return GenerationRequest(**({"prompt": "a cat", "steps": 4, "seed": 1} | fields))


def solo(generator, handle):
    """The request run alone, one image at a time: the reference every batched image must match."""
    return [image for _, image in generator.generate(handle.request)]


def assert_matches_solo(generator, handle):
    result = handle.result(timeout=120)
    reference = solo(generator, handle)
    assert len(result.images) == len(reference)
    for got, want in zip(result.images, reference):
        assert image_distance(got.image, want) <= 1, f"{handle.request.sampler}: image {got.index} differs"


def progress(handle):
    return [e for e in handle.iter_events(timeout=120) if isinstance(e, Progress)]


class Calls:
    """Wraps generator.denoise_step: counts images per UNet call, and can hold the worker at the
    first call (so tests arrange the queue) or run a hook at call n (from the worker thread)."""

    def __init__(self, generator, monkeypatch, *, hold=False, hooks=None):
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.hooks = hooks or {}
        original = generator.denoise_step

        def wrapped(trajectories, **kw):
            self.sizes.append(sum(not t.done for t in trajectories))
            self.entered.set()
            assert self.release.wait(60), "never released"
            if len(self.sizes) in self.hooks:
                self.hooks[len(self.sizes)]()
            return original(trajectories, **kw)

        monkeypatch.setattr(generator, "denoise_step", wrapped)


def test_requests_join_and_leave_mid_run(service_factory, generator, monkeypatch):
    svc = service_factory(batch_max=4)
    late = {}

    def join():  # runs in the worker during the long job's 3rd step: these join at the 4th
        late["short"] = svc.submit(req(steps=3, sampler="euler_a", guidance=1.0, seed=2), BOB)
        late["tall"] = svc.submit(req(steps=5, sampler="ddim", height=96, seed=3, count=2), CAROL)

    calls = Calls(generator, monkeypatch, hooks={3: join})
    long = svc.submit(req(steps=14, sampler="dpmpp_2m_karras", guidance=7.5), ALICE)
    short_events = list(_wait_for(late, "short").iter_events(timeout=120))
    assert isinstance(short_events[-1], Done)
    assert not long.done  # the short job left (and was decoded) while the long one kept going
    for handle in (long, late["short"], late["tall"]):
        steps = [p.step for p in progress(handle)]
        total = handle.request.steps * handle.request.count
        assert steps == list(range(1, total + 1)), handle.request
    sizes = list(calls.sizes)  # before the solo runs below add theirs
    assert max(sizes) >= 2  # images of different jobs shared UNet calls
    assert len(sizes) < 14 + 3 + 2 * 5  # fewer calls than image-steps
    for handle in (long, late["short"], late["tall"]):
        assert_matches_solo(generator, handle)


def _wait_for(d, key, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while key not in d:
        assert time.monotonic() < deadline, f"{key} was never submitted"
        time.sleep(0.01)
    return d[key]


def test_every_sampler_in_one_batch_matches_its_solo_run(service_factory, generator, monkeypatch):
    from core.request import SAMPLERS

    calls = Calls(generator, monkeypatch, hold=True)
    svc = service_factory(batch_max=8, queue_per_owner=10)
    first = svc.submit(req(seed=50), ALICE)
    assert calls.entered.wait(60)
    handles = [svc.submit(req(sampler=s, seed=60 + i, steps=3 + i % 3, guidance=[1.0, 5.0, 7.5][i % 3]),
                          Owner("web", f"u{i}")) for i, s in enumerate(SAMPLERS)]
    handles.append(svc.submit(req(seed=70, variation_seed=71, variation_strength=0.4, count=2), BOB))
    calls.release.set()
    for handle in [first] + handles:
        handle.result(timeout=120)
    assert max(calls.sizes) >= 6
    for handle in [first] + handles:
        assert_matches_solo(generator, handle)


def test_cancelling_one_request_leaves_the_others_alone(service_factory, generator, monkeypatch):
    calls = Calls(generator, monkeypatch, hold=True)
    svc = service_factory(batch_max=4)
    a = svc.submit(req(steps=8, seed=5), ALICE)
    assert calls.entered.wait(60)
    b = svc.submit(req(steps=8, seed=6, sampler="euler"), BOB)
    c = svc.submit(req(steps=8, seed=7, sampler="unipc"), CAROL)
    calls.release.set()
    for event in b.iter_events(timeout=120):
        if isinstance(event, Progress) and event.step == 3:
            assert b.cancel()
    assert isinstance(b.final_event, Cancelled)
    assert max(p.step for p in progress(b)) <= 5  # stops within a step or so of asking
    for handle in (a, c):
        assert_matches_solo(generator, handle)
    assert svc.status()["batch"] == []


def test_a_failing_scheduler_fails_only_its_request(service_factory, generator, monkeypatch):
    calls = Calls(generator, monkeypatch, hold=True)
    svc = service_factory(batch_max=4)
    original = diffusers.EulerDiscreteScheduler.step
    seen = {"n": 0}

    def broken(self, *args, **kwargs):
        seen["n"] += 1
        if seen["n"] == 2:
            raise ValueError("sigma went sideways")
        return original(self, *args, **kwargs)

    a = svc.submit(req(steps=5, seed=8), ALICE)
    assert calls.entered.wait(60)
    monkeypatch.setattr(diffusers.EulerDiscreteScheduler, "step", broken)
    doomed = svc.submit(req(steps=5, seed=9, sampler="euler"), BOB)
    c = svc.submit(req(steps=5, seed=10, sampler="ddim"), CAROL)
    calls.release.set()
    with pytest.raises(JobFailed) as info:
        doomed.result(timeout=120)
    assert info.value.error_type == "ValueError" and info.value.reason == UNEXPECTED
    assert isinstance(doomed.final_event, Failed)
    monkeypatch.setattr(diffusers.EulerDiscreteScheduler, "step", original)
    for handle in (a, c):
        assert_matches_solo(generator, handle)


def test_out_of_memory_in_a_shared_call_halves_the_cap_and_retries(service_factory, generator, monkeypatch):
    calls = Calls(generator, monkeypatch, hold=True)
    svc = service_factory(batch_max=4)
    unet = generator.model.unet
    forward = unet.forward
    tripped = {"n": 0}

    def flaky(x, *args, **kwargs):
        if x.shape[0] > 2 and not tripped["n"]:  # the first call with more than one guided image
            tripped["n"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(x, *args, **kwargs)

    a = svc.submit(req(steps=4, seed=11), ALICE)
    assert calls.entered.wait(60)
    monkeypatch.setattr(unet, "forward", flaky)
    b = svc.submit(req(steps=4, seed=12, sampler="euler_a"), BOB)
    calls.release.set()
    a.result(timeout=120), b.result(timeout=120)
    assert tripped["n"] == 1 and svc.status()["batch_cap"] == 1
    monkeypatch.setattr(unet, "forward", forward)
    for handle in (a, b):
        assert_matches_solo(generator, handle)


def test_previews_reach_their_own_owners(service_factory, generator, monkeypatch):
    calls = Calls(generator, monkeypatch, hold=True)
    svc = service_factory(batch_max=4)
    square = svc.submit(req(steps=3, seed=13), ALICE)
    assert calls.entered.wait(60)
    tall = svc.submit(req(steps=4, seed=14, height=96), BOB)  # another latent size: another group
    wide = svc.submit(req(steps=2, seed=15, width=128, guidance=1.0), CAROL)
    calls.release.set()
    for handle, size in ((square, (128, 128)), (tall, (80, 120)), (wide, (128, 64))):
        previews = progress(handle)
        assert len(previews) == handle.request.steps
        assert {p.preview.size for p in previews} == {size}, handle.request
        assert isinstance(handle.final_event, Done)


def test_owners_take_turns_filling_free_slots(service_factory, generator, monkeypatch):
    calls = Calls(generator, monkeypatch, hold=True)
    svc = service_factory(batch_max=2, queue_per_owner=10)
    first = svc.submit(req(), ALICE)
    assert calls.entered.wait(60)
    alice_jobs = [svc.submit(req(seed=i), ALICE) for i in range(4)]
    bob_job = svc.submit(req(), BOB)
    assert bob_job.position == 2 and [h.position for h in alice_jobs] == [1, 3, 4, 5]
    started, lock = [], threading.Lock()

    def watch(h):
        for e in h.iter_events(timeout=120):
            if isinstance(e, Started):
                with lock:
                    started.append(h)

    watchers = [threading.Thread(target=watch, args=(h,), daemon=True) for h in alice_jobs + [bob_job]]
    for t in watchers:
        t.start()
    calls.release.set()
    for h in [first] + alice_jobs + [bob_job]:
        h.result(timeout=120)
    for t in watchers:
        t.join(10)
    assert started.index(bob_job) == 1  # behind Alice's next job, not behind all four
    assert max(calls.sizes) == 2  # never more than the cap in one call
