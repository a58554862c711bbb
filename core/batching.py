"""Step-level batching, the in-process job service's way of running jobs when `batch_max` > 1
(a GPU): every running image is a trajectory; each step one UNet call advances all the
trajectories of one group, and each trajectory's own scheduler takes its slice. Jobs join and
leave between steps. A mixin of `core.service.InProcessJobService`, whose queue, lock,
recorder and generator it uses; see that module's docstring for the whole design.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import Any

from core import hires
from core.generator import Trajectory
from core.jobs import Cancelled, JobHandle, Progress, Started, failure_reason, keep_frame_steps
from core.lora import LoraSwitch
from core.request import GenerationRequest

log = logging.getLogger(__name__)


def _group(traj: Trajectory) -> tuple:
    """Trajectories that may share one UNet call have the same key."""
    return (tuple(traj.latents.shape[-2:]), int(traj.embeds.shape[1]), LoraSwitch.key(traj.request.loras))


@dataclasses.dataclass(eq=False)
class _Job:
    """A job in the batch: its images, how far they are, and what is finished."""

    handle: JobHandle
    started: float
    trajectories: list[Trajectory] = dataclasses.field(default_factory=list)
    total: int = 0
    step: int = 0  # image-steps done, over all its images (Progress.step)
    image_steps: dict[int, int] = dataclasses.field(default_factory=lambda: collections.defaultdict(int))
    frames: dict[int, list] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))
    images: dict[int, Any] = dataclasses.field(default_factory=dict)
    alive: bool = True


class StepBatching:
    """The batched worker loop and its pieces (`_work_batched` is the service's worker when
    batch_max > 1)."""

    def _work_batched(self) -> None:
        jobs: list[_Job] = []  # running jobs, in start order
        decodes: collections.deque[tuple[_Job, Trajectory]] = collections.deque()  # finished, not yet decoded
        while True:
            with self._lock:
                while not self._closed and not jobs and self._peek_locked() is None:
                    self._wake.wait()
                if self._closed and not jobs:
                    return
                admitted = self._admit_locked(jobs)
            for handle in admitted:
                job = self._start_job(handle)
                if job is not None:
                    jobs.append(job)

            # 1. cancellations: a job asked to stop leaves before the next step; the others go on
            for job in [j for j in jobs if j.handle.cancel_requested.is_set()]:
                self._end(job, jobs)
                self._record("job_cancelled", job.handle)
                job.handle._emit(Cancelled())

            # 2. one step for every running image of one group (groups take turns): one latent size,
            # one prompt-embedding length (long prompts have more chunks) and one LoRA set, so no
            # image is padded or sees another request's LoRA
            running = [(j, t) for j in jobs for t in j.trajectories if not t.done]
            if running:
                groups = sorted({_group(t) for _, t in running})
                key = groups[self._rr % len(groups)]
                self._rr += 1
                group = [(j, t) for j, t in running if _group(t) == key]
                for chunk in self._chunks(group):
                    self._step(chunk, jobs, decodes)

            if not running and not decodes and jobs:  # cannot happen; never spin on it if it does
                for job in list(jobs):
                    self._end(job, jobs)
                    self._fail(job.handle, RuntimeError("the batch lost track of this job's images"))

            # 3. decode a few finished images (all of them when nothing else is waiting on the GPU)
            still = any(not t.done for j in jobs if j.alive for t in j.trajectories)
            for _ in range(self.decode_chunk if still else len(decodes)):
                if not decodes:
                    break
                job, traj = decodes.popleft()
                if job.alive:
                    self._decode(job, traj, jobs)

    def _admit_locked(self, jobs: list[_Job]) -> list[JobHandle]:
        """Waiting jobs that fit in the batch now, in fair order. The job whose turn it is waits for
        room rather than being overtaken by smaller ones (that would starve big jobs); a job larger
        than the whole cap runs when the batch is empty."""
        if self._closed:
            return []
        images = sum(1 for j in jobs for t in j.trajectories if not t.done)
        cost = sum(self._cost(t.request, 1) for j in jobs for t in j.trajectories if not t.done)
        admitted = []
        while (handle := self._peek_locked()) is not None:
            n, c = handle.request.count, self._cost(handle.request, handle.request.count)
            if images and (images + n > self._cap or (self._memory_budget and cost + c > self._memory_budget)):
                break
            self._next_locked()
            images, cost = images + n, cost + c
            admitted.append(handle)
            self._running[handle.job_id] = handle
            self._running_step[handle.job_id] = (0, 0)
            self._positions.pop(handle.job_id, None)
        if admitted:
            self._reposition_locked()
        return admitted

    def _cost(self, request: GenerationRequest, count: int) -> float:
        """Estimated UNet activation bytes for `count` images of `request` (0 where not measured)."""
        m = self._gen.model
        pixels = (request.height // m.vae_scale_factor) * (request.width // m.vae_scale_factor)
        return count * (2 if request.guidance > 1.0 else 1) * pixels * self._row_bytes_per_px

    def _chunks(self, group: list[tuple[_Job, Trajectory]]) -> list[list[tuple[_Job, Trajectory]]]:
        """Split one size's images into UNet calls of at most `_cap` images and the memory budget."""
        chunks: list[list[tuple[_Job, Trajectory]]] = [[]]
        cost = 0.0
        for job, traj in group:
            c = self._cost(traj.request, 1)
            if chunks[-1] and (len(chunks[-1]) >= self._cap or (self._memory_budget and cost + c > self._memory_budget)):
                chunks.append([])
                cost = 0.0
            chunks[-1].append((job, traj))
            cost += c
        return [c for c in chunks if c]

    def _start_job(self, handle: JobHandle) -> _Job | None:
        """Started, recorded, prompts encoded and noise drawn: the job joins at the next step."""
        handle._emit(Started())
        self._record("job_started", handle)
        job = _Job(handle, time.monotonic())
        try:
            encoded = self._gen.encode(handle.request)
            job.trajectories = [self._gen.start(handle.request, k, encoded) for k in range(handle.request.count)]
        except Exception as exc:  # noqa: BLE001 -- a bad init image, say: this job only
            self._end(job, [])
            self._fail(handle, exc)
            return None
        job.total = sum(t.total for t in job.trajectories)
        if handle.request.hires is not None:  # the second pass counts in the same progress
            job.total += handle.request.count * hires.pass_steps(handle.request.hires, handle.request.steps)
        return job

    def _step(self, chunk: list[tuple[_Job, Trajectory]], jobs: list[_Job],
              decodes: collections.deque[tuple[_Job, Trajectory]]) -> None:
        """One UNet call for `chunk`, then each image's scheduler step, previews and progress."""
        chunk = [(j, t) for j, t in chunk if j.alive]
        if not chunk:
            return
        try:
            failed = self._gen.denoise_step([t for _, t in chunk], isolate=True)
        except Exception as exc:  # noqa: BLE001 -- the shared UNet call failed; no image has moved yet
            if len({id(j) for j, _ in chunk}) == 1:
                self._end(chunk[0][0], jobs)  # it is this job's own images: fail it
                self._fail(chunk[0][0].handle, exc)
                return
            # Several jobs shared the call. Out of memory: halve the cap for good (the estimate was
            # too hopeful for this device) and retry the step in halves. Another error: retry in
            # halves this once, so only the job that causes it fails. No job fails for sharing.
            if failure_reason(exc)[1] == "OutOfMemory":
                self._cap = max(1, len(chunk) // 2)
                log.warning("out of memory with %d images in one UNet call; the batch cap is now %d",
                            len(chunk), self._cap)
                self._release_memory()
            half = len(chunk) // 2
            self._step(chunk[:half], jobs, decodes)
            self._step(chunk[half:], jobs, decodes)
            return
        bad = {id(t) for t, _ in failed}
        for traj, exc in failed:  # a scheduler step failed: that job only
            job = next(j for j, t in chunk if t is traj)
            if job.alive:
                self._end(job, jobs)
                self._fail(job.handle, exc)
        moved = [(j, t) for j, t in chunk if j.alive and id(t) not in bad]
        previews = self._gen.previews([t for _, t in moved], self.preview_side)
        for (job, traj), preview in zip(moved, previews):
            job.step += 1
            job.image_steps[traj.index] += 1
            if job.image_steps[traj.index] in keep_frame_steps(job.total // len(job.trajectories),
                                                               self.preview_frames):
                kept = job.frames[traj.index]
                kept.append(preview if not kept else preview.resize(kept[0].size, resample=3))
            with self._lock:
                self._running_step[job.handle.job_id] = (job.step, job.total)
            job.handle._emit(Progress(job.step, job.total, traj.index, preview))
            if traj.done:
                decodes.append((job, traj))

    def _decode(self, job: _Job, traj: Trajectory, jobs: list[_Job]) -> None:
        try:
            image = self._gen.decode(traj)
            if traj.request.hires is not None:  # first pass of a hires fix: the larger pass joins the batch
                second = hires.second_pass(self._gen, traj, image)
                job.trajectories[job.trajectories.index(traj)] = second
                return
            job.images[traj.index] = image
            if len(job.images) == len(job.trajectories):
                self._end(job, jobs)
                self._done(job.handle, job.started, list(job.images.items()), job.frames)
        except Exception as exc:  # noqa: BLE001 -- the VAE or the recorder: this job only
            self._end(job, jobs)
            self._fail(job.handle, exc)

    def _end(self, job: _Job, jobs: list[_Job]) -> None:
        """The job leaves the batch (its images free their slots at once)."""
        job.alive = False
        if job in jobs:
            jobs.remove(job)
        with self._lock:
            self._running.pop(job.handle.job_id, None)
            self._running_step.pop(job.handle.job_id, None)
            self._wake.notify_all()

    def _measure_memory(self, budget_mb: int) -> None:
        """On CUDA: measure what one more batch row costs the UNet at the native size, and set the
        memory budget (STATUARY_BATCH_MEMORY_MB, or 80% of what is free after a VAE decode's peak)."""
        import torch

        m = self._gen.model
        if m.device.type != "cuda":
            return  # no cap on the CPU (and nothing to measure it with)
        side = m.limits.native_size // m.vae_scale_factor
        unet = m.unet
        cross = int(unet.config.cross_attention_dim)
        peaks = []
        with torch.no_grad():
            for rows in (1, 2):
                torch.cuda.synchronize(m.device)
                torch.cuda.reset_peak_memory_stats(m.device)
                base = torch.cuda.memory_allocated(m.device)
                x = torch.zeros(rows, int(unet.config.in_channels), side, side, device=m.device, dtype=m.dtype)
                ts = torch.full((rows,), 500, device=m.device)
                emb = torch.zeros(rows, 77, cross, device=m.device, dtype=m.dtype)
                added = None
                if m.kind == "sdxl":
                    pooled = int(getattr(m.pipeline.text_encoder_2.config, "projection_dim", 1280))
                    added = {"text_embeds": torch.zeros(rows, pooled, device=m.device, dtype=m.dtype),
                             "time_ids": torch.zeros(rows, 6, device=m.device, dtype=m.dtype)}
                unet(x, ts, encoder_hidden_states=emb, added_cond_kwargs=added, return_dict=False)
                torch.cuda.synchronize(m.device)
                peaks.append(torch.cuda.max_memory_allocated(m.device) - base)
                del x, emb, added
        per_row = max(peaks[1] - peaks[0], peaks[0] / 2, 1)
        self._row_bytes_per_px = per_row / (side * side)
        if budget_mb:
            self._memory_budget = budget_mb * 2**20
        else:
            # Leave room for one VAE decode at the native size (decodes run between steps).
            torch.cuda.reset_peak_memory_stats(m.device)
            base = torch.cuda.memory_allocated(m.device)
            with torch.no_grad():
                m.vae.decode(torch.zeros(1, m.latent_channels, side, side, device=m.device, dtype=m.vae_dtype))
            torch.cuda.synchronize(m.device)
            decode_peak = torch.cuda.max_memory_allocated(m.device) - base
            torch.cuda.empty_cache()
            free, _ = torch.cuda.mem_get_info(m.device)
            self._memory_budget = max(int(0.8 * free - decode_peak), int(per_row))
        log.info("batching: %.0f MiB per UNet row at %d px, budget %.0f MiB (about %d rows)", per_row / 2**20,
                 m.limits.native_size, self._memory_budget / 2**20, self._memory_budget // per_row)
        torch.cuda.empty_cache()
