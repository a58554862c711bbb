"""CeleryJobService: the JobService front-ends use when STATUARY_BROKER_URL is set.

It loads no model. It checks and reserves the limits in Redis (quota.py), records the job in
the database (before it is queued, so a job is never lost), puts it in the shared waiting line
and sends Celery the message that wakes a worker. One listener thread per process receives
every job's events over Redis pub/sub and hands them to the handles, so the web UI's live
preview and the bot's progress edits work as with the in-process service. The model's limits,
fingerprint, word list, hires-fix defaults and LoRA fit data come from what the workers
announce (broker.py).

What a front-end checks before anything is queued, as the in-process service does: the request
against the model's limits, and each LoRA (core/lora.py): the file exists in the LoRA folder
(STATUARY_LORA_DIR, which every machine mounts), is safetensors, fits the model (against the
announced layer shapes), its sha256 recorded -- the same sentences, from the same code.

Prompt notes (a cut prompt, how many chunks a long one took; core/prompts.py) are computed by
the worker that runs the job, and written into the row's fingerprint with the images
(store.job_done): they come from the tokenizer and, for chunk counts, compel's own splitting,
which needs the text encoder loaded -- not cheap on a front-end with no model, and a second
copy of that logic could disagree with what the worker encoded. The front-ends read them from
the result's fingerprint (core.prompts.result_notes), as in-process.

When Redis cannot be reached, submit and cancel say so in one sentence and history (the
database) keeps working.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from core.distributed import events
from core.distributed.broker import (QUEUE, TASK, BrokerUnavailable, announcement_file, key,
                                     make_app, redis_client, unreachable)
from core.distributed.quota import Line, owner_from_json
from core.hires import HiresDefaults
from core.jobs import Cancelled, Done, Failed, JobHandle, JobService, Owner, Progress, QueueFull, Queued, Quota, Started
from core.lora import ModelLayers, check_request, folder_catalog, library_for
from core.request import FieldError, GenerationRequest, InvalidRequest, ModelLimits

log = logging.getLogger(__name__)
RECONCILE_EVERY_S = 2.0


class CeleryJobService(JobService):
    def __init__(self, settings, store, *, wait_for_worker_s: float = 60.0):
        import redis

        self._settings = settings
        self._store = store
        self._url = settings.broker_url
        self.queue_max = settings.queue_max
        self.queue_per_owner = settings.queue_per_owner
        self._r = redis_client(self._url)
        self._line = Line(self._r)
        self._app = make_app(self._url)
        self._redis_errors = (redis.RedisError, OSError)
        self._lock = threading.Lock()
        self._handles: dict[str, JobHandle] = {}  # job id -> handle, until it ends
        self._positions: dict[str, int] = {}
        self._started: set[str] = set()
        self._closed = threading.Event()
        self._info = self._announced(wait_for_worker_s)
        self.hires_defaults = HiresDefaults.from_json(self._info.get("hires"))
        fit = self._info.get("lora_fit")
        self._loras = library_for(settings, ModelLayers.from_json(fit)) if fit else None
        self._listener = threading.Thread(target=self._listen, name="statuary-events", daemon=True)
        self._listener.start()

    # ---- the model the workers serve ---------------------------------------------------------

    def _announced(self, wait_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                text = self._r.get(key("model"))
                if text:
                    return json.loads(text)
            except self._redis_errors:
                break  # Redis is down: the copy in the shared data folder, if any
            if time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        path = announcement_file(self._settings.data_dir)
        if path.is_file():
            return json.loads(path.read_text())
        raise BrokerUnavailable("No worker has announced its model on the job queue yet (STATUARY_BROKER_URL); "
                                "start `statuary worker` first.")

    @property
    def limits(self) -> ModelLimits:
        return ModelLimits(**self._info["limits"])

    @property
    def vocabulary(self):
        from core.vocabulary import ModelVocabulary

        v = self._info.get("vocabulary")
        if not v:
            return None
        if getattr(self, "_vocabulary_of", None) is not v:   # built once per announcement (a large pattern)
            self._vocabulary, self._vocabulary_of = ModelVocabulary.from_json(v), v
        return self._vocabulary

    @property
    def model_info(self) -> dict[str, Any]:
        lim = self.limits
        return dict(self._info["fingerprint"], kind=self._info["kind"], native_size=lim.native_size,
                    max_side=lim.max_side, inpainting_unet=self._info["inpainting_unet"],
                    hires_helps=self.hires_defaults.helps)

    def lora_catalog(self) -> list[dict[str, Any]]:
        return folder_catalog(self._settings.lora_folder)

    # ---- submit, cancel, position -----------------------------------------------------------------

    def submit(self, request: GenerationRequest, owner: Owner, *, parent_id: str | None = None,
               kind: str = "generate", quota: Quota | None = None) -> JobHandle:
        from storage import claims

        resolved = request.resolve(self.limits)  # raises InvalidRequest: nothing queued
        if resolved.loras and self._loras is None:
            raise InvalidRequest([FieldError("loras", resolved.loras[0][0], "the workers did not announce what the "
                                             "LoRA check needs (an older `statuary worker`?); restart them")])
        resolved = check_request(self._loras, resolved)  # exists, safetensors, fits; its sha256 recorded
        if self._closed.is_set():
            raise QueueFull("The service is shutting down; try again in a moment.")
        handle = JobHandle(f"job-{uuid.uuid4().hex[:16]}", resolved, owner, self)
        try:  # 1. the limits, checked and reserved in one step (raises QueueFull / LimitReached)
            self._line.reserve(handle.job_id, owner, resolved.prompt, queue_max=self.queue_max,
                               per_owner=self.queue_per_owner, quota=quota)
        except self._redis_errors:
            raise QueueFull(unreachable(self._url)) from None
        try:  # 2. the record, before the job is queued
            handle.generation_id = self._store.job_queued(handle.job_id, resolved, owner, parent_id, kind,
                                                          dict(self._info["fingerprint"]))
        except BaseException:
            self._release_quietly(handle)
            raise
        with self._lock:
            self._handles[handle.job_id] = handle
        try:  # 3. the waiting line, and the message that wakes a worker
            self._line.enqueue(handle.job_id, owner, handle.generation_id)
            self._app.send_task(TASK, args=[handle.job_id], queue=QUEUE, retry=True,
                                retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5})
            self._r.publish(events.QUEUE_CHANGED, handle.job_id)
        except Exception:  # noqa: BLE001 -- the broker went away between the steps
            log.warning("could not queue %s", handle.job_id, exc_info=True)
            claims.finish(self._store, handle.generation_id, "failed", unreachable(self._url), "BrokerUnavailable")
            with self._lock:
                self._handles.pop(handle.job_id, None)
            self._release_quietly(handle)
            raise QueueFull(unreachable(self._url)) from None
        self._reposition()
        return handle

    def _release_quietly(self, handle: JobHandle) -> None:
        try:
            self._line.release(handle.job_id, handle.owner)
        except self._redis_errors:
            pass  # the sweep releases what a dead Redis connection left reserved

    def cancel(self, handle: JobHandle) -> bool:
        if handle.done:
            return False
        try:
            if self._line.cancel_waiting(handle.job_id, handle.owner):  # it never runs
                if handle.generation_id:
                    self._store.job_cancelled(handle.generation_id)
                events.publish(self._r, handle.job_id, Cancelled())
                self._r.publish(events.QUEUE_CHANGED, handle.job_id)
                self._end(handle, Cancelled())
                return True
            state = self._line.job(handle.job_id).get("state")
            if state == "running":  # the worker stops it before its next step
                self._r.set(key("cancel", handle.job_id), "1", ex=3600)
                return True
        except self._redis_errors:
            log.warning("cancel of %s: the broker cannot be reached", handle.job_id)
        return False

    def position(self, handle: JobHandle) -> int | None:
        with self._lock:
            return self._positions.get(handle.job_id)

    def handles_of(self, owner: Owner) -> list[JobHandle]:
        """The owner's waiting and running jobs, from every front-end (running first)."""
        from storage import claims

        try:
            job_ids = self._line.active_of(owner)
            jobs = {j: self._line.job(j) for j in job_ids}
        except self._redis_errors:
            with self._lock:
                return [h for h in self._handles.values() if h.owner.key == owner.key and not h.done]
        out = []
        for job_id, info in jobs.items():
            if not info.get("gid"):
                continue
            with self._lock:
                handle = self._handles.get(job_id)
            if handle is None:  # submitted by another front-end: follow it here too
                try:
                    request = claims.load_request(self._store, info["gid"])
                except Exception:  # noqa: BLE001 -- it ended meanwhile
                    continue
                handle = JobHandle(job_id, request, owner_from_json(info["owner_json"]), self)
                handle.generation_id = info["gid"]
                with self._lock:
                    handle = self._handles.setdefault(job_id, handle)
            if not handle.done:
                out.append((info.get("state") != "running", float(info.get("created", 0)), handle))
        self._reposition()
        return [h for *_, h in sorted(out, key=lambda t: (t[0], t[1]))]

    # ---- status and health -----------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """As the in-process service's, plus 'workers' (alive) and 'broker' (ok, or why not)."""
        try:
            batch = []
            for job_id in self._line.running():
                info = self._line.job(job_id)
                if not info:
                    continue
                owner = owner_from_json(info["owner_json"])
                batch.append({"job_id": job_id, "owner": owner.display_name or owner.user_id, "source": owner.source,
                              "user_id": owner.user_id, "guild_id": owner.guild_id, "prompt": info.get("prompt", ""),
                              "step": int(info.get("step", 0)), "total": int(info.get("total", 0)),
                              "worker": info.get("worker", "")})
            workers = alive_workers(self._r)
            return {"running": batch[0] if batch else None, "batch": batch,
                    "batch_cap": sum(int(w.get("batch_max", 1)) for w in workers),
                    "queued": self._line.waiting_count(), "per_owner": self._line.per_owner(),
                    "workers": workers, "broker": "ok"}
        except self._redis_errors:
            return {"running": None, "batch": [], "batch_cap": 0, "queued": 0, "per_owner": {}, "workers": [],
                    "broker": unreachable(self._url).split(", so")[0] + "."}

    def close(self) -> None:
        self._closed.set()
        self._listener.join(5)
        try:
            self._r.close()
        except Exception:  # noqa: BLE001
            pass

    # ---- events from the workers ---------------------------------------------------------------

    def _listen(self) -> None:
        last_reconcile = 0.0
        pubsub = None
        while not self._closed.is_set():
            try:
                if pubsub is None:
                    pubsub = self._r.pubsub(ignore_subscribe_messages=True)
                    pubsub.psubscribe(events.EVENTS_PATTERN)
                    pubsub.subscribe(events.QUEUE_CHANGED)
                    self._reposition()
                message = pubsub.get_message(timeout=0.5)
                if message is not None:
                    self._dispatch(message)
                if time.monotonic() - last_reconcile > RECONCILE_EVERY_S:
                    last_reconcile = time.monotonic()
                    self._reconcile()
            except self._redis_errors:
                pubsub = None
                self._closed.wait(1.0)
            except Exception:  # noqa: BLE001 -- one bad message must not stop every job's events
                log.exception("event listener")

    def _dispatch(self, message: dict[str, Any]) -> None:
        channel = message["channel"].decode()
        if channel == events.QUEUE_CHANGED:
            self._reposition()
            return
        job_id = channel.removeprefix(events.channel(""))
        with self._lock:
            handle = self._handles.get(job_id)
        if handle is None:
            return
        d = events.decode(message["data"])
        if d.get("type") == "done":
            self._finish_from_record(handle)
            return
        event = events.to_event(d)
        if isinstance(event, (Started, Progress)):
            with self._lock:
                self._started.add(job_id)
                self._positions.pop(job_id, None)
            handle._emit(event)
        elif event is not None:
            self._end(handle, event)

    def _end(self, handle: JobHandle, event) -> None:
        handle._emit(event)
        with self._lock:
            self._handles.pop(handle.job_id, None)
            self._positions.pop(handle.job_id, None)
            self._started.discard(handle.job_id)

    def _finish_from_record(self, handle: JobHandle) -> bool:
        """End the handle as its row says (done, failed, ...); False while it has not ended."""
        from storage import claims

        try:
            rec = self._store.generation(handle.generation_id)
            if rec.status == "done":
                self._end(handle, Done(claims.result(self._store, handle.generation_id, handle.job_id,
                                                     handle.request)))
            elif rec.status == "cancelled":
                self._end(handle, Cancelled())
            elif rec.status in ("failed", "interrupted"):
                self._end(handle, Failed(rec.reason or f"the job was {rec.status}", rec.error_type or "Error"))
            else:
                return False
        except Exception:  # noqa: BLE001 -- e.g. deleted meanwhile
            log.exception("reading the result of %s", handle.job_id)
            self._end(handle, Failed("The job's record could not be read.", "Error"))
        return True

    def _reconcile(self) -> None:
        """A pub/sub message can be lost (a reconnect): a handle whose job has left Redis ends as
        its record says."""
        with self._lock:
            handles = [h for h in self._handles.values() if h.generation_id and not h.done]
        for handle in handles:
            if not self._r.exists(key("job", handle.job_id)):
                self._finish_from_record(handle)

    def _reposition(self) -> None:
        try:
            order = self._line.order()
        except self._redis_errors:
            return
        positions = {job_id: i for i, job_id in enumerate(order, 1)}
        emit = []
        with self._lock:
            for job_id, handle in self._handles.items():
                pos = positions.get(job_id)
                if pos is None or job_id in self._started:
                    self._positions.pop(job_id, None)
                    continue
                if self._positions.get(job_id) != pos:
                    self._positions[job_id] = pos
                    emit.append((handle, pos))
        for handle, pos in emit:
            handle._emit(Queued(pos))


def alive_workers(r) -> list[dict[str, Any]]:
    keys = list(r.scan_iter(key("worker", "*"), count=100))
    return [json.loads(v) for v in (r.mget(keys) if keys else []) if v]

