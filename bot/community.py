"""Community controls and user preferences, kept in the database next to the generations.

    community = Community(store.engine)
    rules = community.guild(guild_id)          # GuildRules: channels, limits, blocked words, defaults
    community.update_guild(guild_id, by=user_id, max_per_hour=10)
    community.set_private(user_id, True)       # /private: results by DM only
    community.member(user_id)                  # MemberDefaults: /settings, used by /imagine

The tables live on storage's declarative Base, so one Alembic chain creates them
(storage/migrations/versions/0100_discord_community.py). Reads are cached in memory and the
cache is replaced on every write from this process: a slash command must be answered within
three seconds, and a check that needs no query cannot be slow.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import threading
import unicodedata
from typing import Any

from sqlalchemy import JSON, Boolean, Engine, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

import bot.pending  # noqa: F401 -- its table (discord_deliveries) joins the community's on storage's Base
import bot.posts  # noqa: F401 -- its table (discord_posts) joins the community's on storage's Base
from storage import db
from storage.models import Base, utcnow


class GuildSettings(Base):
    """One server's rules, set by members with Manage Server. NULL means 'not set: use the default'."""

    __tablename__ = "discord_guild_settings"

    guild_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    allowed_channels: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every channel
    blocked_words: Mapped[list[str]] = mapped_column(JSON, default=list)
    max_queued: Mapped[int | None] = mapped_column(Integer)  # a member's jobs waiting or running at once
    max_per_hour: Mapped[int | None] = mapped_column(Integer)  # a member's jobs started in the last hour
    default_steps: Mapped[int | None] = mapped_column(Integer)
    max_steps: Mapped[int | None] = mapped_column(Integer)
    default_size: Mapped[int | None] = mapped_column(Integer)  # side of the square of the same area, pixels
    max_size: Mapped[int | None] = mapped_column(Integer)
    default_count: Mapped[int | None] = mapped_column(Integer)
    max_count: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime]
    updated_by: Mapped[str] = mapped_column(String(32), default="")


class UserPrefs(Base):
    """A Discord user's preferences, the same in every server."""

    __tablename__ = "discord_user_prefs"

    user_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    private: Mapped[bool] = mapped_column(Boolean, default=False)  # results by DM only
    # /settings: the member's own /imagine defaults; NULL: the server's (migration 0130)
    steps: Mapped[int | None] = mapped_column(Integer)
    sampler: Mapped[str | None] = mapped_column(String(32))
    aspect: Mapped[str | None] = mapped_column(String(8))
    count: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[dt.datetime]


MEMBER_FIELDS = ("steps", "sampler", "aspect", "count")


@dataclasses.dataclass(frozen=True)
class MemberDefaults:
    """A member's own /imagine defaults (None: not set, the server's default applies) and /private."""

    steps: int | None = None
    sampler: str | None = None
    aspect: str | None = None
    count: int | None = None
    private: bool = False


# What a server gets before anyone sets anything (None: the model's or service's own limit).
DEFAULTS: dict[str, Any] = {
    "allowed_channels": [], "blocked_words": [], "max_queued": None, "max_per_hour": None,
    "default_steps": 20, "max_steps": 50, "default_size": None, "max_size": None,
    "default_count": 1, "max_count": 4,
}
RULE_FIELDS = tuple(DEFAULTS)


@dataclasses.dataclass(frozen=True)
class GuildRules:
    """A server's settings with the defaults filled in. Frozen: read it, don't change it."""

    allowed_channels: tuple[str, ...] = ()
    blocked_words: tuple[str, ...] = ()
    max_queued: int | None = None
    max_per_hour: int | None = None
    default_steps: int = 20
    max_steps: int = 50
    default_size: int | None = None
    max_size: int | None = None
    default_count: int = 1
    max_count: int = 4

    def channel_allowed(self, channel_id: str | int | None) -> bool:
        return not self.allowed_channels or str(channel_id) in self.allowed_channels

    def blocked_word_in(self, text: str) -> str | None:
        """The first blocked word or phrase that `text` contains as whole words, compared in
        normal form (see `words`): case, width, accents, look-alike letters and plural -s/-es ignored."""
        found = [_forms(w) for w in words(text)]
        for phrase in self.blocked_words:
            wanted = [_forms(w) for w in words(phrase)]
            n = len(wanted)
            if n and any(all(wanted[j] & found[i + j] for j in range(n)) for i in range(len(found) - n + 1)):
                return phrase
        return None


DM_RULES = GuildRules()  # direct messages: no server, the defaults

# Letters of other scripts drawn like Latin ones (the common part of Unicode's confusables.txt):
# a transliteration library maps by sound (Cyrillic 'с' -> 's'), but a filter needs the shape ('c').
CONFUSABLES = str.maketrans(
    "авсеһіјкмнорѕтхуԁԛԝɑαβεικνορτυχϲϳ",
    "abcehijkmhopstxydqwaabeiknoptuxcj")


def words(text: str) -> list[str]:
    """`text` as words in one normal form: NFKC (fullwidth and styled letters become plain),
    case-folded, accents dropped, look-alike letters of other scripts made Latin."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    text = "".join(c for c in text if not unicodedata.combining(c) and unicodedata.category(c) != "Cf")
    return re.findall(r"\w+", unicodedata.normalize("NFKC", text).translate(CONFUSABLES))


def _forms(word: str) -> set[str]:
    """A word and its simple singulars: 'cats' -> {'cats', 'cat'}, 'foxes' -> {'foxes', 'foxe', 'fox'}."""
    forms = {word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        forms.add(word[:-1])
        if len(word) > 4 and word.endswith("es"):
            forms.add(word[:-2])
    return forms


class Community:
    """Reads and writes the community tables. Thread-safe; cached per guild and user."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._read = sessionmaker(engine, expire_on_commit=False)
        self._write = sessionmaker(db.writer(engine), expire_on_commit=False)
        self._lock = threading.Lock()
        self._guilds: dict[str, GuildRules] = {}
        self._private: dict[str, bool] = {}
        self._members: dict[str, MemberDefaults] = {}
        self._complete = False  # preload() read every row: a missing id means 'the defaults', no query

    def preload(self) -> None:
        """Read every server's rules and every preference once (a few rows per server and member),
        so the checks a command makes before its 3-second acknowledgement never wait on the
        database. Writes from this process keep the caches current."""
        with self._read() as s:
            guilds = {row.guild_id: _rules(row) for row in s.scalars(select(GuildSettings))}
            prefs = list(s.scalars(select(UserPrefs)))
            private = {row.user_id: bool(row.private) for row in prefs}
            members = {row.user_id: _member(row) for row in prefs}
        with self._lock:
            self._guilds = guilds | self._guilds
            self._private = private | self._private
            self._members = members | self._members
            self._complete = True

    # ---- servers -----------------------------------------------------------------------------

    def guild(self, guild_id: str | int | None) -> GuildRules:
        if guild_id is None:
            return DM_RULES
        gid = str(guild_id)
        with self._lock:
            if gid in self._guilds:
                return self._guilds[gid]
            if self._complete:
                return GuildRules()
        with self._read() as s:
            row = s.get(GuildSettings, gid)
            rules = _rules(row)
        with self._lock:
            self._guilds[gid] = rules
        return rules

    def update_guild(self, guild_id: str | int, by: str | int, **changes: Any) -> GuildRules:
        """Set some of a server's fields (None resets one to its default); returns the new rules."""
        unknown = set(changes) - set(RULE_FIELDS)
        if unknown:
            raise ValueError(f"unknown server settings: {', '.join(sorted(unknown))}")
        gid = str(guild_id)
        with self._write() as s, s.begin():
            row = s.get(GuildSettings, gid)
            if row is None:
                row = GuildSettings(guild_id=gid, allowed_channels=[], blocked_words=[], updated_at=utcnow())
                s.add(row)
            for key, value in changes.items():
                if key in ("allowed_channels", "blocked_words"):
                    value = list(value or [])
                setattr(row, key, value)
            row.updated_at, row.updated_by = utcnow(), str(by)
            s.flush()
            rules = _rules(row)
        with self._lock:
            self._guilds[gid] = rules
        return rules

    # ---- users -------------------------------------------------------------------------------

    def is_private(self, user_id: str | int) -> bool:
        uid = str(user_id)
        with self._lock:
            if uid in self._private:
                return self._private[uid]
            if self._complete:
                return False
        with self._read() as s:
            row = s.get(UserPrefs, uid)
            private = bool(row and row.private)
        with self._lock:
            self._private[uid] = private
        return private

    def set_private(self, user_id: str | int, private: bool) -> None:
        uid = str(user_id)
        with self._write() as s, s.begin():
            row = s.get(UserPrefs, uid)
            if row is None:
                s.add(UserPrefs(user_id=uid, private=private, updated_at=utcnow()))
            else:
                row.private, row.updated_at = private, utcnow()
        with self._lock:
            self._private[uid] = private
            self._members.pop(uid, None)

    def member(self, user_id: str | int) -> MemberDefaults:
        """The member's /settings (all None when never set)."""
        uid = str(user_id)
        with self._lock:
            if uid in self._members:
                return self._members[uid]
            if self._complete and uid not in self._private:
                return MemberDefaults()
        with self._read() as s:
            member = _member(s.get(UserPrefs, uid))
        with self._lock:
            self._members[uid] = member
        return member

    def update_member(self, user_id: str | int, *, reset: bool = False, **changes: Any) -> MemberDefaults:
        """Set some of a member's defaults (`private` too); `reset` first clears every one of
        them (and /private). Values are checked by the caller (bot/cogs/settings.py)."""
        unknown = set(changes) - set(MEMBER_FIELDS) - {"private"}
        if unknown:
            raise ValueError(f"unknown member settings: {', '.join(sorted(unknown))}")
        uid = str(user_id)
        with self._write() as s, s.begin():
            row = s.get(UserPrefs, uid)
            if row is None:
                row = UserPrefs(user_id=uid, private=False, updated_at=utcnow())
                s.add(row)
            if reset:
                for key in MEMBER_FIELDS:
                    setattr(row, key, None)
                row.private = False
            for key, value in changes.items():
                setattr(row, key, bool(value) if key == "private" else value)
            row.updated_at = utcnow()
            s.flush()
            member = _member(row)
        with self._lock:
            self._members[uid] = member
            self._private[uid] = member.private
        return member


def _member(row: UserPrefs | None) -> MemberDefaults:
    if row is None:
        return MemberDefaults()
    return MemberDefaults(**{k: getattr(row, k) for k in MEMBER_FIELDS}, private=bool(row.private))


def _rules(row: GuildSettings | None) -> GuildRules:
    if row is None:
        return GuildRules()
    values = {}
    for key in RULE_FIELDS:
        value = getattr(row, key)
        if value is None:
            value = DEFAULTS[key]
        if key in ("allowed_channels", "blocked_words"):
            value = tuple(str(v) for v in value or ())
        values[key] = value
    return GuildRules(**values)
