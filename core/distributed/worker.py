"""`statuary worker`: a Celery worker that loads the model once and runs jobs on it.

    STATUARY_BROKER_URL=redis://127.0.0.1:6379/0 DATABASE_URL=postgresql+psycopg://... statuary worker

Inside, the in-process service (core/service.py) owns the model as it does on a laptop; the
Celery pool has STATUARY_BATCH_MAX threads, each taking one job at a time, so with batching a
GPU worker runs up to that many jobs together through the step-level batcher. For each message:

    1. take the job whose turn it is from the waiting line (quota.pop)
    2. a lease in Redis (renewed every LEASE_RENEW_S), then the claim on its row (queued ->
       running, attempts + 1): exactly one worker runs it; a duplicate delivery skips
    3. run it; every event goes out on the job's channel; the images and rows are written
       (only while this worker still holds the claim) before `done` is published
    4. the message is acknowledged only now (task_acks_late): a worker killed mid-job leaves
       its job to the sweep (sweep.py), which queues it again once the lease runs out
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

from core.distributed import events
from core.distributed.broker import (LEASE_RENEW_S, LEASE_TTL_S, QUEUE, SWEEP_EVERY_S, WORKER_ALIVE_TTL_S, BrokerUnavailable,
                                     announcement, key, make_app, publish_announcement, redis_client, unreachable,
                                     worker_name)
from core.distributed.quota import Line
from core.distributed.sweep import sweep
from core.jobs import Cancelled, Failed, ImageResult, JobResult, Progress, Queued

log = logging.getLogger(__name__)
PROGRESS_EVERY_S = 0.1


class _ClaimRecorder:
    """The embedded service's Recorder: the row exists and is claimed; write only while ours."""

    def __init__(self, store, runner: str):
        self.store = store
        self.runner = runner

    def job_queued(self, *a, **k) -> str:  # never called: jobs arrive recorded (submit(generation_id=...))
        raise RuntimeError("a worker does not record new jobs")

    def job_started(self, generation_id: str) -> None:
        pass  # the claim set it running

    def job_done(self, generation_id: str, result: JobResult) -> list[ImageResult]:
        return self.store.job_done(generation_id, result, runner=self.runner)

    def job_failed(self, generation_id: str, reason: str, error_type: str) -> None:
        from storage import claims

        claims.finish(self.store, generation_id, "failed", reason, error_type, runner=self.runner)

    def job_cancelled(self, generation_id: str) -> None:
        from storage import claims

        claims.finish(self.store, generation_id, "cancelled", "cancelled before it finished", None,
                      runner=self.runner)


class Worker:
    """One worker process: the model, the store, the Redis side, and the background threads."""

    def __init__(self, settings, *, model_config: str | None = None):
        from core.service import create_service
        from storage import open_store
        from storage.runners import runner_token

        import redis

        self.settings = settings
        self.name = worker_name()
        self.token = runner_token()
        self.r = redis_client(settings.broker_url)
        try:  # before the model loads: a worker with no queue to take jobs from says so at once
            self.r.ping()
        except (redis.RedisError, OSError):
            raise BrokerUnavailable(unreachable(settings.broker_url).split(", so")[0]
                                    + "; start Redis (or fix STATUARY_BROKER_URL) and then the worker.") from None
        self.store = open_store(settings)
        self.line = Line(self.r)
        self.app = make_app(settings.broker_url)
        self.service = create_service(settings, recorder=_ClaimRecorder(self.store, self.token),
                                      model_config=model_config)
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, Any]] = {}  # generation id -> (job id, handle or None)
        self._stop = threading.Event()

        publish_announcement(self.r, settings.data_dir, announcement(self.service))

    # ---- one message --------------------------------------------------------------------------

    def run_next(self) -> None:
        from storage import claims

        popped = self.line.pop(self.name)
        if popped is None:
            return  # a message with no job left for it (the job was cancelled, or a spare message)
        job_id, gid, owner = popped
        self.r.publish(events.QUEUE_CHANGED, job_id)  # everyone behind it moves up one place
        lease = key("lease", gid)
        if not gid or not self.r.set(lease, self.token, nx=True, ex=LEASE_TTL_S):
            return  # another worker holds it: a duplicate
        attempt = claims.claim(self.store, gid, self.token)
        if attempt is None:  # not queued any more: cancelled, ended by the sweep, or a duplicate
            self.r.delete(lease)
            row = claims.row(self.store, gid)
            if row is None or row.status not in ("queued", "running"):
                self.line.release(job_id, owner)
            return
        with self._lock:
            self._running[gid] = (job_id, None)
        try:
            self._run(job_id, gid, owner, attempt)
        finally:
            with self._lock:
                self._running.pop(gid, None)
            now = claims.row(self.store, gid)
            # Unless the sweep gave it to another worker meanwhile (its place, lease and events are that one's):
            if now is None or now.status not in ("queued", "running") or now.runner == self.token:
                self.line.release(job_id, owner)
                self.r.delete(lease, key("cancel", job_id))
                self.r.publish(events.QUEUE_CHANGED, job_id)

    def _run(self, job_id: str, gid: str, owner: str, attempt: int) -> None:
        from storage import claims

        self.r.hset(key("job", job_id), mapping={"state": "running", "worker": self.name, "attempt": attempt})
        if self.r.exists(key("cancel", job_id)):
            self.store.job_cancelled(gid)
            events.publish(self.r, job_id, Cancelled())
            return
        row = claims.row(self.store, gid)
        try:
            request = claims.load_request(self.store, gid)
            handle = self.service.submit(request, row.owner, generation_id=gid)
        except Exception as exc:  # noqa: BLE001 -- a request this worker's model refuses, a missing input
            reason = str(exc) or type(exc).__name__
            claims.finish(self.store, gid, "failed", reason, type(exc).__name__, runner=self.token)
            events.publish(self.r, job_id, Failed(reason, type(exc).__name__))
            return
        with self._lock:
            self._running[gid] = (job_id, handle)
        last = 0.0
        for event in handle.iter_events():
            if isinstance(event, Queued):
                continue
            if isinstance(event, Progress):
                # At most one preview per PROGRESS_EVERY_S (and always the last step): a fast GPU
                # makes dozens of steps a second, more than any front-end shows.
                if event.step < event.total and time.monotonic() - last < PROGRESS_EVERY_S:
                    continue
                last = time.monotonic()
                self.r.hset(key("job", job_id), mapping={"step": event.step, "total": event.total})
            if isinstance(event, Failed) and event.error_type == "Superseded":
                log.warning("job %s: its lease lapsed and another worker runs it now; this run is dropped", job_id)
                return  # the worker that holds it now tells the front-end how it ends
            events.publish(self.r, job_id, event)

    # ---- background: leases, liveness, cancel requests, the sweep ------------------------------------

    def start_background(self) -> None:
        threading.Thread(target=self._heartbeat, name="statuary-heartbeat", daemon=True).start()
        threading.Thread(target=self._sweeper, name="statuary-sweep", daemon=True).start()

    def _heartbeat(self) -> None:
        last_lease = 0.0
        while not self._stop.is_set():
            try:
                with self._lock:
                    running = dict(self._running)
                now = time.monotonic()
                if now - last_lease >= LEASE_RENEW_S:
                    last_lease = now
                    pipe = self.r.pipeline()
                    for gid in running:
                        pipe.set(key("lease", gid), self.token, ex=LEASE_TTL_S)
                    pipe.set(key("worker", self.name), json.dumps({
                        "name": self.name, "running": len(running), "batch_max": self.settings.batch_max,
                        "model": self.service.model_info.get("model_id", ""), "device": self.service.model_info.get(
                            "device", "")}), ex=WORKER_ALIVE_TTL_S)
                    pipe.execute()
                jobs = [(gid, job_id, handle) for gid, (job_id, handle) in running.items() if handle is not None]
                if jobs:
                    flags = self.r.mget([key("cancel", job_id) for _, job_id, _ in jobs])
                    for (gid, job_id, handle), flag in zip(jobs, flags):
                        if flag and not handle.cancel_requested.is_set():
                            self.service.cancel(handle)  # stops before its next step
            except Exception:  # noqa: BLE001 -- Redis away for a moment: try again
                log.warning("worker heartbeat", exc_info=True)
            self._stop.wait(0.2)

    def _sweeper(self) -> None:
        while not self._stop.wait(SWEEP_EVERY_S):
            try:
                did = sweep(self.store, self.r, self.app, holder=self.name)
                if any(did.values()):
                    log.info("sweep: %s", did)
            except Exception:  # noqa: BLE001
                log.warning("sweep", exc_info=True)

    def close(self) -> None:
        self._stop.set()
        self.service.close()
        self.store.close()


def run_worker(settings, *, model_config: str | None = None, loglevel: str = "WARNING") -> int:
    """Load the model, announce it, and consume jobs until stopped (SIGTERM: a warm shutdown, the
    running jobs finish first)."""
    worker = Worker(settings, model_config=model_config)
    app = worker.app

    @app.task(name="statuary.run", acks_late=True, ignore_result=True)
    def run(job_hint: str = "") -> None:
        worker.run_next()

    worker.start_background()
    print(f"statuary worker {worker.name}: model {worker.service.model_info.get('model_id')}, "
          f"{settings.batch_max} job(s) at once, queue {QUEUE}", flush=True)
    try:
        app.worker_main(["worker", "-Q", QUEUE, "-P", "threads", "-c", str(settings.batch_max),
                         "-n", f"statuary-{worker.name.replace(':', '-')}@%h", "--without-gossip",
                         "--without-mingle", "--without-heartbeat", "-l", loglevel])
    finally:
        worker.close()
    return 0
