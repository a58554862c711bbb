"""The community tables: migration 0100_discord creates exactly bot/community.py's models; settings persist."""

from __future__ import annotations


from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import bot.community  # noqa: F401 -- puts the discord tables on storage's Base
from bot.community import Community
from storage import db
from storage.models import Base


def test_the_migration_creates_exactly_the_models(store):
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    assert db.current_revision(store.engine) >= "0100_discord"


def test_settings_and_preferences_survive_a_new_process(store):
    c = Community(store.engine)
    assert c.guild("7").max_steps == 50 and not c.is_private("1")
    c.update_guild("7", by="9", max_steps=12, blocked_words=["Owl"], allowed_channels=[5])
    c.set_private("1", True)
    fresh = Community(store.engine)
    rules = fresh.guild("7")
    assert rules.max_steps == 12 and rules.blocked_words == ("Owl",) and rules.allowed_channels == ("5",)
    assert fresh.is_private("1") and fresh.guild("8").max_steps == 50
    fresh.update_guild("7", by="9", max_steps=None)
    assert Community(store.engine).guild("7").max_steps == 50  # None: back to the default
