"""Jobs the bot still owes a message: noted when a job is submitted from Discord, forgotten once
its final message (result, failure or cancellation) is shown. A bot that starts again (after a
restart, or a crash of its thread) finds here what finished, failed or still runs meanwhile,
and delivers it: the database knows every result, so none is made and never posted.

    pending = Pending(store.engine)
    pending.add(Delivery(generation_id, user_id, channel_id, dm, token, token_created, None, header, limit))
    pending.all(); pending.forget(generation_id)

The table lives on storage's Base (storage/migrations/versions/0103_discord_deliveries.py).
Blocking: call from a thread, not the event loop.
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from sqlalchemy import Boolean, Engine, Float, Integer, String, Text, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from storage import db
from storage.models import Base, utcnow


class PendingDelivery(Base):
    __tablename__ = "discord_deliveries"

    generation_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(32))
    channel_id: Mapped[str] = mapped_column(String(32))  # the channel (or DM channel) to post in
    dm: Mapped[bool] = mapped_column(Boolean)
    token: Mapped[str | None] = mapped_column(String(512))  # the interaction's token: edits while it lives
    token_created: Mapped[float | None] = mapped_column(Float)  # when the interaction was made (unix time)
    message_id: Mapped[str | None] = mapped_column(String(32))  # the DM message being edited, if any
    header: Mapped[str] = mapped_column(Text)  # the first line(s) of the job's messages
    filesize_limit: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[dt.datetime]


@dataclasses.dataclass(frozen=True)
class Owed:
    generation_id: str
    user_id: str
    channel_id: str
    dm: bool
    token: str | None
    token_created: float | None
    message_id: str | None
    header: str
    filesize_limit: int


class Pending:
    def __init__(self, engine: Engine):
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(db.writer(engine), expire_on_commit=False)

    def add(self, owed: Owed) -> None:
        with self._write() as s, s.begin():
            s.merge(PendingDelivery(**dataclasses.asdict(owed), created_at=utcnow()))

    def all(self) -> list[Owed]:
        with self._read() as s:
            rows = s.scalars(select(PendingDelivery).order_by(PendingDelivery.created_at)).all()
            return [Owed(**{f.name: getattr(r, f.name) for f in dataclasses.fields(Owed)}) for r in rows]

    def drop_token(self, generation_id: str) -> None:
        """The interaction's token is no longer used (expired, or its message is gone)."""
        with self._write() as s, s.begin():
            s.execute(update(PendingDelivery).where(PendingDelivery.generation_id == generation_id)
                      .values(token=None))

    def forget(self, generation_id: str) -> None:
        with self._write() as s, s.begin():
            s.execute(delete(PendingDelivery).where(PendingDelivery.generation_id == generation_id))
