"""A worker's claim on a generation's row, for the distributed service (core/distributed).

Celery may deliver one job twice (a re-delivery after its visibility timeout, a sweep that
re-queued it): the claim is what makes running it idempotent. `claim` turns a row from queued
to running in one conditional UPDATE, so exactly one worker wins; the loser skips. `requeue`
gives a dead worker's job back (only if that worker still holds it), and the attempts column
counts how many times a worker started it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import select, update

from core.jobs import ImageResult, JobResult, Owner
from core.request import GenerationRequest
from storage.models import UNFINISHED, Generation, utcnow


@dataclasses.dataclass(frozen=True)
class Row:
    """What a worker or the sweep needs of a generation's row."""

    id: str
    job_id: str
    status: str
    runner: str | None
    attempts: int
    owner: Owner
    created_at: dt.datetime
    started_at: dt.datetime | None


def _row(g: Generation) -> Row:
    return Row(g.id, g.job_id, g.status, g.runner, g.attempts or 0,
               Owner(g.owner_source, g.owner_user_id, g.owner_display_name, g.owner_guild_id, g.owner_channel_id),
               g.created_at, g.started_at)


def claim(store, generation_id: str, runner: str) -> int | None:
    """Take a queued job for `runner`: returns its attempt number (1 = first run), or None when
    it is not queued (another worker has it, it finished, or it was cancelled)."""
    with store._write() as s, s.begin():
        done = s.execute(update(Generation).where(Generation.id == generation_id, Generation.status == "queued")
                         .values(status="running", runner=runner, started_at=utcnow(),
                                 attempts=Generation.attempts + 1))
        if done.rowcount != 1:
            return None
        return int(s.scalar(select(Generation.attempts).where(Generation.id == generation_id)))


def requeue(store, generation_id: str, runner: str | None) -> bool:
    """Put a running job back in the queue, if `runner` (a worker found dead) still holds it."""
    with store._write() as s, s.begin():
        cond = [Generation.id == generation_id, Generation.status == "running"]
        cond.append(Generation.runner.is_(None) if runner is None else Generation.runner == runner)
        return s.execute(update(Generation).where(*cond).values(status="queued", started_at=None,
                                                                runner=None)).rowcount == 1


def finish(store, generation_id: str, status: str, reason: str | None, error_type: str | None = None, *,
           runner: str | None = None) -> bool:
    """End an unfinished job (failed, cancelled); with `runner`, only while that worker holds it.
    False if it had ended (or was not that worker's)."""
    cond = [Generation.id == generation_id, Generation.status.in_(UNFINISHED)]
    if runner is not None:  # a worker ends only the run it holds (not one the sweep gave back)
        cond += [Generation.status == "running", Generation.runner == runner]
    with store._write() as s, s.begin():
        return s.execute(update(Generation).where(*cond)
                         .values(status=status, reason=reason, error_type=error_type,
                                 finished_at=utcnow())).rowcount == 1


def row(store, generation_id: str) -> Row | None:
    with store._read() as s:
        g = s.get(Generation, generation_id)
        return None if g is None else _row(g)


def unfinished(store) -> list[Row]:
    """Every queued or running row (the sweep's candidates)."""
    with store._read() as s:
        return [_row(g) for g in s.scalars(select(Generation).where(Generation.status.in_(UNFINISHED)))]


def load_request(store, generation_id: str) -> GenerationRequest:
    """The whole generation's request as recorded, init image and mask bytes loaded."""
    from storage.store import _request_dict

    with store._read() as s:
        g = s.get(Generation, generation_id)
        d = _request_dict(g)
    data = {k: store._input(generation_id, k, d[k]) for k in ("init_image_sha256", "mask_sha256")}
    return GenerationRequest.from_dict(d, init_image=data["init_image_sha256"], mask=data["mask_sha256"])


def result(store, generation_id: str, job_id: str, request: GenerationRequest) -> JobResult:
    """A finished job's JobResult, read back from its rows and files (what a front-end hands on
    when a worker elsewhere made the images)."""
    from PIL import Image as PILImage

    rec = store.generation(generation_id)
    images: list[ImageResult] = []
    with store._read() as s:
        g = s.get(Generation, generation_id)
        for img in g.images:
            path = store.files.path(img.file)
            with PILImage.open(path) as im:
                im.load()
                picture = im.copy()
            images.append(ImageResult(index=img.index, seed=img.seed, variation_seed=img.variation_seed,
                                      image=picture, frames=[], id=img.id, path=str(path), sha256=img.sha256))
    return JobResult(job_id=job_id, generation_id=generation_id, request=request, images=images,
                     fingerprint=dict(rec.fingerprint), seconds=float(rec.seconds or 0.0))
