"""Many writers at once (threads and processes), and a process killed in the middle of a job."""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from core.jobs import Owner
from core.request import GenerationRequest
from storage import open_store
from storage.models import Generation, Image
from tests.storage.helpers import FakeService

ROOT = Path(__file__).resolve().parents[2]


def _counts(store) -> tuple[int, int, dict[str, int]]:
    with store._read() as s:
        gens = s.scalar(select(func.count(Generation.id)))
        images = s.scalar(select(func.count(Image.id)))
        statuses = dict(s.execute(select(Generation.status, func.count()).group_by(Generation.status)).all())
    return gens, images, statuses


def _assert_files_whole(data_dir: Path) -> None:
    """Every file under its final name is complete: its content hashes to its name."""
    for kind in ("images", "inputs", "timelines"):
        for path in (data_dir / kind).glob("*/*.*"):
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0], path


def test_threads_write_and_read_at_once(store):
    service = FakeService(store)
    errors: list[BaseException] = []
    n_threads, jobs = 6, 12

    def writer(t: int) -> None:
        try:
            owner = Owner("web", f"user-{t}")
            for i in range(jobs):
                result = service.submit(GenerationRequest(f"thread {t} job {i}", seed=i, count=2), owner).result()
                if i % 4 == 3:  # deletes interleave with writes
                    store.delete(result.images[1].id, owner)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(30):
                store.history(query="job", per_page=5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    gens, images, statuses = _counts(store)
    assert gens == n_threads * jobs and statuses == {"done": n_threads * jobs}
    assert images == n_threads * jobs * 2 - n_threads * (jobs // 4)
    _assert_files_whole(store.data_dir)


def _spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.storage.worker_process", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_processes_write_at_once(store, db_url):
    n_procs, jobs = 4, 10
    procs = [_spawn("write", str(store.data_dir), db_url, str(jobs), f"p{k}") for k in range(n_procs)]
    # this process writes too, meanwhile
    service = FakeService(store)
    for i in range(jobs):
        service.submit(GenerationRequest(f"parent job {i}", seed=i), Owner("cli", "parent")).result()
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and "DONE" in out, err
        assert "locked" not in err
    gens, images, statuses = _counts(store)
    assert gens == n_procs * jobs + jobs and statuses == {"done": gens}
    assert images == n_procs * jobs * 2 + jobs
    _assert_files_whole(store.data_dir)


@pytest.mark.parametrize("where", ["file", "commit"])
def test_sigkill_mid_job_leaves_an_interrupted_row(make_settings, db_url, tmp_path, where):
    settings = make_settings()
    open_store(settings).close()  # migrate first, so the child's start is quick
    proc = _spawn("hang", str(settings.data_dir), db_url, where)
    line = proc.stdout.readline()
    assert line.strip() == "HANG", proc.stderr.read()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    if where == "file":  # the killed writer's temp file is there, not under a final name
        assert list(settings.data_dir.glob("images/*/.tmp-*"))

    with open_store(settings) as store:  # the next start
        gens, images, statuses = _counts(store)
        assert (gens, images, statuses) == (1, 0, {"interrupted": 1})
        with store._read() as s:
            reason = s.scalar(select(Generation.reason))
        assert "stopped while it was running" in reason
        assert not list(settings.data_dir.glob("*/*/.tmp-*"))  # a dead writer's temp files are swept
        _assert_files_whole(settings.data_dir)
        # and the database takes new work at once
        assert FakeService(store).submit(GenerationRequest("after the crash", seed=1), Owner("cli", "u")).result().images
    if db_url.startswith("sqlite"):
        with sqlite3.connect(settings.data_dir / "statuary.db") as conn:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_a_quota_is_one_atomic_check_and_reserve_across_stores(make_settings, store):
    """Eight submits at once, through four stores on one database (as four processes would):
    a quota of 3 per hour lets exactly 3 in, and 'at once' limits the unfinished ones the same way."""
    from core.jobs import LimitReached, Quota
    from tests.storage.helpers import FAKE_FINGERPRINT

    stores = [open_store(make_settings()) for _ in range(4)]
    req = GenerationRequest("quota", seed=1, width=64, height=64, sampler="dpmpp_2m_karras", guidance=7.0)
    member = Owner("discord", "77", "m", "guild-1", "chan-1")
    for quota, admitted in ((Quota(max_per_hour=3), 3), (Quota(max_active=5), 2)):  # 3 unfinished already
        barrier = threading.Barrier(8)
        outcomes: list[str] = []

        def submit(k: int) -> None:
            barrier.wait()
            try:
                stores[k % 4].job_queued(f"j{k}", req, member, None, "generate", FAKE_FINGERPRINT, quota=quota)
                outcomes.append("queued")
            except LimitReached as exc:
                outcomes.append(str(exc))

        threads = [threading.Thread(target=submit, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert outcomes.count("queued") == admitted, outcomes
        assert all(o == "queued" or "this server allows" in o for o in outcomes)
    assert _counts(store)[0] == 5  # 3, then 2 more up to 5 unfinished
    for s in stores:
        s.close()
