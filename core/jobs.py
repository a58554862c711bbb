"""What front-ends see of the job service: owners, events, handles, results, and the
`JobService` interface, and the sentence a failed job reports. Nothing here imports torch when
imported (failure_reason does, when called), so a web UI or bot can import it freely.

A job's events arrive in this order:

    Queued(position) ... -> Started -> Progress(step, total, preview) ... ->
        Done(result) | Failed(reason) | Cancelled

A handle can be read from plain code (`handle.result()`, `handle.iter_events()`) or from
asyncio (`await handle.wait()`, `async for event in handle.events()`) without blocking the
event loop: the worker thread hands events to each loop with call_soon_threadsafe.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from core.request import GenerationRequest, ModelLimits
from core.vocabulary import ModelVocabulary

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclasses.dataclass(frozen=True)
class Owner:
    """Who asked. Fairness and per-owner limits key on (source, user_id)."""

    source: str  # "web" | "discord" | "cli"
    user_id: str
    display_name: str = ""
    guild_id: str | None = None
    channel_id: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.source, self.user_id)


# ---- events -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Queued:
    position: int  # 1 = next to run


@dataclasses.dataclass(frozen=True)
class Started:
    pass


@dataclasses.dataclass(frozen=True)
class Progress:
    step: int  # 1-based, counted over the whole job (all its images)
    total: int
    image_index: int
    preview: "Image"  # a cheap linear latent->RGB projection, a few dozen pixels a side


@dataclasses.dataclass(frozen=True)
class ImageResult:
    index: int
    seed: int
    variation_seed: int | None
    image: "Image"
    frames: list["Image"]  # a handful of preview frames, noise to picture, for the timeline
    id: str | None = None  # short image id, given by the recorder (storage)
    path: str | None = None  # PNG file written by the recorder
    sha256: str | None = None  # of the PNG file


@dataclasses.dataclass(frozen=True)
class JobResult:
    job_id: str
    generation_id: str | None
    request: GenerationRequest  # resolved: seeds and size as they ran
    images: list[ImageResult]
    fingerprint: dict[str, Any]  # model hash, library versions, device, dtype, noise source
    seconds: float


@dataclasses.dataclass(frozen=True)
class Done:
    result: JobResult


@dataclasses.dataclass(frozen=True)
class Failed:
    reason: str
    error_type: str


@dataclasses.dataclass(frozen=True)
class Cancelled:
    pass


Event = Queued | Started | Progress | Done | Failed | Cancelled
FINAL = (Done, Failed, Cancelled)


class QueueFull(RuntimeError):
    """The service will not take this job now; the message says which limit was hit."""


class LimitReached(QueueFull):
    """The owner's Quota is used up; the message says which limit, and what to do."""


@dataclasses.dataclass(frozen=True)
class Quota:
    """Per-owner limits a front-end asks `submit` to enforce (a Discord server's, say). Checking
    them and recording the job are one atomic step, so simultaneous submits cannot overshoot:
    in-process, the store counts and inserts in one database write transaction (atomic across
    processes sharing the database); a distributed service does the same in Redis."""

    max_active: int | None = None  # the owner's jobs waiting or running at once (by source and user id)
    max_per_hour: int | None = None  # jobs the owner submitted in the last hour, in the owner's guild if any

    def __bool__(self) -> bool:
        return self.max_active is not None or self.max_per_hour is not None

    def refusal(self, active: int, last_hour: int) -> str | None:
        """The sentence that refuses a job, given the owner's counts; None when it fits."""
        if self.max_active is not None and active >= self.max_active:
            return (f"You have {active} job{'s' if active != 1 else ''} waiting or running; this server allows "
                    f"{self.max_active} at once. Wait for one to finish, or `/cancel` one.")
        if self.max_per_hour is not None and last_hour >= self.max_per_hour:
            return (f"You have started {last_hour} jobs in the last hour; this server allows "
                    f"{self.max_per_hour} per hour. Try again a little later.")
        return None


class JobFailed(RuntimeError):
    def __init__(self, reason: str, error_type: str = "Error"):
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type


class JobError(RuntimeError):
    """A job failed for a reason its message already says to the person who asked (a LoRA file that
    changed after the job was queued, a picture that overflowed): the message is shown as it is.
    Any other exception is a bug or a fault, and the person gets a general sentence instead."""


class JobCancelled(RuntimeError):
    pass


# ---- the recorder: how storage hears about jobs -----------------------------------------


class Recorder(Protocol):
    """Storage's side of a job. Each call completes before the service moves on, so a job is
    recorded before it runs and its files exist before anyone is told it is done."""

    def job_queued(self, job_id: str, request: GenerationRequest, owner: Owner, parent_id: str | None,
                   kind: str, fingerprint: dict[str, Any], *, quota: Quota | None = None) -> str:
        """Record a new job (status queued); return its generation id. Raising refuses the job.
        With a `quota`, count the owner's jobs and record this one atomically, raising
        LimitReached when the quota is used up (only passed when set)."""

    def job_started(self, generation_id: str) -> None: ...

    def job_done(self, generation_id: str, result: JobResult) -> list[ImageResult]:
        """Write the image files and rows; return the images with id, path and sha256 set."""

    def job_failed(self, generation_id: str, reason: str, error_type: str) -> None: ...

    def job_cancelled(self, generation_id: str) -> None: ...


# ---- handles --------------------------------------------------------------------------------


class JobHandle:
    """A submitted job. Thread-safe; events are kept so a late reader still sees them all."""

    def __init__(self, job_id: str, request: GenerationRequest, owner: Owner, service: "JobService"):
        self.job_id = job_id
        self.request = request
        self.owner = owner
        self.generation_id: str | None = None
        self.submitted_at = time.time()
        self._service = service
        self._events: list[Event] = []
        self._cond = threading.Condition()
        self._subscribers: list[tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = []
        self.cancel_requested = threading.Event()
        self.notes: dict[str, str] = {}  # what the result says about this job's run (a cut prompt, say)

    # called by the service's worker thread
    def _emit(self, event: Event) -> None:
        with self._cond:
            if self._events and isinstance(self._events[-1], FINAL):
                return  # a job ends once
            self._events.append(event)
            subscribers = list(self._subscribers)
            self._cond.notify_all()
        for loop, queue in subscribers:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, event)
            except RuntimeError:  # that loop has closed; its reader is gone
                pass

    @property
    def done(self) -> bool:
        with self._cond:
            return bool(self._events) and isinstance(self._events[-1], FINAL)

    @property
    def final_event(self) -> Event | None:
        with self._cond:
            return self._events[-1] if self._events and isinstance(self._events[-1], FINAL) else None

    @property
    def position(self) -> int | None:
        """Current queue position (1 = next), or None once started."""
        return self._service.position(self)

    def cancel(self) -> bool:
        return self._service.cancel(self)

    # ---- plain code ----
    def iter_events(self, timeout: float | None = None) -> Iterator[Event]:
        i = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._cond:
                while i >= len(self._events):
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError(f"job {self.job_id} did not finish within {timeout} s")
                    self._cond.wait(remaining)
                event = self._events[i]
            i += 1
            yield event
            if isinstance(event, FINAL):
                return

    def result(self, timeout: float | None = None) -> JobResult:
        for event in self.iter_events(timeout):
            pass
        return _unwrap(event)

    # ---- asyncio ----
    async def events(self) -> AsyncIterator[Event]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        with self._cond:
            past = list(self._events)
            self._subscribers.append((loop, queue))
        try:
            for event in past:
                yield event
                if isinstance(event, FINAL):
                    return
            # Snapshot and subscription happened under one lock: every later event is in the queue, once.
            while True:
                event = await queue.get()
                yield event
                if isinstance(event, FINAL):
                    return
        finally:
            with self._cond:
                self._subscribers = [s for s in self._subscribers if s[1] is not queue]

    async def wait(self) -> JobResult:
        event = None
        async for event in self.events():
            pass
        return _unwrap(event)


def _unwrap(event: Event | None) -> JobResult:
    if isinstance(event, Done):
        return event.result
    if isinstance(event, Failed):
        raise JobFailed(event.reason, event.error_type)
    raise JobCancelled("the job was cancelled")


# ---- the service interface ----------------------------------------------------------------------


class JobService(abc.ABC):
    """The one owner of the model. Front-ends hold a JobService and nothing else of core."""

    @abc.abstractmethod
    def submit(self, request: GenerationRequest, owner: Owner, *, parent_id: str | None = None,
               kind: str = "generate", quota: Quota | None = None) -> JobHandle:
        """Validate, resolve, record and queue. Raises InvalidRequest or QueueFull (LimitReached when
        `quota` is used up: checked and reserved as one atomic step); nothing is queued then."""

    @abc.abstractmethod
    def cancel(self, handle: JobHandle) -> bool: ...

    @abc.abstractmethod
    def position(self, handle: JobHandle) -> int | None: ...

    @abc.abstractmethod
    def status(self) -> dict[str, Any]:
        """What runs now and what waits: {'running': [...], 'queued': n, 'per_owner': {...}}."""

    @property
    @abc.abstractmethod
    def limits(self) -> ModelLimits: ...

    @property
    @abc.abstractmethod
    def model_info(self) -> dict[str, Any]: ...

    @property
    def vocabulary(self) -> ModelVocabulary | None:
        """What the loaded model says it knows (the default model's word list); None: anything."""
        return None

    def lora_catalog(self) -> list[dict[str, Any]]:
        """The LoRA folder's files for pickers: [{"name", "trigger_words"}]; [] when none."""
        return []

    @abc.abstractmethod
    def close(self) -> None: ...


def failure_reason(exc: BaseException) -> tuple[str, str]:
    """A sentence a person can act on, and the error's type name."""
    import errno

    import torch

    from storage.db import outage

    name = type(exc).__name__
    if isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower():
        return ("The GPU ran out of memory for this job. Try fewer images, a smaller size, "
                "or wait until fewer jobs are running."), "OutOfMemory"
    if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc) or "not enough memory" in str(exc):
        # torch's CPU allocator: "DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."
        return ("This machine ran out of memory for this job. Try fewer images, a smaller size, "
                "or wait until fewer jobs are running."), "OutOfMemory"
    if (isinstance(exc, OSError) and exc.errno == errno.ENOSPC) or "database or disk is full" in str(exc):
        return ("The disk that holds Statuary's data is full, so this job's pictures could not be kept; "
                "free some space and try again."), "DiskFull"
    if outage(exc):   # the recorder could not write the result: its rows were rolled back
        return ("The database could not be reached to record this job, so its pictures were not kept; "
                "try again in a minute."), "DatabaseUnavailable"
    if isinstance(exc, JobError):
        return str(exc), name
    return UNEXPECTED, name   # the type and message are for the log (the service logs the traceback)


# What a person reads when a job fails in a way Statuary did not foresee: no exception text, which
# is for developers (and may name files on the server); the traceback is in the server's log.
UNEXPECTED = ("Something went wrong on our side while making this picture; the error is in the server's log. "
              "Try again, and if it keeps failing, tell whoever runs this Statuary.")


def keep_frame_steps(total: int, frames: int) -> set[int]:
    """Which steps (1-based) of one image's `total` to keep as timeline frames: evenly spaced, last included."""
    if frames <= 0 or total <= 0:
        return set()
    if frames >= total:
        return set(range(1, total + 1))
    return {max(1, round(total * (k + 1) / frames)) for k in range(frames)}
