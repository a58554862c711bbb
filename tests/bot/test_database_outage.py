"""The bot when its PostgreSQL server goes away and comes back: each command and button says so in
one private sentence (the web UI's), a command's 'thinking...' is taken back, nothing is queued or
recorded meanwhile, and the bot works again once the server is back. The real discord.py client
against the stand-in; a real server, stopped and started."""

from __future__ import annotations

import asyncio

import pytest

from storage import db
from tests.bot.test_bot import EPHEMERAL, ids_in, imagine

pytestmark = pytest.mark.postgres


@pytest.fixture
def store(settings_factory, own_postgres):
    from storage import open_store

    s = open_store(settings_factory(DATABASE_URL=own_postgres.new_database()))
    yield s
    s.close()


def test_commands_and_buttons_while_the_database_is_down(discord_run, own_postgres):
    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="a kite", count=2, seed=3)
        await asyncio.to_thread(own_postgres.halt)

        said = []
        for act in (lambda: st.slash("imagine", prompt="a boat", steps=2),
                    lambda: st.click(grid, "U1"),
                    lambda: st.slash("history")):
            before = set(st.messages)
            it = await act()
            told = await st.wait_message(lambda m: m["id"] not in before and db.DATABASE_DOWN in m["content"])
            assert told["flags"] & EPHEMERAL and told["content"] == db.DATABASE_DOWN
            said.append(it)
        assert st.original(said[0]) is None          # /imagine's 'thinking...' was taken back
        assert grid["id"] in st.messages             # the button's message stays

        await asyncio.to_thread(own_postgres.resume)
        _, boat = await imagine(st, prompt="a boat", seed=4)
        assert [r.request["prompt"] for r in d.store.history().items] == ["a boat", "a kite", "a kite"]
        assert d.store.jobs(("failed", "interrupted", "cancelled")).total == 0
        assert d.store.get(ids_in(boat)[0]).owner.source == "discord"

    discord_run(scenario)
