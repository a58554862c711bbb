"""The Store: every generation recorded, reproducible and variable by its image's short id.

It is the job service's Recorder (job_queued -> job_started -> job_done | job_failed |
job_cancelled, each called from the service's worker thread and finished before the
service moves on) and the one place front-ends read history, reproduce, vary, verify and
delete. Files are written before the rows that name them are committed; rows are the truth,
an image file no row names is only wasted space.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

import core
from core.jobs import ImageResult, JobHandle, JobResult, JobService, LimitReached, Owner, Quota
from core.hires import Hires
from core.request import PROMPT_MAX_CHARS, Described, FieldError, GenerationRequest, InvalidRequest
from storage import db, ids, pngmeta
from storage.records import (REQUEST_FIELDS, GenerationRecord, ImageRecord, NotFound, NotYours, Page, Superseded,
                             VerifyResult, canonical_request, model_name)
from storage.runners import runner_alive, runner_token
from storage.files import (KINDS, FileStore, atomic_write, decode_frames, encode_gif, encode_timeline, image_extension,
                           remove_stale_temp_files)
from storage.models import STATUSES, UNFINISHED, DeletedId, Generation, Image, utcnow
from storage.pngmeta import BadMetadata

PARENT_CHAIN_MAX = 100
ENDED_UNDONE = ("failed", "interrupted", "cancelled")  # jobs that ended without images
QUERY_MAX_CHARS = PROMPT_MAX_CHARS   # a history search: as long as the longest prompt
PAGE_MAX = 1_000_000  # history pages: beyond it an offset overflows the database's integers long before any data
FOREIGN_JOB_STALE_AFTER = dt.timedelta(hours=6)
# A file no row names is removed at start-up only when older than this: younger, it may belong
# to a job another process (web UI, CLI, bot sharing the data dir) is about to commit.
ORPHAN_MIN_AGE = dt.timedelta(hours=1)

log = logging.getLogger(__name__)


class Store:
    """Generations, images and their files. Thread-safe; several processes may share one database."""

    def __init__(self, engine: Engine, data_dir: Path, png_metadata: bool = True):
        self.engine = engine
        self.data_dir = Path(data_dir)
        self.files = FileStore(self.data_dir)
        self.png_metadata = png_metadata
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(db.writer(engine), expire_on_commit=False)
        self._runner = runner_token()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- Recorder --------------------------------------------------------------------------

    def job_queued(self, job_id: str, request: GenerationRequest, owner: Owner, parent_id: str | None,
                   kind: str, fingerprint: dict[str, Any], *, quota: Quota | None = None) -> str:
        if None in (request.seed, request.width, request.height, request.sampler, request.guidance):
            raise ValueError("job_queued needs a resolved request (seed, size, sampler and guidance decided)")
        with self._write() as s:
            if parent_id is not None:
                parent_id = self._image(s, parent_id).id  # refuses the job when the parent is gone
        # The uploaded bytes as given: their sha256 is what the request names.
        inputs = [(data, *self.files.put("inputs", data, image_extension(data)))
                  for data in (request.init_image, request.mask) if data is not None]
        fp = dict(fingerprint or {})
        for _ in range(5):
            gid = ids.new_generation_id()
            row = Generation(
                id=gid, job_id=str(job_id), kind=kind, status="queued", created_at=utcnow(), runner=self._runner,
                owner_source=owner.source, owner_user_id=str(owner.user_id), owner_display_name=owner.display_name or "",
                owner_guild_id=owner.guild_id, owner_channel_id=owner.channel_id, parent_id=parent_id,
                model_id=str(fp.get("model_id", "")), model_sha256=str(fp.get("model_sha256", "")),
                software_version=_software_version(fp), noise_source=_noise_source(fp), fingerprint=fp,
                **canonical_request(request.to_dict()))
            try:
                with self._write() as s, s.begin():
                    if quota:
                        self._reserve(s, owner, quota)  # counted and recorded in one transaction
                    for key in sorted({sha for _data, sha, _rel in inputs}):
                        self._lock_content(s, key)
                    s.add(row)
            except IntegrityError:  # a 1-in-10^17 id clash: draw again
                continue
            # A delete or the orphan sweep may have removed an identical input meanwhile: put it back.
            for data, _sha, rel in inputs:
                if not self.files.path(rel).exists():
                    atomic_write(self.files.path(rel), data)
            return gid
        raise RuntimeError("could not find a free generation id")

    def _reserve(self, s: Session, owner: Owner, quota: Quota) -> None:
        """Raise LimitReached when `owner` has used up `quota`. Called inside the write transaction
        that records the job, so the count and the new row are one atomic step: SQLite's BEGIN
        IMMEDIATE serialises every writer, and PostgreSQL takes an advisory lock per owner."""
        if s.get_bind().dialect.name == "postgresql":
            key = int(hashlib.sha256(f"quota:{owner.source}:{owner.user_id}".encode()).hexdigest()[:15], 16)
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        mine = [Generation.owner_source == owner.source, Generation.owner_user_id == str(owner.user_id)]
        active = 0
        if quota.max_active is not None:
            active = s.scalar(select(func.count(Generation.id)).where(*mine, Generation.status.in_(UNFINISHED))) or 0
        last_hour = 0
        if quota.max_per_hour is not None:
            cond = mine + [Generation.created_at >= utcnow() - dt.timedelta(hours=1)]
            if owner.guild_id is not None:
                cond.append(Generation.owner_guild_id == owner.guild_id)
            last_hour = s.scalar(select(func.count(Generation.id)).where(*cond)) or 0
        refusal = quota.refusal(active, last_hour)
        if refusal:
            raise LimitReached(refusal)

    def job_started(self, generation_id: str) -> None:
        with self._write() as s, s.begin():
            s.execute(update(Generation).where(Generation.id == generation_id, Generation.status == "queued")
                      .values(status="running", started_at=utcnow(), runner=self._runner))

    def job_done(self, generation_id: str, result: JobResult, *, runner: str | None = None) -> list[ImageResult]:
        """With `runner` (a distributed worker's claim), the rows are written only while that runner
        still holds the job, in the same transaction: a job is recorded once whoever ran it."""
        with self._read() as s:
            gen = s.get(Generation, generation_id)
            if gen is None:
                raise NotFound(f"no generation {generation_id!r} was recorded", generation_id)
        fp = dict(result.fingerprint or gen.fingerprint)
        model_sha = str(fp.get("model_sha256") or gen.model_sha256)
        name = model_name(str(fp.get("model_id") or gen.model_id))
        version = _software_version(fp)

        # 1. Files first (atomic, content-addressed): a crash now leaves no row pointing at a partial file.
        written = []
        for img in result.images:
            rec = canonical_request(result.request.image_request(img.index).to_dict())
            if self.png_metadata:
                png = pngmeta.encode_png(img.image, pngmeta.recipe(rec, model_sha, name, version),
                                         pngmeta.a1111_parameters(rec, model_sha, name))
            else:
                png = pngmeta.encode_png(img.image, None, None)
            sha, rel = self.files.put("images", png, "png")
            timeline = encode_timeline(list(img.frames or []))
            tsha = self.files.put("timelines", timeline, "webp")[0] if timeline else None
            written.append((img, sha, rel, len(png), png, tsha, timeline))

        # 2. Rows, in one transaction.
        now = utcnow()
        for _ in range(5):
            try:
                with self._write() as s, s.begin():
                    gen = s.get(Generation, generation_id)
                    if runner is not None and (gen is None or gen.status != "running" or gen.runner != runner):
                        raise Superseded(f"generation {generation_id} is no longer this worker's to record")
                    for key in sorted({w[1] for w in written} | {w[5] for w in written if w[5]}):  # one order: no deadlock
                        self._lock_content(s, key)
                    image_ids = self._free_image_ids(s, len(written))
                    for (img, sha, rel, size, _png, tsha, _t), iid in zip(written, image_ids):
                        s.add(Image(id=iid, generation_id=generation_id, index=img.index, seed=img.seed,
                                    variation_seed=img.variation_seed, file=rel, sha256=sha, bytes=size,
                                    width=img.image.width, height=img.image.height, timeline_sha256=tsha,
                                    created_at=now))
                    for k, v in canonical_request(result.request.to_dict()).items():
                        setattr(gen, k, v)  # what ran: the same as queued, unless the service resolved more
                    gen.status, gen.finished_at, gen.seconds = "done", now, float(result.seconds)
                    gen.reason = gen.error_type = None
                    gen.fingerprint = fp
                    gen.model_id, gen.model_sha256 = str(fp.get("model_id") or gen.model_id), model_sha
                    gen.noise_source = _noise_source(fp) or gen.noise_source
                    gen.software_version = version
                break
            except IntegrityError:
                continue
        else:
            raise RuntimeError("could not find free image ids")

        # 3. A delete of an identical image may have removed the shared file meanwhile: put it back.
        for _img, sha, rel, _size, png, tsha, timeline in written:
            if not self.files.path(rel).exists():
                atomic_write(self.files.path(rel), png)
            if tsha and self.files.find("timelines", tsha) is None:
                self.files.put("timelines", timeline, "webp")
        return [dataclasses.replace(img, id=iid, path=str(self.files.path(rel)), sha256=sha)
                for (img, sha, rel, *_), iid in zip(written, image_ids)]

    def job_failed(self, generation_id: str, reason: str, error_type: str) -> None:
        self._finish(generation_id, "failed", reason, error_type)

    def job_cancelled(self, generation_id: str) -> None:
        self._finish(generation_id, "cancelled", "cancelled before it finished", None)

    def _finish(self, generation_id: str, status: str, reason: str, error_type: str | None) -> None:
        with self._write() as s, s.begin():
            s.execute(update(Generation).where(Generation.id == generation_id, Generation.status.in_(UNFINISHED))
                      .values(status=status, reason=reason, error_type=error_type, finished_at=utcnow()))

    def mark_interrupted(self) -> list[str]:
        """Rows left queued or running by a process that is gone become 'interrupted'. Returns their ids."""
        with self._read() as s:
            rows = s.execute(select(Generation.id, Generation.status, Generation.runner, Generation.created_at)
                             .where(Generation.status.in_(UNFINISHED))).all()
        # Another machine's job (or a recreated container's: a new hostname) is ended only when
        # it is far older than any job runs.
        too_old = utcnow() - FOREIGN_JOB_STALE_AFTER
        dead = [r for r in rows if not runner_alive(r.runner) or r.created_at < too_old]
        now = utcnow()
        with self._write() as s, s.begin():
            for r in dead:
                s.execute(update(Generation).where(Generation.id == r.id, Generation.status.in_(UNFINISHED)).values(
                    status="interrupted", finished_at=now,
                    reason=f"the process running it stopped while it was {r.status} (found at start-up)"))
        return [r.id for r in dead]

    def remove_orphan_files(self, min_age: dt.timedelta = ORPHAN_MIN_AGE) -> int:
        """Delete content files (images/, inputs/, timelines/) that no row names: what a crash
        between writing a file and committing its row leaves. Only files last written more than
        `min_age` ago (by mtime; reusing content refreshes it): a younger one may be the file of
        a job another process is committing right now. Returns how many were removed."""
        cutoff = time.time() - min_age.total_seconds()
        old = [(kind, digest, path) for kind, digest, path in self.files.contents() if _mtime(path) < cutoff]
        if not old:
            return 0
        with self._read() as s:
            used = {
                "images": set(s.scalars(select(Image.sha256).distinct())),
                "timelines": set(s.scalars(select(Image.timeline_sha256).distinct()
                                           .where(Image.timeline_sha256.is_not(None)))),
                "inputs": {d for row in s.execute(select(Generation.init_image_sha256, Generation.mask_sha256)
                                                  .where(or_(Generation.init_image_sha256.is_not(None),
                                                             Generation.mask_sha256.is_not(None)))) for d in row if d},
            }
        removed = 0
        for kind, digest, path in old:
            if digest in used[kind]:
                continue
            # Check again under the content's lock: a job may have committed a row naming it since.
            with self._write() as s, s.begin():
                self._lock_content(s, digest)
                if self._uses(s, kind, digest) or _mtime(path) >= cutoff:
                    continue
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed += 1
                if kind == "timelines":
                    (self.data_dir / "cache" / "timelines" / f"{digest}.gif").unlink(missing_ok=True)
        return removed

    # ---- reading ------------------------------------------------------------------------

    def get(self, image_id: str) -> ImageRecord:
        with self._read() as s:
            return self._record(s, self._image(s, image_id))

    def generation(self, generation_id: str) -> GenerationRecord:
        with self._read() as s:
            g = s.get(Generation, str(generation_id).strip().lower())
            if g is None:
                raise NotFound(f"no generation with id '{ids.shown(generation_id)}'", str(generation_id)[:ids.SHOWN_MAX])
            return _generation_record(g)

    def history(self, owner: Owner | str | None = None, query: str | None = None, page: int = 1,
                per_page: int = 20, include_verify: bool = False) -> Page:
        """Images newest first, optionally one owner's and/or those whose prompt has every word of `query`.

        `owner` is an Owner, or text: a user id, a display name, or 'source:user_id'."""
        if not 1 <= page <= PAGE_MAX:
            raise ValueError(str(FieldError("page", page, f"use a whole number from 1 to {PAGE_MAX}")))
        if not 1 <= per_page <= 500:
            raise ValueError(str(FieldError("per_page", per_page, "use a whole number from 1 to 500")))
        _check_query(query)
        cond = [Generation.status == "done"] + _conditions(owner, query, include_verify)
        with self._read() as s:
            total = s.scalar(select(func.count(Image.id)).join(Image.generation).where(*cond)) or 0
            rows = s.scalars(select(Image).join(Image.generation).where(*cond)
                             .order_by(Generation.created_at.desc(), Generation.id, Image.index)
                             .offset((page - 1) * per_page).limit(per_page)).all()
            return Page([self._record(s, r) for r in rows], total, page, per_page)

    def was_deleted(self, image_id: str) -> bool:
        """Whether `image_id` names an image that was deleted (its id stays taken)."""
        iid = ids.normalize(image_id)
        with self._read() as s:
            return iid is not None and s.get(DeletedId, iid) is not None

    def jobs(self, statuses: tuple[str, ...] = ENDED_UNDONE, owner: Owner | str | None = None,
             query: str | None = None, page: int = 1, per_page: int = 20) -> Page:
        """Jobs (GenerationRecords, newest first) in one of `statuses` -- by default those that ended
        without images: failed, interrupted, cancelled, each with its reason. Filters as history()."""
        unknown = set(statuses) - set(STATUSES)
        if unknown or not statuses:
            raise ValueError(str(FieldError("status", ", ".join(sorted(unknown)) or "nothing",
                                            "use one of " + ", ".join(STATUSES))))
        if not 1 <= page <= PAGE_MAX:
            raise ValueError(str(FieldError("page", page, f"use a whole number from 1 to {PAGE_MAX}")))
        _check_query(query)
        cond = [Generation.status.in_(statuses)] + _conditions(owner, query, include_verify=True)
        with self._read() as s:
            total = s.scalar(select(func.count(Generation.id)).where(*cond)) or 0
            rows = s.scalars(select(Generation).where(*cond).order_by(Generation.created_at.desc(), Generation.id)
                             .offset((page - 1) * per_page).limit(per_page)).all()
            return Page([_generation_record(g) for g in rows], total, page, per_page)

    def request_for(self, image_id: str) -> GenerationRequest:
        """The request that makes exactly this image again, init image and mask bytes loaded."""
        with self._read() as s:
            img = self._image(s, image_id)
            d = _request_dict(img.generation)
            index = img.index
        data = {k: self._input(img.id, k, d[k]) for k in ("init_image_sha256", "mask_sha256")}
        req = GenerationRequest.from_dict(d, init_image=data["init_image_sha256"], mask=data["mask_sha256"])
        return req.image_request(index)

    def _input(self, image_id: str, field: str, digest: str | None) -> bytes | None:
        if not digest:
            return None
        path = self.files.find("inputs", digest)
        if path is None:
            raise NotFound(f"image {image_id}: its {field.removesuffix('_sha256').replace('_', ' ')} "
                           f"(sha256 {digest[:12]}...) is missing from {self.data_dir / 'inputs'}", image_id)
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise BadMetadata(f"{path}: this stored input was changed on disk (its sha256 no longer matches its name)")
        return data

    def frames(self, image_id: str) -> list[Any]:
        """The denoising timeline's preview frames (PIL images, noise to picture); [] if none were kept."""
        rec = self.get(image_id)
        with self._read() as s:
            tsha = s.get(Image, rec.id).timeline_sha256
        if not tsha:
            return []
        path = self.files.find("timelines", tsha)
        if path is None:
            raise NotFound(f"image {rec.id}: its timeline file is missing from {self.data_dir / 'timelines'}", rec.id)
        return decode_frames(path.read_bytes())

    def timeline_file(self, image_id: str, fmt: str = "webp") -> Path:
        """The denoising timeline as an animated file (noise to picture), for download or Discord.
        WebP is the stored file; GIF is made on first request and cached under DATA_DIR/cache/."""
        if fmt not in ("webp", "gif"):
            raise ValueError(f"timeline format {fmt!r} is not offered; use 'webp' or 'gif'")
        rec = self.get(image_id)
        with self._read() as s:
            tsha = s.get(Image, rec.id).timeline_sha256
        path = self.files.find("timelines", tsha) if tsha else None
        if path is None:
            raise NotFound(f"image {rec.id} has no denoising timeline"
                           + (" file" if tsha else " (STATUARY_PREVIEW_FRAMES was 0)"), rec.id)
        if fmt == "webp":
            return path
        out = self.data_dir / "cache" / "timelines" / f"{tsha}.gif"
        if not out.exists():
            atomic_write(out, encode_gif(decode_frames(path.read_bytes())))
        return out

    # ---- operations every front-end offers --------------------------------------------------

    def reproduce(self, image_id: str, service: JobService, owner: Owner, *, quota: Quota | None = None) -> JobHandle:
        """Run the image's own request again; the new generation's parent is that image."""
        request = self.request_for(image_id)
        return service.submit(request, owner, parent_id=ids.normalize(image_id), kind="reproduce", quota=quota)

    def vary(self, image_id: str, service: JobService, owner: Owner, strength: float,
             variation_seed: int | None = None, count: int = 1, *, quota: Quota | None = None) -> JobHandle:
        """Variations of the image: its seed, mixed with `variation_seed` (random when None) at
        `strength` (0 = the image again, 1 = a new picture). A batch of `count` uses
        variation_seed, +1, +2, ... . Varying an image that is itself a variation builds on it:
        its variations so far stay in the request's variation_chain, so strength 0 gives exactly
        that image."""
        request = self.request_for(image_id).varied(strength, variation_seed, count)
        return service.submit(request, owner, parent_id=ids.normalize(image_id), kind="vary", quota=quota)

    def upscale(self, image_id: str, service: JobService, owner: Owner, hires: Hires | None = None, *,
                quota: Quota | None = None) -> JobHandle:
        """The image again through the hires fix (`hires`, default: the model's): its own recipe,
        whose first pass is that very picture, then repainted larger. An image that already had
        the hires fix is refused (its recipe would make the same picture again)."""
        request = self.request_for(image_id)
        if request.hires is not None:
            raise InvalidRequest([FieldError("image", ids.normalize(image_id), "it was made with the hires fix "
                                             "already; upscale the image it was made from instead")])
        if hires is None:
            hires = getattr(service, "hires_defaults", None)
            hires = hires.hires if hires is not None else Hires()
        request = dataclasses.replace(request, hires=hires)
        return service.submit(request, owner, parent_id=ids.normalize(image_id), kind="upscale", quota=quota)

    def verify(self, image_id: str, service: JobService, owner: Owner | None = None,
               timeout: float | None = None) -> VerifyResult:
        """Make the image again and compare: 'exact' when every pixel matches, else 'drifted',
        with the largest pixel difference and the fingerprint fields that changed since."""
        import numpy as np
        from PIL import Image as PILImage

        original = self.get(image_id)
        request = self.request_for(original.id)
        owner = owner or Owner("cli", "verify", "verify")
        result = service.submit(request, owner, parent_id=original.id, kind="verify").result(timeout)
        new = result.images[0]
        with PILImage.open(original.path) as im:
            before = np.asarray(im.convert("RGB"), dtype=np.int16)
        after = np.asarray(new.image.convert("RGB"), dtype=np.int16)
        diff = 255 if before.shape != after.shape else int(np.abs(before - after).max(initial=0))
        old_fp, new_fp = original.fingerprint, dict(result.fingerprint)
        changed = {k: (old_fp.get(k), new_fp.get(k)) for k in sorted(set(old_fp) | set(new_fp))
                   if old_fp.get(k) != new_fp.get(k)}
        # A LoRA file changed since (same name, other content): its sha256 then and now.
        then = {str(e[0]).lower(): e[2] if len(e) > 2 else None for e in original.request.get("loras") or []}
        for entry in result.request.loras:
            if len(entry) > 2 and then.get(str(entry[0]).lower()) != entry[2]:
                changed[f"lora {entry[0]} sha256"] = (then.get(str(entry[0]).lower()), entry[2])
        return VerifyResult(original.id, "exact" if diff == 0 else "drifted", diff, changed, new.id,
                            new.sha256 == original.sha256)

    def delete(self, image_id: str, owner: Owner) -> None:
        """Delete one of `owner`'s images: its row, and its files when no other image uses them.
        The id stays taken; asking for it afterwards says it was deleted."""
        with self._write() as s, s.begin():
            img = self._image(s, image_id)
            gen = img.generation
            if (gen.owner_source, gen.owner_user_id) != owner.key:
                who = gen.owner_display_name or gen.owner_user_id
                raise NotYours(f"image {img.id} belongs to {who} ({gen.owner_source}); you can delete only your own images")
            garbage = [("images", img.sha256)] + ([("timelines", img.timeline_sha256)] if img.timeline_sha256 else [])
            s.delete(img)
            s.add(DeletedId(id=img.id, deleted_at=utcnow()))
            s.flush()
            if not s.scalar(select(func.count(Image.id)).where(Image.generation_id == gen.id)):
                garbage += [("inputs", d) for d in (gen.init_image_sha256, gen.mask_sha256) if d]
                s.delete(gen)
        for kind, digest in garbage:
            self._collect(kind, digest)

    # ---- internals ---------------------------------------------------------------------------

    def _image(self, s: Session, image_id: str) -> Image:
        iid = ids.normalize(image_id)
        if iid is None:
            raise NotFound(f"'{ids.shown(image_id)}' is not an image id: ids are {ids.LENGTH} characters of "
                           f"{ids.ALPHABET}", str(image_id)[:ids.SHOWN_MAX])
        img = s.get(Image, iid)
        if img is None:
            if s.get(DeletedId, iid) is not None:
                raise NotFound(f"image {iid} was deleted", iid)
            raise NotFound(f"no image with id {iid}", iid)
        return img

    def _record(self, s: Session, img: Image) -> ImageRecord:
        g = img.generation
        request = _request_dict(g)
        image_request = canonical_request(pngmeta.request_without_images(request).image_request(img.index).to_dict())
        image_request.update(init_image_sha256=request["init_image_sha256"], mask_sha256=request["mask_sha256"])
        chain: list[str] = []
        parent = g.parent_id
        while parent and len(chain) < PARENT_CHAIN_MAX and parent not in chain:
            chain.append(parent)
            row = s.get(Image, parent)
            parent = row.generation.parent_id if row is not None else None
        return ImageRecord(
            id=img.id, index=img.index, seed=img.seed, variation_seed=img.variation_seed,
            path=self.files.path(img.file), sha256=img.sha256, bytes=img.bytes, width=img.width, height=img.height,
            request=request, image_request=image_request, owner=_owner(g), kind=g.kind, status=g.status,
            parent_id=g.parent_id, parent_chain=tuple(chain), fingerprint=dict(g.fingerprint), generation_id=g.id,
            image_ids=tuple(i.id for i in g.images), image_paths=tuple(self.files.path(i.file) for i in g.images),
            has_timeline=bool(img.timeline_sha256), created=g.created_at, started_at=g.started_at,
            finished_at=g.finished_at)

    def _free_image_ids(self, s: Session, n: int) -> list[str]:
        out: list[str] = []
        while len(out) < n:
            cand = ids.new_id()
            if cand in out or s.get(Image, cand) is not None or s.get(DeletedId, cand) is not None:
                continue
            out.append(cand)
        return out

    def _lock_content(self, s: Session, digest: str) -> None:
        """Serialise 'is this file still used?' against 'a new row uses this file' for one content hash.
        SQLite's BEGIN IMMEDIATE already serialises every writer; PostgreSQL takes an advisory lock."""
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": int(digest[:15], 16)})

    @staticmethod
    def _uses(s: Session, kind: str, digest: str) -> int:
        """How many rows name this content file."""
        assert kind in KINDS, kind
        if kind == "images":
            return s.scalar(select(func.count()).where(Image.sha256 == digest)) or 0
        if kind == "timelines":
            return s.scalar(select(func.count()).where(Image.timeline_sha256 == digest)) or 0
        return s.scalar(select(func.count()).where(
            or_(Generation.init_image_sha256 == digest, Generation.mask_sha256 == digest))) or 0

    def _collect(self, kind: str, digest: str) -> None:
        """Remove a content file if no row uses it any more."""
        with self._write() as s, s.begin():
            self._lock_content(s, digest)
            if not self._uses(s, kind, digest):
                self.files.remove(kind, digest)
                if kind == "timelines":
                    (self.data_dir / "cache" / "timelines" / f"{digest}.gif").unlink(missing_ok=True)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")  # gone already: nothing to remove


def _software_version(fp: dict[str, Any]) -> str:
    # core's fingerprint names the software version "statuary"
    return str(fp.get("statuary") or fp.get("software_version") or core.__version__)


def _noise_source(fp: dict[str, Any]) -> str:
    return str(fp.get("noise") or fp.get("noise_source") or "")


def _request_dict(g: Generation) -> dict[str, Any]:
    return canonical_request({k: getattr(g, k) for k in REQUEST_FIELDS})


def _generation_record(g: Generation) -> GenerationRecord:
    return GenerationRecord(
        id=g.id, job_id=g.job_id, kind=g.kind, status=g.status, reason=g.reason, error_type=g.error_type,
        request=_request_dict(g), owner=_owner(g), parent_id=g.parent_id, fingerprint=dict(g.fingerprint),
        image_ids=tuple(i.id for i in g.images), created=g.created_at, started_at=g.started_at,
        finished_at=g.finished_at, seconds=g.seconds)


def _check_query(query: str | None) -> None:
    """A search no longer than the longest prompt (SQLite refuses a LIKE pattern past 50,000
    characters with an OperationalError, which would read as the database being away)."""
    if query and len(query) > QUERY_MAX_CHARS:
        raise InvalidRequest([FieldError("query", Described(f"a text of {len(query)} characters"),
                                         f"use at most {QUERY_MAX_CHARS} characters")])


def _conditions(owner: Owner | str | None, query: str | None, include_verify: bool) -> list[Any]:
    """history()'s and jobs()' filters: one owner's, prompts with every word of `query`, no verify runs."""
    cond: list[Any] = []
    if not include_verify:
        cond.append(Generation.kind != "verify")
    if isinstance(owner, Owner):
        cond += [Generation.owner_source == owner.source, Generation.owner_user_id == str(owner.user_id)]
    elif owner:
        src, sep, uid = owner.partition(":")
        alts = [Generation.owner_user_id == owner, Generation.owner_display_name == owner]
        if sep:
            alts.append((Generation.owner_source == src) & (Generation.owner_user_id == uid))
        cond.append(or_(*alts))
    for word in (query or "").split():
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        cond.append(Generation.prompt.ilike(f"%{escaped}%", escape="\\"))
    return cond


def _owner(g: Generation) -> Owner:
    return Owner(source=g.owner_source, user_id=g.owner_user_id, display_name=g.owner_display_name,
                 guild_id=g.owner_guild_id, channel_id=g.owner_channel_id)


def open_store(settings: Any) -> Store:
    """The store for these settings: data dir created, database migrated to the newest schema,
    jobs a crash left queued or running marked interrupted, and what a crash left on disk swept:
    a dead writer's temp files, and content files no row names that are over ORPHAN_MIN_AGE old."""
    data_dir = Path(settings.data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise db.StoreUnavailable(f"The data folder {data_dir} cannot be created ({exc.strerror or exc}); set "
                                  "STATUARY_DATA_DIR to a folder this user can write.") from None
    engine = db.open_database(settings.database_url)
    store = Store(engine, data_dir, png_metadata=settings.png_metadata)
    if not getattr(settings, "broker_url", ""):
        # With a broker, workers on other machines run the jobs: a dead worker's job is run again
        # by the workers' sweep (core/distributed/sweep.py), not declared interrupted here.
        store.mark_interrupted()
    remove_stale_temp_files(data_dir)
    orphans = store.remove_orphan_files()
    if orphans:
        log.info("removed %d orphaned file(s) under %s that no database row names (left by a crash "
                 "before a job's rows were committed)", orphans, data_dir)
    return store
