"""The in-process job service: the one owner of the model.

One worker thread runs jobs; front-ends submit from any thread or event loop. The queue is
bounded (QUEUE_MAX in total, QUEUE_PER_OWNER per owner) and fair: owners take turns, so one
user's twenty jobs do not starve the next user. Every job is recorded (by the Recorder,
normally storage) before it is queued and its files are written before anyone hears "done".
An exception in a job -- out of memory included -- fails that job with a reason; the worker
goes on with the next.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import traceback
import uuid
from typing import Any

from core.generator import Cancelled as _LoopCancelled
from core.generator import Generator
from core.jobs import (Cancelled, Done, Failed, ImageResult, JobHandle, JobResult, JobService, Owner, Progress,
                       QueueFull, Queued, Recorder, Started)
from core.request import GenerationRequest, ModelLimits

log = logging.getLogger(__name__)


def _reason(exc: BaseException) -> tuple[str, str]:
    """A sentence a person can act on, and the error's type name."""
    import torch

    name = type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return ("The GPU ran out of memory for this job. Try fewer images, a smaller size, "
                "or wait until fewer jobs are running."), "OutOfMemory"
    return f"{name}: {exc}", name


def keep_frame_steps(total: int, frames: int) -> set[int]:
    """Which steps (1-based) of one image's `total` to keep as timeline frames: evenly spaced, last included."""
    if frames <= 0 or total <= 0:
        return set()
    if frames >= total:
        return set(range(1, total + 1))
    return {max(1, round(total * (k + 1) / frames)) for k in range(frames)}


class InProcessJobService(JobService):
    def __init__(self, generator: Generator, recorder: Recorder | None = None, *, queue_max: int = 64,
                 queue_per_owner: int = 4, preview_frames: int = 8, preview_side: int = 128):
        self._gen = generator
        self._recorder = recorder
        self.queue_max = queue_max
        self.queue_per_owner = queue_per_owner
        self.preview_frames = preview_frames
        self.preview_side = preview_side
        self._lock = threading.Lock()
        self._submit_lock = threading.Lock()  # submits are serialised: check, record, enqueue as one
        self._wake = threading.Condition(self._lock)
        self._waiting: dict[tuple[str, str], collections.deque[JobHandle]] = {}
        self._turns: collections.deque[tuple[str, str]] = collections.deque()  # owners, in turn order
        self._positions: dict[str, int] = {}
        self._running: JobHandle | None = None
        self._running_step: tuple[int, int] = (0, 0)
        self._closed = False
        self._counter = itertools.count(1)
        self._fingerprint = generator.model.fingerprint()
        self._worker = threading.Thread(target=self._work, name="statuary-worker", daemon=True)
        self._worker.start()

    # ---- the interface -------------------------------------------------------------------------

    @property
    def limits(self) -> ModelLimits:
        return self._gen.model.limits

    @property
    def model_info(self) -> dict[str, Any]:
        return dict(self._fingerprint, kind=self._gen.model.kind, native_size=self.limits.native_size,
                    max_side=self.limits.max_side, inpainting_unet=self._gen.model.inpainting_unet)

    def submit(self, request: GenerationRequest, owner: Owner, *, parent_id: str | None = None,
               kind: str = "generate") -> JobHandle:
        resolved = request.resolve(self.limits)  # raises InvalidRequest: nothing queued
        with self._submit_lock:
            with self._lock:
                if self._closed:
                    raise QueueFull("The service is shutting down; try again in a moment.")
                waiting = sum(len(q) for q in self._waiting.values())
                mine = len(self._waiting.get(owner.key, ()))
                if waiting >= self.queue_max:
                    raise QueueFull(f"The queue is full ({waiting} jobs waiting, the limit is {self.queue_max}). "
                                    "Try again in a minute.")
                if mine >= self.queue_per_owner:
                    raise QueueFull(f"You already have {mine} jobs waiting (the limit per person is "
                                    f"{self.queue_per_owner}). Wait for one to finish or cancel one.")
            handle = JobHandle(f"job-{next(self._counter)}-{uuid.uuid4().hex[:8]}", resolved, owner, self)
            if self._recorder is not None:
                handle.generation_id = self._recorder.job_queued(handle.job_id, resolved, owner, parent_id, kind,
                                                                 dict(self._fingerprint))
            with self._lock:
                if owner.key not in self._waiting:
                    self._waiting[owner.key] = collections.deque()
                if owner.key not in self._turns:
                    self._turns.append(owner.key)
                self._waiting[owner.key].append(handle)
                self._reposition_locked()
                self._wake.notify_all()
        return handle

    def cancel(self, handle: JobHandle) -> bool:
        with self._lock:
            queue = self._waiting.get(handle.owner.key)
            if queue is not None and handle in queue:
                queue.remove(handle)
                self._reposition_locked()
                removed = True
            elif self._running is handle:
                handle.cancel_requested.set()  # the loop checks it before every step
                return True
            else:
                return False
        if removed:
            self._record("job_cancelled", handle)
            handle._emit(Cancelled())
        return True

    def position(self, handle: JobHandle) -> int | None:
        with self._lock:
            return self._positions.get(handle.job_id)

    def handles_of(self, owner: Owner) -> list[JobHandle]:
        """The owner's running and waiting jobs, running first."""
        with self._lock:
            out = [self._running] if self._running is not None and self._running.owner.key == owner.key else []
            return out + list(self._waiting.get(owner.key, ()))

    def status(self) -> dict[str, Any]:
        with self._lock:
            running = self._running
            step, total = self._running_step
            return {
                "running": None if running is None else {
                    "job_id": running.job_id, "owner": running.owner.display_name or running.owner.user_id,
                    "source": running.owner.source, "prompt": running.request.prompt, "step": step, "total": total},
                "queued": sum(len(q) for q in self._waiting.values()),
                "per_owner": {f"{k[0]}:{k[1]}": len(q) for k, q in self._waiting.items() if q},
            }

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, cancel the waiting ones, let the running one finish (or cancel it)."""
        with self._lock:
            self._closed = True
            pending = [h for q in self._waiting.values() for h in q]
            self._waiting.clear()
            self._turns.clear()
            running = self._running
            self._wake.notify_all()
        for handle in pending:
            self._record("job_cancelled", handle)
            handle._emit(Cancelled())
        if running is not None:
            running.cancel_requested.set()
        self._worker.join(timeout)

    # ---- queue order -------------------------------------------------------------------------------

    def _order_locked(self) -> list[JobHandle]:
        """Waiting jobs in the order they will run: owners take turns, each in submission order."""
        queues = [list(self._waiting.get(key, ())) for key in self._turns]
        order: list[JobHandle] = []
        for rank in range(max((len(q) for q in queues), default=0)):
            order.extend(q[rank] for q in queues if rank < len(q))
        return order

    def _reposition_locked(self) -> None:
        order = self._order_locked()
        positions = {h.job_id: i for i, h in enumerate(order, 1)}
        for handle in order:
            if self._positions.get(handle.job_id) != positions[handle.job_id]:
                handle._emit(Queued(positions[handle.job_id]))
        self._positions = positions

    def _next_locked(self) -> JobHandle | None:
        for _ in range(len(self._turns)):
            key = self._turns[0]
            self._turns.rotate(-1)  # this owner goes to the back of the line
            queue = self._waiting.get(key)
            if queue:
                handle = queue.popleft()
                if not queue:
                    del self._waiting[key]
                    self._turns.remove(key)
                return handle
        return None

    # ---- the worker ------------------------------------------------------------------------------------

    def _record(self, method: str, handle: JobHandle, *args) -> Any:
        if self._recorder is None or handle.generation_id is None:
            return None
        try:
            return getattr(self._recorder, method)(handle.generation_id, *args)
        except Exception:  # the record is storage's to keep; a failure here must not kill the worker
            log.exception("recorder.%s failed for %s", method, handle.job_id)
            if method == "job_done":
                raise
            return None

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._waiting:
                    self._wake.wait()
                if self._closed:
                    return
                handle = self._next_locked()
                self._running = handle
                self._running_step = (0, 0)
                self._reposition_locked()
                self._positions.pop(handle.job_id, None)
            try:
                self._run(handle)
            finally:
                with self._lock:
                    self._running = None

    def _run(self, handle: JobHandle) -> None:
        started = time.monotonic()
        handle._emit(Started())
        self._record("job_started", handle)
        frames: dict[int, list] = collections.defaultdict(list)
        per_image_step: dict[int, int] = collections.defaultdict(int)

        def on_step(traj, step: int, total: int) -> None:
            preview = self._gen.preview(traj, self.preview_side)
            per_image_step[traj.index] += 1
            if per_image_step[traj.index] in keep_frame_steps(traj.total, self.preview_frames):
                frames[traj.index].append(preview)
            with self._lock:
                self._running_step = (step, total)
            handle._emit(Progress(step, total, traj.index, preview))

        try:
            outputs = self._gen.generate(handle.request, on_step=on_step,
                                         should_cancel=handle.cancel_requested.is_set)
            images = []
            for traj, image in outputs:
                kept = frames[traj.index]
                if kept:  # the timeline ends on the finished picture, at preview size
                    kept[-1] = image.resize(kept[-1].size, resample=3)
                images.append(ImageResult(index=traj.index, seed=handle.request.image_seed(traj.index),
                                          variation_seed=handle.request.image_variation_seed(traj.index),
                                          image=image, frames=kept))
            result = JobResult(job_id=handle.job_id, generation_id=handle.generation_id, request=handle.request,
                               images=images, fingerprint=dict(self._fingerprint),
                               seconds=time.monotonic() - started)
            if self._recorder is not None and handle.generation_id is not None:
                stored = self._record("job_done", handle, result)
                result = JobResult(**{**result.__dict__, "images": list(stored)})
            handle._emit(Done(result))
        except _LoopCancelled:
            self._record("job_cancelled", handle)
            handle._emit(Cancelled())
        except Exception as exc:  # noqa: BLE001 -- any failure fails this job only
            reason, error_type = _reason(exc)
            log.warning("job %s failed: %s\n%s", handle.job_id, reason, traceback.format_exc())
            self._release_memory()
            self._record("job_failed", handle, reason, error_type)
            handle._emit(Failed(reason, error_type))

    def _release_memory(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def create_service(settings, recorder: Recorder | None = None, *, model_config: str | None = None) -> InProcessJobService:
    """Load the configured model and start the service around it (the only place that does both)."""
    import torch

    from core.loader import load_model

    if settings.threads:
        torch.set_num_threads(settings.threads)
    model = load_model(settings.model_spec, device=settings.device, dtype=settings.dtype, config=model_config,
                       cache_dir=settings.data_dir / "cache", max_side=settings.max_side)
    return InProcessJobService(Generator(model), recorder, queue_max=settings.queue_max,
                               queue_per_owner=settings.queue_per_owner, preview_frames=settings.preview_frames)
