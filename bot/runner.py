"""Runs the bot beside the web UI: its own thread, its own event loop.

    thread = run_in_thread(service, store, settings)
    thread.stop()          # closes the connection; the thread then ends

A missing or refused token is logged (and printed) as one clear sentence and ends only the
bot's thread: the web UI and the job service keep running.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
from typing import Any

log = logging.getLogger(__name__)

TOKEN_HELP = ("Check DISCORD_TOKEN in .env: it must be the bot token from the Discord developer portal "
              "(Applications -> your app -> Bot -> Reset Token), not the application id or the client secret.")


# What the bot needs in a channel; the invite URL asks for exactly these (see the README, "Discord bot").
PERMISSIONS = {"view_channel": 1 << 10, "send_messages": 1 << 11, "send_messages_in_threads": 1 << 38,
               "embed_links": 1 << 14, "attach_files": 1 << 15, "read_message_history": 1 << 16,
               "use_application_commands": 1 << 31}
PERMISSIONS_INTEGER = sum(PERMISSIONS.values())


def invite_url(application_id: int | str) -> str:
    """The link a server admin opens to add the bot: the bot and slash-command scopes, the permissions above."""
    return (f"https://discord.com/oauth2/authorize?client_id={application_id}"
            f"&scope=bot+applications.commands&permissions={PERMISSIONS_INTEGER}")


class BotThread(threading.Thread):
    """The bot's thread. `error` holds the sentence that stopped it, if one did."""

    def __init__(self, service: Any, store: Any, settings: Any, **bot_options: Any):
        super().__init__(name="statuary-discord", daemon=True)
        self.service, self.store, self.settings = service, store, settings
        self.bot_options = bot_options
        self.error: str | None = None
        self.bot = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started_bot = threading.Event()

    def run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception as exc:  # noqa: BLE001 -- the bot's failure must not take the web UI with it
            self._fail(f"the Discord bot stopped: {type(exc).__name__}: {exc}")
            log.exception("the Discord bot stopped")

    async def _main(self) -> None:
        import aiohttp
        import discord

        from bot.client import StatuaryBot

        token = (getattr(self.settings, "discord_token", "") or "").strip()
        if not token:
            return self._fail("DISCORD_TOKEN is not set, so the Discord bot is off. " + TOKEN_HELP)
        # The bot never joins voice: say nothing about the voice libraries it does not need.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        self.loop = asyncio.get_running_loop()
        options = {"public_url": getattr(self.settings, "public_url", ""), **self.bot_options}
        self.bot = StatuaryBot(self.service, self.store, **options)
        self.started_bot.set()
        try:
            async with self.bot:
                await self.bot.start(token)
        except discord.LoginFailure:
            self._fail("Discord refused the bot token (DISCORD_TOKEN); the bot is off, the web UI keeps running. "
                       + TOKEN_HELP)
        except discord.PrivilegedIntentsRequired:  # not expected: the bot asks for no privileged intents
            self._fail("Discord wants privileged intents enabled for this bot; the bot is off.")
        except (OSError, aiohttp.ClientConnectionError) as exc:  # DNS, refused, TLS: not our bug, no traceback
            self._fail(f"the Discord bot cannot reach Discord ({type(exc).__name__}: {exc}); the bot is off, "
                       "the web UI keeps running. Check this machine's network and restart.")

    def _fail(self, message: str) -> None:
        self.error = message
        log.info("%s", message)  # the print below is what a person reads; the log keeps it at -v
        print(f"statuary: {message}", file=sys.stderr)

    def stop(self, timeout: float = 10.0) -> None:
        if self.bot is not None and self.loop is not None and self.loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self.bot.close(), self.loop)
            try:
                fut.result(timeout)
            except Exception:  # noqa: BLE001
                pass
        self.join(timeout)


def run_in_thread(service: Any, store: Any, settings: Any, **bot_options: Any) -> BotThread:
    """Start the bot in a daemon thread and return it (joined by `statuary bot`)."""
    thread = BotThread(service, store, settings, **bot_options)
    thread.start()
    return thread
