"""The in-process job service: the one owner of the model.

One worker thread runs jobs; front-ends submit from any thread or event loop. The queue is
bounded (QUEUE_MAX in total, QUEUE_PER_OWNER per owner) and fair: owners take turns, so one
user's twenty jobs do not starve the next user. Every job is recorded (by the Recorder,
normally storage) before it is queued and its files are written before anyone hears "done".
An exception in a job -- out of memory included -- fails that job with a reason; the worker
goes on with the next.

Two ways to run jobs, chosen by `batch_max` (STATUARY_BATCH_MAX):

- 1 (the default, and the CPU's): one job at a time through `Generator.generate`, one image
  at a time, so every reproduction is bit-identical.
- more than 1 (a GPU): step-level batching. Every running image -- whatever its job, sampler,
  step count or guidance -- is a trajectory; each step, one UNet call advances all the
  trajectories of one group (groups take turns: one latent size, one prompt-embedding length,
  one LoRA set, so nothing is padded or switched for another request), and each trajectory's
  own scheduler takes its slice. A waiting job joins at the next step when the batch has room (owners take
  turns to fill free slots, as in the queue); a finished image leaves at once and is decoded
  between steps, a few at a time, so the others do not wait for it. Cancelling or a failure in
  one job touches that job only.
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

from core import hires, lora
from core.generator import Cancelled as _LoopCancelled
from core.batching import StepBatching
from core.generator import Generator
from core.jobs import (Cancelled, Done, Failed, ImageResult, JobHandle, JobResult, JobService, LimitReached, Owner,
                       Progress, QueueFull, Queued, Quota, Recorder, Started, UNEXPECTED, failure_reason,
                       keep_frame_steps)
from core.lora import LoraLibrary
from core.request import GenerationRequest, ModelLimits

log = logging.getLogger(__name__)
RECORD_RETRY_S = 30.0  # how often the end of a job the record could not take is tried again


class InProcessJobService(StepBatching, JobService):
    def __init__(self, generator: Generator, recorder: Recorder | None = None, *, queue_max: int = 64,
                 queue_per_owner: int = 4, preview_frames: int = 8, preview_side: int = 128,
                 batch_max: int = 1, batch_memory_mb: int = 0, decode_chunk: int = 1,
                 fingerprint_extra: dict[str, Any] | None = None, loras: "LoraLibrary | None" = None):
        if batch_max < 1 or decode_chunk < 1:
            raise ValueError("batch_max and decode_chunk must be at least 1")
        self._gen = generator
        self._recorder = recorder
        self._loras = loras  # the LoRA folder (core/lora.py); None: requests with LoRAs are refused
        generator.loras.library = loras
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
        self._running: dict[str, JobHandle] = {}  # job id -> handle, in start order
        self._running_step: dict[str, tuple[int, int]] = {}
        self._submitted: dict[tuple[str, str], collections.deque[float]] = {}  # submit times, for a Quota
        self._closed = False
        self._counter = itertools.count(1)
        # How jobs ended that the recorder could not write then (method, generation id, args); see _record.
        self._unrecorded: list[tuple[str, str, tuple]] = []
        self._unrecorded_lock = threading.Lock()      # the list and the timer; never held across a write
        self._writing_unrecorded = threading.Lock()   # one thread writes them at a time; the others go on
        self._retry_timer: threading.Timer | None = None
        self._fingerprint = generator.model.fingerprint() | dict(fingerprint_extra or {})
        # What the model folder says about the hires fix (core/hires.py); a bad hires.json stops start-up.
        self.hires_defaults = hires.HiresDefaults.load(generator.model.source)
        self.batch_max = batch_max
        self.decode_chunk = decode_chunk
        self._cap = batch_max  # images per UNet call; halved after an out-of-memory error
        self._rr = 0  # round-robin between latent sizes
        self._row_bytes_per_px = 0.0  # UNet activation bytes per batch row per latent pixel (measured, CUDA)
        self._memory_budget = 0  # bytes one UNet call may use; 0 = no cap
        if batch_max > 1:
            self._fingerprint["batching"] = f"step-level, up to {batch_max} images per UNet call"
            self._measure_memory(batch_memory_mb)
        self._worker = threading.Thread(target=self._work, name="statuary-worker", daemon=True)
        self._worker.start()

    # ---- the interface -------------------------------------------------------------------------

    @property
    def limits(self) -> ModelLimits:
        return self._gen.model.limits

    @property
    def vocabulary(self):
        return getattr(self._gen.model, "vocabulary", None)

    @property
    def model(self):
        """The loaded model (a distributed worker announces its limits and word list)."""
        return self._gen.model

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint)

    @property
    def model_info(self) -> dict[str, Any]:
        return dict(self._fingerprint, kind=self._gen.model.kind, native_size=self.limits.native_size,
                    max_side=self.limits.max_side, inpainting_unet=self._gen.model.inpainting_unet,
                    hires_helps=self.hires_defaults.helps)

    def lora_catalog(self) -> list[dict[str, Any]]:
        return self._loras.catalog() if self._loras is not None else []

    def submit(self, request: GenerationRequest, owner: Owner, *, parent_id: str | None = None,
               kind: str = "generate", quota: Quota | None = None, generation_id: str | None = None) -> JobHandle:
        """As JobService.submit. With `generation_id` the job is recorded already -- a distributed
        worker (core/distributed) claimed that row after the broker applied the limits -- so it is
        neither recorded again nor counted against the queue limits here."""
        resolved = request.resolve(self.limits)  # raises InvalidRequest: nothing queued
        # Each LoRA exists, is safetensors and fits; its sha256 recorded (a recorded job's: unchanged since).
        resolved = lora.check_request(self._loras, resolved, queued=generation_id is not None)
        notes = self._gen.prompts.notes(resolved)  # a cut prompt, chunks of a long one: said in the result
        fingerprint = dict(self._fingerprint) | notes
        with self._submit_lock:
            with self._lock:
                if self._closed:
                    raise QueueFull("The service is shutting down; try again in a moment.")
                waiting = sum(len(q) for q in self._waiting.values())
                mine = len(self._waiting.get(owner.key, ()))
                if generation_id is None and waiting >= self.queue_max:
                    raise QueueFull(f"The queue is full ({waiting} jobs waiting, the limit is {self.queue_max}). "
                                    "Try again in a minute.")
                if generation_id is None and mine >= self.queue_per_owner:
                    raise QueueFull(f"You already have {mine} jobs waiting (the limit per person is "
                                    f"{self.queue_per_owner}). Wait for one to finish or cancel one.")
                if quota and self._recorder is None:  # no record to count in: this process's own memory
                    self._reserve_locked(owner, quota)
            handle = JobHandle(f"job-{next(self._counter)}-{uuid.uuid4().hex[:8]}", resolved, owner, self)
            handle.notes = notes
            if generation_id is not None:
                handle.generation_id = generation_id
            elif self._recorder is not None:
                # With a quota, the recorder counts the owner's jobs and records this one in one
                # transaction (raising LimitReached): atomic across every process sharing the record.
                handle.generation_id = self._recorder.job_queued(handle.job_id, resolved, owner, parent_id, kind,
                                                                 fingerprint,
                                                                 **({"quota": quota} if quota else {}))
            with self._lock:
                if owner.key not in self._waiting:
                    self._waiting[owner.key] = collections.deque()
                if owner.key not in self._turns:
                    self._turns.append(owner.key)
                self._waiting[owner.key].append(handle)
                self._reposition_locked()
                self._wake.notify_all()
        return handle

    def _reserve_locked(self, owner: Owner, quota: Quota) -> None:
        """Check `quota` against this process's jobs and count this one (used without a recorder)."""
        now = time.time()
        times = self._submitted.setdefault(owner.key, collections.deque())
        while times and times[0] < now - 3600:
            times.popleft()
        active = sum(1 for h in self._running.values() if h.owner.key == owner.key) + len(
            self._waiting.get(owner.key, ()))
        refusal = quota.refusal(active, len(times))
        if refusal:
            raise LimitReached(refusal)
        times.append(now)

    def cancel(self, handle: JobHandle) -> bool:
        with self._lock:
            queue = self._waiting.get(handle.owner.key)
            if queue is not None and handle in queue:
                queue.remove(handle)
                if not queue:  # an empty queue left behind would look like work to the worker
                    del self._waiting[handle.owner.key]
                    self._turns.remove(handle.owner.key)
                self._reposition_locked()
                removed = True
            elif handle.job_id in self._running:
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
            out = [h for h in self._running.values() if h.owner.key == owner.key]
            return out + list(self._waiting.get(owner.key, ()))

    def status(self) -> dict[str, Any]:
        """'running': the longest-running job (None when idle); 'batch': every running job."""
        with self._lock:
            batch = []
            for job_id, h in self._running.items():
                step, total = self._running_step.get(job_id, (0, 0))
                batch.append({"job_id": job_id, "owner": h.owner.display_name or h.owner.user_id,
                              "source": h.owner.source, "user_id": h.owner.user_id, "guild_id": h.owner.guild_id, "prompt": h.request.prompt, "step": step, "total": total})
            return {
                "running": batch[0] if batch else None,
                "batch": batch,
                "batch_cap": self._cap,
                "queued": sum(len(q) for q in self._waiting.values()),
                "per_owner": {f"{k[0]}:{k[1]}": len(q) for k, q in self._waiting.items() if q},
            }

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs, cancel the waiting ones and the running ones (they stop within a step)."""
        with self._lock:
            self._closed = True
            pending = [h for q in self._waiting.values() for h in q]
            self._waiting.clear()
            self._turns.clear()
            running = list(self._running.values())
            self._wake.notify_all()
        for handle in pending:
            self._record("job_cancelled", handle)
            handle._emit(Cancelled())
        for handle in running:
            handle.cancel_requested.set()
        self._worker.join(timeout)
        with self._unrecorded_lock:   # what is still unwritten, the next start finds 'running' and marks interrupted
            if self._retry_timer is not None:
                self._retry_timer.cancel()

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

    def _peek_locked(self) -> JobHandle | None:
        """The job `_next_locked` would return, left in the queue."""
        for key in self._turns:
            queue = self._waiting.get(key)
            if queue:
                return queue[0]
        return None

    # ---- the worker ------------------------------------------------------------------------------------

    def _record(self, method: str, handle: JobHandle, *args) -> Any:
        if self._recorder is None or handle.generation_id is None:
            return None
        try:
            value = getattr(self._recorder, method)(handle.generation_id, *args)
        except Exception:  # the record is storage's to keep; a failure here must not kill the worker
            log.exception("recorder.%s failed for %s", method, handle.job_id)
            if method == "job_done":
                raise
            if method in ("job_failed", "job_cancelled"):   # how it ended: kept, and written when it can be
                with self._unrecorded_lock:
                    self._unrecorded.append((method, handle.generation_id, args))
                self._retry_unrecorded_later()
            return None
        if self._unrecorded:   # the record answers again: write what it missed
            self._write_unrecorded()
        return value

    def _write_unrecorded(self) -> None:
        """Write the ends of jobs the recorder could not take when they ended (the database was away),
        oldest first; what still fails waits for the next try. Without this they read 'running' until
        the next start marks them interrupted. While another thread writes them (a retry waiting on a
        slow database), this one does not wait: a job worker or a submit goes on."""
        if not self._writing_unrecorded.acquire(blocking=False):
            return
        try:
            while True:
                with self._unrecorded_lock:
                    if not self._unrecorded:
                        break
                    method, generation_id, args = self._unrecorded[0]
                try:
                    getattr(self._recorder, method)(generation_id, *args)
                except Exception as exc:  # noqa: BLE001 -- still away: try again later
                    log.warning("the record still cannot take how job %s ended (%s); trying again in %.0f s",
                                generation_id, type(exc).__name__, RECORD_RETRY_S)
                    break
                with self._unrecorded_lock:
                    self._unrecorded.pop(0)   # only the writer removes, so the first is still this one
                log.info("recorded how job %s ended, now that the record can be written", generation_id)
        finally:
            self._writing_unrecorded.release()
        if self._unrecorded:
            self._retry_unrecorded_later()

    def _retry_unrecorded_later(self) -> None:
        with self._unrecorded_lock:
            if self._closed or self._retry_timer is not None:
                return
            self._retry_timer = threading.Timer(RECORD_RETRY_S, self._retry_unrecorded_now)
            self._retry_timer.daemon = True
            self._retry_timer.start()

    def _retry_unrecorded_now(self) -> None:
        with self._unrecorded_lock:
            self._retry_timer = None
        self._write_unrecorded()

    def _work(self) -> None:
        if self.batch_max > 1:
            return self._work_batched()
        while True:
            with self._lock:
                while not self._closed and self._peek_locked() is None:
                    self._wake.wait()
                if self._closed:
                    return
                handle = self._next_locked()
                self._running[handle.job_id] = handle
                self._running_step[handle.job_id] = (0, 0)
                self._reposition_locked()
                self._positions.pop(handle.job_id, None)
            try:
                self._run(handle)
            finally:
                with self._lock:
                    self._running.pop(handle.job_id, None)
                    self._running_step.pop(handle.job_id, None)

    def _run(self, handle: JobHandle) -> None:
        started = time.monotonic()
        handle._emit(Started())
        self._record("job_started", handle)
        frames: dict[int, list] = collections.defaultdict(list)
        per_image_step: dict[int, int] = collections.defaultdict(int)

        per_image = None  # steps per image, both passes of a hires fix together

        def on_step(traj, step: int, total: int) -> None:
            nonlocal per_image
            per_image = per_image or total // handle.request.count
            preview = self._gen.preview(traj, self.preview_side)
            per_image_step[traj.index] += 1
            if per_image_step[traj.index] in keep_frame_steps(per_image, self.preview_frames):
                kept = frames[traj.index]
                # the hires pass's previews are larger: one size for the whole timeline
                kept.append(preview if not kept else preview.resize(kept[0].size, resample=3))
            with self._lock:
                self._running_step[handle.job_id] = (step, total)
            handle._emit(Progress(step, total, traj.index, preview))

        try:
            outputs = self._gen.generate(handle.request, on_step=on_step,
                                         should_cancel=handle.cancel_requested.is_set)
            self._done(handle, started, [(traj.index, image) for traj, image in outputs], frames)
        except _LoopCancelled:
            self._record("job_cancelled", handle)
            handle._emit(Cancelled())
        except Exception as exc:  # noqa: BLE001 -- any failure fails this job only
            self._fail(handle, exc)

    def _done(self, handle: JobHandle, started: float, outputs: list[tuple[int, Any]],
              frames: dict[int, list]) -> None:
        """Build the result, have the recorder write it, then say Done (raises if the recorder fails)."""
        images = []
        for index, image in sorted(outputs, key=lambda o: o[0]):
            kept = frames[index]
            if kept:  # the timeline ends on the finished picture, at preview size
                kept[-1] = image.resize(kept[-1].size, resample=3)
            images.append(ImageResult(index=index, seed=handle.request.image_seed(index),
                                      variation_seed=handle.request.image_variation_seed(index),
                                      image=image, frames=kept))
        result = JobResult(job_id=handle.job_id, generation_id=handle.generation_id, request=handle.request,
                           images=images, fingerprint=dict(self._fingerprint) | handle.notes,
                           seconds=time.monotonic() - started)
        if self._recorder is not None and handle.generation_id is not None:
            stored = self._record("job_done", handle, result)
            result = JobResult(**{**result.__dict__, "images": list(stored)})
        handle._emit(Done(result))

    def _fail(self, handle: JobHandle, exc: BaseException) -> None:
        reason, error_type = failure_reason(exc)
        if reason == UNEXPECTED:   # a bug or a fault nobody foresaw: the traceback is what fixes it
            # (what the person was told is always UNEXPECTED; a terminal's own sentence follows this line)
            log.error("job %s failed (%s: %s)", handle.job_id, type(exc).__name__, exc, exc_info=exc)
        else:   # out of memory, a full disk, the database away, a JobError: the sentence says it all
            detail = "" if str(exc) == reason else f": {exc}"
            log.warning("job %s failed (%s%s): %s", handle.job_id, type(exc).__name__, detail, reason)
            log.debug("job %s: %s", handle.job_id, "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
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
    generator = Generator(model)
    notes = generator.speed_up(attention=settings.attention, channels_last=settings.channels_last,
                               compile_unet=settings.compile)
    loras = lora.library_for(settings, model)
    return InProcessJobService(generator, recorder, queue_max=settings.queue_max,
                               queue_per_owner=settings.queue_per_owner, preview_frames=settings.preview_frames,
                               batch_max=settings.batch_max, batch_memory_mb=settings.batch_memory_mb,
                               decode_chunk=settings.decode_chunk, fingerprint_extra=notes, loras=loras)
