"""bot.runner: the bot in its own thread beside the web UI; a bad or missing token is one clear sentence."""

from __future__ import annotations

import asyncio

from bot.runner import run_in_thread
from tests.bot.conftest import until
from tests.bot.standin import DiscordStandin


def run_with_standin(fn):
    async def main():
        st = DiscordStandin()
        await st.start()
        try:
            return await fn(st)
        finally:
            await st.stop()

    return asyncio.run(main())


def test_a_wrong_token_is_a_clear_message_and_only_the_bot_stops(store, service, settings_factory, capsys):
    async def scenario(st):
        thread = run_in_thread(service, store, settings_factory(DISCORD_TOKEN="not-the-token"))
        await asyncio.to_thread(thread.join, 30)
        return thread

    thread = run_with_standin(scenario)
    assert not thread.is_alive()
    assert "Discord refused the bot token (DISCORD_TOKEN)" in thread.error and "web UI keeps running" in thread.error
    assert "DISCORD_TOKEN" in capsys.readouterr().err
    # the service the web UI uses is untouched
    assert service.status()["running"] is None


def test_a_missing_token_is_a_clear_message(store, service, settings_factory):
    thread = run_in_thread(service, store, settings_factory(DISCORD_TOKEN=""))
    thread.join(10)
    assert "DISCORD_TOKEN is not set" in thread.error


def test_the_thread_runs_the_bot_and_stops(store, service, settings_factory):
    async def scenario(st):
        thread = run_in_thread(service, store, settings_factory(DISCORD_TOKEN=st.token), guild_ready_timeout=0.05)
        await asyncio.to_thread(thread.started_bot.wait, 10)
        await until(lambda: thread.bot.is_ready(), what="the bot in its thread")
        assert {c["name"] for c in st.commands} >= {"imagine"}
        await asyncio.to_thread(thread.stop)
        return thread

    thread = run_with_standin(scenario)
    assert not thread.is_alive() and thread.error is None


def test_the_readme_gives_the_computed_invite_permissions():
    from pathlib import Path

    from bot.runner import PERMISSIONS_INTEGER, invite_url

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"permissions={PERMISSIONS_INTEGER}" in text and "scope=bot+applications.commands" in text
    assert invite_url(42).endswith(f"client_id=42&scope=bot+applications.commands&permissions={PERMISSIONS_INTEGER}")


def test_an_unreachable_discord_is_one_clear_sentence(store, service, settings_factory, capsys):
    import discord

    original = discord.http.Route.BASE
    discord.http.Route.BASE = "http://127.0.0.1:9/api/v10"  # port 9 (discard): nothing listens, refused at once
    try:
        thread = run_in_thread(service, store, settings_factory(DISCORD_TOKEN="x"))
        thread.join(30)
    finally:
        discord.http.Route.BASE = original
    assert not thread.is_alive()
    assert "cannot reach Discord" in thread.error and "web UI keeps running" in thread.error
    err = capsys.readouterr().err
    assert "cannot reach Discord" in err and "Traceback" not in err
