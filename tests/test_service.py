"""The job service: events, queue limits, fairness, cancellation, failures that stay contained."""

import asyncio
import threading
import time

import pytest
import torch

from core.jobs import (UNEXPECTED, Cancelled, Done, Failed, JobCancelled, JobFailed, Owner, Progress, QueueFull, Queued,
                       Started)
from core.request import GenerationRequest, InvalidRequest

ALICE = Owner("web", "alice", "Alice")
BOB = Owner("discord", "bob", "Bob", guild_id="1", channel_id="2")


def req(**fields) -> GenerationRequest:
    return GenerationRequest(**({"prompt": "a cat", "steps": 3, "seed": 1} | fields))


class Gate:
    """Holds the worker inside a job until released, so tests can arrange the queue deterministically."""

    def __init__(self, generator, monkeypatch):
        self.entered = threading.Event()
        self.release = threading.Event()
        original = generator.denoise_step

        def gated(trajectories):
            self.entered.set()
            assert self.release.wait(30), "gate never released"
            return original(trajectories)

        monkeypatch.setattr(generator, "denoise_step", gated)


def test_events_arrive_in_order_with_previews(service_factory):
    svc = service_factory()
    handle = svc.submit(req(count=2), ALICE)
    events = list(handle.iter_events(timeout=60))
    kinds = [type(e) for e in events]
    assert kinds[0] is Queued and Started in kinds and kinds[-1] is Done
    progress = [e for e in events if isinstance(e, Progress)]
    assert [p.step for p in progress] == list(range(1, 7)) and progress[0].total == 6
    assert {p.image_index for p in progress} == {0, 1}
    result = handle.result()
    assert len(result.images) == 2 and result.images[0].image.size == (64, 64)
    assert result.request.seed == 1 and result.fingerprint["model_sha256"]
    assert 1 <= len(result.images[0].frames) <= 8


def test_random_seed_is_chosen_and_recorded(service_factory):
    svc = service_factory()
    handle = svc.submit(req(seed=None), ALICE)
    assert handle.request.seed is not None
    assert handle.result(timeout=60).request.seed == handle.request.seed


def test_bad_input_is_refused_before_queueing(service_factory):
    svc = service_factory()
    with pytest.raises(InvalidRequest, match="width: 1000"):
        svc.submit(req(width=1000), ALICE)  # beyond the tiny model's 128
    assert svc.status()["queued"] == 0


def test_queue_full_and_per_owner_limit(service_factory, generator, monkeypatch):
    gate = Gate(generator, monkeypatch)
    svc = service_factory(queue_max=3, queue_per_owner=2)
    running = svc.submit(req(), ALICE)
    assert gate.entered.wait(30)
    svc.submit(req(), ALICE)
    svc.submit(req(), ALICE)
    with pytest.raises(QueueFull, match="You already have 2 jobs waiting"):
        svc.submit(req(), ALICE)
    svc.submit(req(), BOB)
    with pytest.raises(QueueFull, match="The queue is full"):
        svc.submit(req(), Owner("web", "carol"))
    assert svc.status()["queued"] == 3
    gate.release.set()
    running.result(timeout=60)


def test_owners_take_turns(service_factory, generator, monkeypatch):
    gate = Gate(generator, monkeypatch)
    svc = service_factory(queue_per_owner=10)
    first = svc.submit(req(), ALICE)
    assert gate.entered.wait(30)
    alice_jobs = [svc.submit(req(seed=i), ALICE) for i in range(4)]
    bob_job = svc.submit(req(), BOB)
    assert bob_job.position == 2  # behind Alice's next job, not behind all four
    assert [h.position for h in alice_jobs] == [1, 3, 4, 5]
    order = []
    lock = threading.Lock()
    for h in alice_jobs + [bob_job]:
        h_ = h

        def watch(h=h_):
            for e in h.iter_events(timeout=120):
                if isinstance(e, Started):
                    with lock:
                        order.append(h)
        threading.Thread(target=watch, daemon=True).start()
    gate.release.set()
    for h in alice_jobs + [bob_job]:
        h.result(timeout=120)
    first.result(timeout=60)
    assert order.index(bob_job) == 1


def test_cancel_a_queued_job(service_factory, generator, monkeypatch):
    gate = Gate(generator, monkeypatch)
    svc = service_factory()
    running = svc.submit(req(), ALICE)
    assert gate.entered.wait(30)
    waiting = svc.submit(req(), BOB)
    assert waiting.cancel()
    assert isinstance(waiting.final_event, Cancelled)
    with pytest.raises(JobCancelled):
        waiting.result(timeout=5)
    gate.release.set()
    assert isinstance(running.result(timeout=60).images, list)


def test_cancel_a_running_job_stops_within_one_step(service_factory):
    svc = service_factory()
    handle = svc.submit(req(steps=100), ALICE)
    steps = []
    for event in handle.iter_events(timeout=120):
        if isinstance(event, Progress):
            steps.append(event.step)
            if event.step == 2:
                handle.cancel()
    assert isinstance(handle.final_event, Cancelled)
    assert max(steps) <= 3  # the step in flight may finish; none after it


def test_out_of_memory_fails_only_that_job(service_factory, generator, monkeypatch):
    svc = service_factory()
    unet = generator.model.unet
    original = unet.forward
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(unet, "forward", flaky)
    doomed = svc.submit(req(), ALICE)
    fine = svc.submit(req(), BOB)
    with pytest.raises(JobFailed) as info:
        doomed.result(timeout=60)
    assert info.value.error_type == "OutOfMemory" and "ran out of memory" in info.value.reason
    assert isinstance(doomed.final_event, Failed)
    assert len(fine.result(timeout=60).images) == 1


def test_the_cpus_memory_running_out_is_said_as_such(service_factory, generator, monkeypatch):
    # torch's CPU allocator raises a RuntimeError (measured on this machine); it was "something went wrong".
    svc = service_factory()

    def too_big(traj):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                           "memory: you tried to allocate 115200000000 bytes. Error code 12 (Cannot allocate memory)")

    monkeypatch.setattr(generator, "decode", too_big)
    with pytest.raises(JobFailed) as info:
        svc.submit(req(), ALICE).result(timeout=60)
    assert info.value.error_type == "OutOfMemory"
    assert info.value.reason.startswith("This machine ran out of memory for this job. Try fewer images")


def test_any_exception_fails_the_job_and_the_service_goes_on(service_factory, generator, monkeypatch, caplog):
    svc = service_factory()
    monkeypatch.setattr(generator, "decode", lambda traj: (_ for _ in ()).throw(ValueError("decoder exploded")))
    with caplog.at_level("WARNING", logger="core.service"), pytest.raises(JobFailed) as info:
        svc.submit(req(), ALICE).result(timeout=60)
    # The person reads a sentence, not the exception; the log keeps its type, text and traceback.
    assert info.value.reason == UNEXPECTED and info.value.error_type == "ValueError"
    assert "exploded" not in info.value.reason and "Error" not in info.value.reason
    assert "ValueError: decoder exploded" in caplog.text and "Traceback" in caplog.text
    monkeypatch.undo()
    assert svc.submit(req(), ALICE).result(timeout=60).images


def test_a_job_error_says_its_own_sentence(service_factory, generator, monkeypatch):
    import torch

    svc = service_factory()
    vae = generator.model.vae
    monkeypatch.setattr(vae, "decode", lambda latents, return_dict=False: (torch.full(
        (latents.shape[0], 3, latents.shape[2] * 8, latents.shape[3] * 8), float("nan")),))
    with pytest.raises(JobFailed) as info:
        svc.submit(req(), ALICE).result(timeout=60)
    assert info.value.error_type == "JobError"
    assert info.value.reason.startswith("The picture came out as invalid numbers") and "NaN" not in info.value.reason


def test_asyncio_consumers_never_block_the_loop(service_factory):
    svc = service_factory()

    async def main():
        ticks = 0
        stop = asyncio.Event()

        async def ticker():
            nonlocal ticks
            while not stop.is_set():
                ticks += 1
                await asyncio.sleep(0.005)

        t = asyncio.create_task(ticker())
        handles = [svc.submit(req(seed=i, steps=6), Owner("web", f"u{i}")) for i in range(3)]
        kinds = await asyncio.gather(*[_collect(h) for h in handles])
        results = [await h.wait() for h in handles]
        stop.set()
        await t
        return ticks, kinds, results

    async def _collect(h):
        return [type(e).__name__ async for e in h.events()]

    ticks, kinds, results = asyncio.run(main())
    assert all(k[-1] == "Done" and "Progress" in k for k in kinds)
    assert len(results) == 3 and ticks > 5


def test_result_same_bytes_whatever_else_is_queued(service_factory):
    from core.generator import png_bytes

    svc = service_factory()
    alone = png_bytes(svc.submit(req(seed=77), ALICE).result(timeout=60).images[0].image)
    crowd = [svc.submit(req(seed=s, sampler="euler_a"), Owner("web", f"x{s}")) for s in range(3)]
    again = svc.submit(req(seed=77), ALICE)
    crowd.append(svc.submit(req(seed=5, count=2), BOB))
    assert png_bytes(again.result(timeout=120).images[0].image) == alone
    for h in crowd:
        h.result(timeout=120)


class RecordingRecorder:
    def __init__(self):
        self.calls = []

    def job_queued(self, job_id, request, owner, parent_id, kind, fingerprint):
        self.calls.append(("queued", kind, parent_id))
        return f"gen-{len(self.calls)}"

    def job_started(self, gid):
        self.calls.append(("started", gid))

    def job_done(self, gid, result):
        self.calls.append(("done", gid))
        return [type(i)(**{**i.__dict__, "id": f"img{i.index}"}) for i in result.images]

    def job_failed(self, gid, reason, error_type):
        self.calls.append(("failed", gid, error_type))

    def job_cancelled(self, gid):
        self.calls.append(("cancelled", gid))


def test_recorder_hears_every_step_before_done(service_factory):
    rec = RecordingRecorder()
    svc = service_factory(recorder=rec)
    handle = svc.submit(req(), ALICE, parent_id="abc", kind="vary")
    assert rec.calls == [("queued", "vary", "abc")]  # recorded before it runs
    result = handle.result(timeout=60)
    assert [c[0] for c in rec.calls] == ["queued", "started", "done"]
    assert result.images[0].id == "img0" and result.generation_id == "gen-1"


def test_recorder_failure_on_queue_refuses_the_job(service_factory):
    class Broken(RecordingRecorder):
        def job_queued(self, *a):
            raise OSError("disk full")

    svc = service_factory(recorder=Broken())
    with pytest.raises(OSError):
        svc.submit(req(), ALICE)
    assert svc.status()["queued"] == 0


def test_recorder_failure_on_done_fails_the_job(service_factory):
    class Broken(RecordingRecorder):
        def job_done(self, gid, result):
            raise OSError("disk full")

    rec = Broken()
    svc = service_factory(recorder=rec)
    with pytest.raises(JobFailed) as info:
        svc.submit(req(), ALICE).result(timeout=60)
    assert (info.value.reason, info.value.error_type) == (UNEXPECTED, "OSError")
    assert rec.calls[-1][0] == "failed"


class AwayRecorder(RecordingRecorder):
    """A record whose database goes away while `away` is set: every write raises."""

    def __init__(self):
        super().__init__()
        self.away = False

    def __getattribute__(self, name):
        if name.startswith("job_") and object.__getattribute__(self, "away"):
            from sqlalchemy.exc import OperationalError

            raise OperationalError("UPDATE generations", {}, Exception("server closed the connection unexpectedly"))
        return object.__getattribute__(self, name)


def test_how_a_job_ended_is_recorded_once_the_record_answers_again(service_factory, generator, monkeypatch):
    # The database goes away while a job runs: its result cannot be kept, nor can its failure be
    # written then. The row must not read 'running' for as long as the service runs: the failure
    # is written as soon as the record answers, here with the next job.
    rec = AwayRecorder()
    svc = service_factory(recorder=rec)
    real = generator.decode

    def decode_while_away(traj):
        rec.away = True
        return real(traj)

    monkeypatch.setattr(generator, "decode", decode_while_away)
    with pytest.raises(JobFailed) as info:
        svc.submit(req(), ALICE).result(timeout=60)
    assert info.value.error_type == "DatabaseUnavailable"
    assert rec.calls == [("queued", "generate", None), ("started", "gen-1")]   # nothing written while away
    monkeypatch.undo()
    rec.away = False
    svc.submit(req(), BOB).result(timeout=60)
    assert ("failed", "gen-1", "DatabaseUnavailable") in rec.calls
    assert rec.calls.index(("failed", "gen-1", "DatabaseUnavailable")) < rec.calls.index(("done", "gen-3"))


def test_with_no_next_job_the_end_is_written_by_a_retry(service_factory, monkeypatch):
    import core.service

    monkeypatch.setattr(core.service, "RECORD_RETRY_S", 0.2)
    rec = AwayRecorder()
    svc = service_factory(recorder=rec)
    handle = svc.submit(req(steps=50), ALICE)
    rec.away = True
    assert svc.cancel(handle)
    with pytest.raises(JobCancelled):
        handle.result(timeout=60)
    time.sleep(0.5)   # tries while still away, and keeps trying
    assert not [c for c in rec.calls if c[0] == "cancelled"]
    rec.away = False
    deadline = time.monotonic() + 10
    while ("cancelled", "gen-1") not in rec.calls:
        assert time.monotonic() < deadline, rec.calls
        time.sleep(0.05)


def test_a_retry_waiting_on_a_slow_database_does_not_hold_up_the_next_job(service_factory, monkeypatch):
    # The retry writes a cancelled job's end while the database answers slowly. A submit and the
    # next job record their own rows meanwhile; they used to wait for the retry's lock, so nothing
    # queued or ran until the slow write returned. The end is written once, by the retry.
    import core.service

    monkeypatch.setattr(core.service, "RECORD_RETRY_S", 0.2)
    rec = AwayRecorder()
    svc = service_factory(recorder=rec)
    real_cancelled = rec.job_cancelled
    handle = svc.submit(req(steps=50), ALICE)
    rec.away = True
    assert svc.cancel(handle)
    with pytest.raises(JobCancelled):
        handle.result(timeout=60)
    slow, writing = threading.Event(), threading.Event()

    def cancelled_slowly(gid):
        writing.set()
        assert slow.wait(20)
        real_cancelled(gid)

    rec.job_cancelled = cancelled_slowly
    rec.away = False
    assert writing.wait(10)   # the retry is in the slow write now
    try:
        result = svc.submit(req(), BOB).result(timeout=30)
        assert ("done", result.generation_id) in rec.calls
    finally:
        slow.set()
    deadline = time.monotonic() + 10
    while ("cancelled", "gen-1") not in rec.calls:
        assert time.monotonic() < deadline, rec.calls
        time.sleep(0.05)
    assert rec.calls.count(("cancelled", "gen-1")) == 1
