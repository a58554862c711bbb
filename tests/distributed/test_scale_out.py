"""The distributed service end to end: real Redis, real PostgreSQL, real `statuary worker`
processes on the tiny model, front-ends in other processes (tests/distributed/frontend.py).

Scenarios (issue 10): two workers and two front-ends running 40 jobs of 8 owners, every job
done once with its files, the images byte-identical to the in-process service's; a worker
killed mid-job (its job finishes on the other, recorded once); cancel across processes; the
limits under simultaneous submits; the broker down; the sweep of a job that never reached it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.jobs import Cancelled, Owner, Progress, QueueFull, Started
from core.request import GenerationRequest
from tests.distributed.conftest import ROOT

pytestmark = pytest.mark.slow


def frontend(cluster, *args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.distributed.frontend", *args], cwd=ROOT,
                            env=cluster.env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def lines(proc: subprocess.Popen, timeout: float = 600) -> list[dict]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def service(cluster, **env):
    from core.distributed.service import CeleryJobService
    from storage import open_store

    settings = cluster.settings(**env)
    store = open_store(settings)
    return CeleryJobService(settings, store), store


def rows(store):
    from sqlalchemy import select

    from storage.models import Generation, Image

    with store._read() as s:
        gens = {g.id: (g.status, g.attempts, g.runner, g.reason) for g in s.scalars(select(Generation))}
        images = [(i.generation_id, i.file, i.sha256) for i in s.scalars(select(Image))]
    return gens, images


def check_files(data_dir: Path, images) -> None:
    """Every row's file exists with its sha256, and no image file is half-written."""
    from PIL import Image as PILImage

    for _gid, rel, sha in images:
        data = (data_dir / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha
    for path in (data_dir / "images").rglob("*.png"):
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem, path
        with PILImage.open(path) as im:
            im.load()


def test_two_workers_two_frontends_forty_jobs_from_eight_owners(cluster, tmp_path, service_factory):
    cluster.start_worker(STATUARY_THREADS="2")
    cluster.start_worker(STATUARY_THREADS="2")
    cluster.wait_workers(2)
    start = time.time() + 2
    a = frontend(cluster, "jobs", str(start), "a1,a2,a3,a4", "20", "3", STATUARY_QUEUE_PER_OWNER="5")
    b = frontend(cluster, "jobs", str(start), "b1,b2,b3,b4", "20", "3", STATUARY_QUEUE_PER_OWNER="5")
    results = lines(a) + lines(b)
    assert len(results) == 40

    from storage import open_store

    store = open_store(cluster.settings())
    gens, images = rows(store)
    assert len(gens) == 40 and all(st == "done" and attempts == 1 for st, attempts, _r, _why in gens.values())
    assert len({runner for *_x, runner, _why in gens.values()}) == 2, "both workers ran jobs"
    assert sorted(r["generation_id"] for r in results) == sorted(gens)
    assert len(images) == 40 and len({gid for gid, *_ in images}) == 40  # one image each, recorded once
    check_files(cluster.data_dir, images)

    # The same requests through the in-process service (torch on 2 threads here too: the thread
    # count changes the order of float sums, measured 1/255 apart with 1 thread vs 2): the same PNG bytes.
    from storage import Store, db

    local = Store(db.create(f"sqlite:///{tmp_path / 'local.db'}"), tmp_path / "local")
    db.upgrade(local.engine)
    svc = service_factory(local)
    for r in results[:3] + results[-3:]:
        mine = svc.submit(GenerationRequest(f"cat {r['seed']}", seed=r["seed"], steps=3), Owner("web", "x")).result(60)
        assert mine.images[0].sha256 == r["images"][0][1]
    store.close()


def test_a_killed_workers_job_finishes_on_the_other_recorded_once(cluster):
    w1 = cluster.start_worker()
    w2 = cluster.start_worker()
    cluster.wait_workers(2)
    svc, store = service(cluster)
    handle = svc.submit(GenerationRequest("a long cat", seed=7, steps=120, count=2), Owner("web", "kill"))
    worker_pid = None
    for event in handle.iter_events(timeout=120):
        if isinstance(event, Progress) and event.step >= 5:
            info = svc._line.job(handle.job_id)
            worker_pid = int(info["worker"].rsplit(":", 1)[1])
            break
    victim = w1 if w1.pid == worker_pid else w2
    assert victim.pid == worker_pid
    os.kill(victim.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait(10)
    restarted, starts = None, 0
    for event in handle.iter_events(timeout=180):  # from the first event again
        starts += isinstance(event, Started)
        if starts == 2 and restarted is None:
            restarted = time.monotonic() - killed_at  # the job started again, on the other worker
    result = handle.result()
    recovered = time.monotonic() - killed_at
    print(f"\nkill -9 mid-job: started again on the other worker after {restarted:.1f} s, done after {recovered:.1f} s")
    assert restarted is not None and recovered < 120
    gens, images = rows(store)
    status, attempts, runner, _ = gens[handle.generation_id]
    assert (status, attempts) == ("done", 2)
    assert str(victim.pid) not in runner.split(":")[1]
    assert len(images) == 2 and [i.id for i in result.images] and len(result.images) == 2
    check_files(cluster.data_dir, images)
    svc.close()
    store.close()


def test_a_stalled_worker_that_wakes_up_after_its_job_moved_records_nothing(cluster):
    """SIGSTOP a worker mid-job past its lease: the job moves to the other worker; when the first
    wakes up and finishes its run, the claim keeps it from recording the job a second time,
    failing it, or telling the front-end anything."""
    w1 = cluster.start_worker()
    w2 = cluster.start_worker()
    cluster.wait_workers(2)
    svc, store = service(cluster)
    handle = svc.submit(GenerationRequest("a stalled cat", seed=9, steps=60, count=2), Owner("web", "stall"))
    for event in handle.iter_events(timeout=120):
        if isinstance(event, Progress) and event.step >= 3:
            break
    pid = int(svc._line.job(handle.job_id)["worker"].rsplit(":", 1)[1])
    stalled = w1 if w1.pid == pid else w2
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        starts = 0
        for event in handle.iter_events(timeout=120):
            starts += isinstance(event, Started)
            if starts == 2:
                break  # running on the other worker now
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    result = handle.result(timeout=120)
    time.sleep(8)  # the woken worker finishes its own run of it meanwhile
    gens, images = rows(store)
    assert gens[handle.generation_id][:2] == ("done", 2)
    assert len(images) == 2 and len(result.images) == 2  # recorded once
    assert handle.final_event is not None and type(handle.final_event).__name__ == "Done"
    assert "lease lapsed and another worker runs it now" in (cluster.logs / f"worker-{cluster.workers.index(stalled)}.log").read_text()
    assert stalled.poll() is None  # and it goes on taking jobs
    assert svc.submit(GenerationRequest("after", seed=1, steps=2), Owner("web", "stall")).result(60).images
    svc.close()
    store.close()


def test_cancel_queued_and_running_from_another_process(cluster):
    cluster.start_worker()
    cluster.wait_workers(1)
    svc, store = service(cluster)
    owner = Owner("web", "canceller")
    # long enough (4 images of 150 steps at 128 px) to be running still when the other process starts
    running = svc.submit(GenerationRequest("runs", seed=1, steps=150, count=4, width=128, height=128), owner)
    waiting = svc.submit(GenerationRequest("waits", seed=2, steps=2), owner)
    for event in running.iter_events(timeout=120):
        if isinstance(event, Progress):
            break
    assert waiting.position == 1
    assert lines(frontend(cluster, "cancel", "canceller"))[0]["cancelled"] == 2
    assert isinstance(waiting.final_event or list(waiting.iter_events(timeout=30))[-1], Cancelled)
    events = list(running.iter_events(timeout=60))
    assert isinstance(events[-1], Cancelled)
    gens, images = rows(store)
    assert gens[waiting.generation_id][:2] == ("cancelled", 0)  # never ran
    assert gens[running.generation_id][:2] == ("cancelled", 1)
    assert images == []
    assert not any(isinstance(e, Started) for e in waiting.iter_events(timeout=1))
    svc.close()
    store.close()


def test_limits_hold_under_simultaneous_submits_from_two_processes(cluster):
    """No worker runs, so nothing leaves the line: exactly the limit is taken, whatever the race."""
    from core.distributed.broker import announcement_file, key, redis_client

    # a front-end needs a worker's announcement; take one from a worker, then stop it
    w = cluster.start_worker()
    cluster.wait_workers(1)
    w.send_signal(signal.SIGKILL)
    w.wait(10)
    redis_client(cluster.redis.url).delete(*redis_client(cluster.redis.url).keys(key("worker", "*")))
    assert announcement_file(cluster.data_dir).is_file()

    start = time.time() + 3
    a = frontend(cluster, "burst", str(start), "same", "5", "3")
    b = frontend(cluster, "burst", str(start), "same", "5", "3")
    got = lines(a) + lines(b)
    assert sum(g["accepted"] for g in got) == 3
    refusals = [m for g in got for m in g["refusals"]]
    assert len(refusals) == 7 and all(m.startswith("You have 3 jobs waiting or running; this server allows 3")
                                      for m in refusals), refusals

    start = time.time() + 3
    env = {"STATUARY_QUEUE_MAX": "6", "STATUARY_QUEUE_PER_OWNER": "10"}
    a = frontend(cluster, "burst", str(start), "p", "5", "-1", **env)
    b = frontend(cluster, "burst", str(start), "q", "5", "-1", **env)
    got = lines(a) + lines(b)
    assert sum(g["accepted"] for g in got) == 3  # 3 places were left of 6
    refusals = [m for g in got for m in g["refusals"]]
    assert refusals and all(m == "The queue is full (6 jobs waiting, the limit is 6). Try again in a minute."
                            for m in refusals), refusals

    from storage import open_store

    store = open_store(cluster.settings())
    gens, _ = rows(store)
    assert len(gens) == 6 and all(st == "queued" for st, *_ in gens.values())  # refused jobs left no row
    store.close()


def test_broker_down_says_so_and_the_sweep_ends_what_never_reached_it(cluster):
    from core.distributed.broker import make_app, redis_client
    from core.distributed.sweep import sweep

    cluster.start_worker()
    cluster.wait_workers(1)
    svc, store = service(cluster)
    done = svc.submit(GenerationRequest("before", seed=3, steps=2), Owner("web", "down")).result(60)

    cluster.redis.stop()
    with pytest.raises(QueueFull) as refused:
        svc.submit(GenerationRequest("while down", seed=4, steps=2), Owner("web", "down"))
    assert str(refused.value).startswith("The job queue (Redis at 127.0.0.1:") and "cannot be reached" in str(refused.value)
    assert "Traceback" not in str(refused.value)
    assert store.history().total == 1 and store.get(done.images[0].id)  # history still works
    assert svc.status()["broker"].startswith("The job queue (Redis at")
    gens, _ = rows(store)
    assert len(gens) == 1  # nothing was recorded for the refused job

    # A front-end that recorded a job and died before queuing it (or lost Redis in between):
    stuck = store.job_queued("job-lost", GenerationRequest("lost", seed=5, steps=2, width=64, height=64, sampler="ddim", guidance=7.0),
                             Owner("web", "down"), None, "generate", {})
    cluster.redis.start()
    r = redis_client(cluster.redis.url)
    r.delete("statuary:sweep-lock")
    did = sweep(store, r, make_app(cluster.redis.url), holder="test", stuck_after=0)
    assert did["never_queued"] == 1
    rec = store.generation(stuck)
    assert rec.status == "failed" and "never reached the job queue" in rec.reason

    # and a front-end that starts while Redis is down still starts (the announcement is on disk)
    cluster.redis.stop()
    svc2, store2 = service(cluster)
    assert svc2.limits.native_size == svc.limits.native_size
    svc2.close()
    store2.close()
    svc.close()
    store.close()
    cluster.redis.start()


def test_status_command_shows_workers_and_queue(cluster):
    cluster.start_worker()
    cluster.wait_workers(1)
    out = subprocess.run([sys.executable, "-m", "core.cli", "status", "--json"], cwd=ROOT, env=cluster.env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert len(info["workers"]) == 1 and info["queued"] == 0
    cluster.redis.stop()
    out = subprocess.run([sys.executable, "-m", "core.cli", "status"], cwd=ROOT, env=cluster.env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.startswith("statuary: The job queue (Redis at 127.0.0.1:")
    assert "Traceback" not in out.stderr
    cluster.redis.start()


def test_a_worker_without_redis_says_so_in_one_sentence(cluster):
    from tests.storage.conftest import _free_port

    env = cluster.env(STATUARY_BROKER_URL=f"redis://127.0.0.1:{_free_port()}/0")
    out = subprocess.run([sys.executable, "-m", "core.cli", "worker"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.startswith("statuary: The job queue (Redis at 127.0.0.1:") and "start Redis" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
