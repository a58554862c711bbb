"""Which of the bot's messages show which images, so deleting an image can take its pictures
off Discord too (a deleted image must not stay visible in old posts).

    posts = Posts(store.engine)
    posts.record(message_id, channel_id, ["k7x2m9qa", "p3r8t2wz"])   # after posting a result
    posts.showing(["k7x2m9qa"])    # {message_id: Post(channel_id, ids shown, in order)}
    posts.forget(message_id)        # the message is gone
    posts.forget_images(["k7x2m9qa"])

One row per (message, image); the table lives on storage's Base, so one Alembic chain creates
it (storage/migrations/versions/0101_discord_posts.py). Only messages the bot can reach later
by their channel are recorded: results in channels and DMs, never ephemeral answers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import Engine, Index, Integer, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from storage import db
from storage.models import Base, utcnow


class PostedImage(Base):
    """One image shown by one of the bot's messages, at `position` among the message's images."""

    __tablename__ = "discord_posts"

    message_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    image_id: Mapped[str] = mapped_column(String(8), primary_key=True)
    channel_id: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    posted_at: Mapped[dt.datetime]

    __table_args__ = (Index("ix_discord_posts_image_id", "image_id"),)


@dataclasses.dataclass(frozen=True)
class Post:
    message_id: str
    channel_id: str
    image_ids: tuple[str, ...]  # every image the message shows, in the order shown


class Posts:
    """Reads and writes discord_posts. Blocking: call from a thread, not the event loop."""

    def __init__(self, engine: Engine):
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(db.writer(engine), expire_on_commit=False)

    def record(self, message_id: str | int, channel_id: str | int, image_ids: list[str]) -> None:
        mid, now = str(message_id), utcnow()
        with self._write() as s, s.begin():
            s.execute(delete(PostedImage).where(PostedImage.message_id == mid))  # an edited message: replace
            for n, iid in enumerate(dict.fromkeys(image_ids)):
                s.add(PostedImage(message_id=mid, image_id=iid, channel_id=str(channel_id), position=n,
                                  posted_at=now))

    def showing(self, image_ids: list[str]) -> dict[str, Post]:
        """The messages that show any of `image_ids`, each with everything it shows."""
        if not image_ids:
            return {}
        with self._read() as s:
            mids = set(s.scalars(select(PostedImage.message_id).where(PostedImage.image_id.in_(list(image_ids)))))
            if not mids:
                return {}
            rows = s.scalars(select(PostedImage).where(PostedImage.message_id.in_(mids))
                             .order_by(PostedImage.message_id, PostedImage.position)).all()
        out: dict[str, Post] = {}
        for r in rows:
            post = out.get(r.message_id)
            out[r.message_id] = Post(r.message_id, r.channel_id, (post.image_ids if post else ()) + (r.image_id,))
        return out

    def forget(self, message_id: str | int) -> None:
        with self._write() as s, s.begin():
            s.execute(delete(PostedImage).where(PostedImage.message_id == str(message_id)))

    def forget_images(self, image_ids: list[str]) -> None:
        if image_ids:
            with self._write() as s, s.begin():
                s.execute(delete(PostedImage).where(PostedImage.image_id.in_(list(image_ids))))
