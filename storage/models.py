"""The database tables, as SQLAlchemy 2 typed models. Alembic migrations (storage/migrations)
create and change them; a test checks the migrated schema matches these models.

A generation is one submitted job: its full request (every field that decides the pixels),
who asked, where it came from (parent image), the fingerprint of the software that ran it,
and its status. Each generation has 0..count images; each image has a short public id.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, ForeignKey, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

STATUSES = ("queued", "running", "done", "failed", "cancelled", "interrupted")
UNFINISHED = ("queued", "running")


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("store timezone-aware datetimes (use storage.models.utcnow())")
        return value.astimezone(dt.timezone.utc) if value is not None else None

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON}


class Generation(Base):
    __tablename__ = "generations"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # 12 characters: never mistaken for an image id
    job_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # generate | reproduce | vary | verify | ...
    status: Mapped[str] = mapped_column(String(16), index=True)
    reason: Mapped[str | None] = mapped_column(Text)  # why it failed / was cancelled / interrupted
    error_type: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[dt.datetime]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    seconds: Mapped[float | None] = mapped_column(Float)  # the service's own timing of the job
    runner: Mapped[str | None] = mapped_column(String(200))  # host:pid:start of the process running it
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # times a worker started it

    # who asked
    owner_source: Mapped[str] = mapped_column(String(16))  # web | discord | cli
    owner_user_id: Mapped[str] = mapped_column(String(128))
    owner_display_name: Mapped[str] = mapped_column(String(256), default="")
    owner_guild_id: Mapped[str | None] = mapped_column(String(64))
    owner_channel_id: Mapped[str | None] = mapped_column(String(64))

    # the image this one varies, reproduces, inpaints or verifies. No foreign key on purpose:
    # deleting a parent leaves its children, whose chain then shows the parent as deleted.
    parent_id: Mapped[str | None] = mapped_column(String(8), index=True)

    # the request, one column per GenerationRequest field (images by sha256)
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str] = mapped_column(Text, default="")
    seed: Mapped[int] = mapped_column(BigInteger)  # up to 2**32-1: beyond a 32-bit signed int
    count: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    guidance: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    sampler: Mapped[str] = mapped_column(String(32))
    variation_seed: Mapped[int | None] = mapped_column(BigInteger)
    variation_strength: Mapped[float] = mapped_column(Float)
    variation_chain: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))  # [[seed, strength], ...]; NULL: none
    prompt_syntax: Mapped[str | None] = mapped_column(String(16))  # "a1111"; NULL: "plain" (made before it existed)
    loras: Mapped[list[Any] | None] = mapped_column(JSON(none_as_null=True))  # [[name, weight, sha256], ...]; NULL: none
    init_image_sha256: Mapped[str | None] = mapped_column(String(64))
    strength: Mapped[float] = mapped_column(Float)
    mask_sha256: Mapped[str | None] = mapped_column(String(64))
    hires: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))  # core/hires.py; NULL: off

    # what ran it
    model_id: Mapped[str] = mapped_column(String(1024), default="")
    model_sha256: Mapped[str] = mapped_column(String(64), default="")
    software_version: Mapped[str] = mapped_column(String(32))
    noise_source: Mapped[str] = mapped_column(String(200), default="")
    fingerprint: Mapped[dict[str, Any]]

    images: Mapped[list["Image"]] = relationship(
        back_populates="generation", order_by="Image.index", cascade="all, delete-orphan", passive_deletes=True)

    __table_args__ = (
        Index("ix_generations_created_at", "created_at"),
        Index("ix_generations_owner", "owner_source", "owner_user_id", "created_at"),
    )


class Image(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(8), primary_key=True)  # the short public id
    generation_id: Mapped[str] = mapped_column(String(16), ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    index: Mapped[int] = mapped_column("image_index", Integer)  # 0-based, within its generation
    seed: Mapped[int] = mapped_column(BigInteger)
    variation_seed: Mapped[int | None] = mapped_column(BigInteger)
    file: Mapped[str] = mapped_column(String(256))  # relative to the data dir: images/ab/abcd....png
    sha256: Mapped[str] = mapped_column(String(64), index=True)  # of the PNG file
    bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    timeline_sha256: Mapped[str | None] = mapped_column(String(64), index=True)  # animated WebP of the preview frames
    created_at: Mapped[dt.datetime]

    generation: Mapped[Generation] = relationship(back_populates="images")


class DeletedId(Base):
    """A tombstone: the id of a deleted image, kept so the id is never given out again and so
    asking for it says 'deleted' rather than 'no such image'. Nothing else about it is kept."""

    __tablename__ = "deleted_ids"

    id: Mapped[str] = mapped_column(String(8), primary_key=True)
    deleted_at: Mapped[dt.datetime]
