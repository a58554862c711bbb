"""The pieces under the workers, on a real Redis and PostgreSQL without any worker: the waiting
line (owners take turns, positions, cancel, limits) and the claim on a row (one winner)."""

from __future__ import annotations

import threading

import pytest

from core.jobs import LimitReached, Owner, QueueFull, Quota
from core.request import GenerationRequest


@pytest.fixture
def line(redis_server):
    from core.distributed.broker import redis_client
    from core.distributed.quota import Line

    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return Line(redis_client(redis_server.url))


def add(line, job_id, owner, **limits):
    limits.setdefault("queue_max", 100)
    limits.setdefault("per_owner", 100)
    limits.setdefault("quota", None)
    line.reserve(job_id, owner, "p", **limits)
    line.enqueue(job_id, owner, "g" + job_id)


def test_owners_take_turns_and_cancel_keeps_the_order(line):
    a, b, c = Owner("web", "a"), Owner("discord", "b"), Owner("cli", "c")
    for job, owner in [("a1", a), ("a2", a), ("a3", a), ("b1", b), ("c1", c), ("c2", c)]:
        add(line, job, owner)
    assert line.order() == ["a1", "b1", "c1", "a2", "c2", "a3"]
    assert line.cancel_waiting("c1", c) and not line.cancel_waiting("c1", c)
    assert line.order() == ["a1", "b1", "c2", "a2", "a3"]
    popped = [line.pop("w")[0] for _ in range(5)]
    assert popped == ["a1", "b1", "c2", "a2", "a3"] and line.pop("w") is None
    assert line.running() == sorted(popped) and line.waiting_count() == 0
    line.enqueue("a1", a, "ga1", front=True)  # a dead worker's job: first in line again
    add(line, "b2", b)
    assert line.order()[0] == "a1"


def test_limits_are_checked_and_reserved_atomically(line):
    owner = Owner("discord", "m", guild_id="g1")
    results, admitted = [], []

    def one(i):
        try:
            add(line, f"j{i}", owner, quota=Quota(max_active=3))
            results.append("ok")
            admitted.append(f"j{i}")
        except LimitReached as exc:
            results.append(str(exc))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 3
    assert {r for r in results if r != "ok"} == {
        "You have 3 jobs waiting or running; this server allows 3 at once. Wait for one to finish, or `/cancel` one."}
    with pytest.raises(QueueFull, match=r"^You already have 3 jobs waiting \(the limit per person is 3\)"):
        add(line, "x", owner, per_owner=3)
    with pytest.raises(QueueFull, match=r"^The queue is full \(3 jobs waiting, the limit is 3\)"):
        add(line, "y", Owner("web", "other"), queue_max=3)
    # A job that held a place ended: its place is free again. (Which three threads got in is up
    # to the scheduler: releasing "j0" when j0 had been refused freed nothing, a CI flake.)
    line.release(admitted[0], owner)
    add(line, "j99", owner, quota=Quota(max_active=3))
    with pytest.raises(LimitReached, match="4 jobs in the last hour; this server allows 4 per hour"):
        add(line, "z", owner, quota=Quota(max_per_hour=4))


def test_exactly_one_claim_wins_and_requeue_needs_the_holder(postgres_server, tmp_path):
    from core.settings import load_settings
    from storage import claims, open_store

    store = open_store(load_settings({"STATUARY_DATA_DIR": str(tmp_path), "DATABASE_URL": postgres_server.new_database()},
                                     dotenv_path=None))
    gid = store.job_queued("job-1", GenerationRequest("x", seed=1, width=64, height=64, sampler="ddim", guidance=7.0),
                           Owner("web", "u"), None, "generate", {})
    wins = []
    threads = [threading.Thread(target=lambda i=i: wins.append(claims.claim(store, gid, f"w{i}"))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins, key=str) == [1] + [None] * 5
    holder = claims.row(store, gid).runner
    assert not claims.requeue(store, gid, "someone-else")
    assert claims.requeue(store, gid, holder) and claims.row(store, gid).status == "queued"
    # the slow worker whose job was given back cannot end it (it would fail a queued job)
    assert not claims.finish(store, gid, "failed", "superseded", runner=holder)
    assert claims.row(store, gid).status == "queued"
    assert claims.claim(store, gid, "w9") == 2  # attempts counted
    assert not claims.finish(store, gid, "failed", "x", runner="w1")  # only the holder may end it
    assert claims.finish(store, gid, "failed", "x", runner="w9")
    store.close()
