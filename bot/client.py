"""The Discord bot's client: its life cycle, the cogs that hold its commands, and what every command shares.

    bot = StatuaryBot(service, store)        # dependencies come in through the constructor
    await bot.start(token)                   # bot/runner.py does this in its own thread

The commands live in bot/cogs/ (one module per group of commands); following a job to its
result is bot/delivery.py; taking deleted images off Discord is bot/retract.py.

Discord's rules shape the code:
- every interaction is acknowledged (deferred) first, well inside Discord's 3 seconds; the
  slow parts (database, queue) run after, in threads, never blocking the event loop;
- an interaction token lives 15 minutes: while it lives the job edits the original response;
  after that (or if the response is gone) the result is a normal channel message that
  mentions the user;
- progress edits are throttled (one per `progress_interval` seconds); HTTP 429 answers are
  left to discord.py, which waits them out;
- attachments are made to fit the upload limit Discord states for the interaction;
- commands are synced once per process (setup_hook), not on every (re)connect.
The bot's clock is injectable (`clock=`) so tests can age an interaction's token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot.buttons import HistoryButton, ResultButton, result_view
from bot.community import Community
from bot.delivery import Delivery
from bot.pending import Pending
from bot.posts import Posts
from bot.render import CONTENT_MAX
from bot.retract import Retractor
from bot.text import clip
from core.jobs import Owner

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 30  # stop using a token this long before Discord does
DEFAULT_FILESIZE = 10 * 1024 * 1024  # Discord's smallest upload limit


def storage_errors() -> tuple[type[Exception], ...]:
    from storage import BadMetadata, NotFound, NotYours

    return NotFound, NotYours, BadMetadata


class StatuaryBot(commands.Bot):
    def __init__(self, service, store, *, community: Community | None = None, clock: Callable[[], float] = time.time,
                 progress_interval: float = 1.5, sync_commands: bool = True, public_url: str = "", **options: Any):
        # Slash commands and buttons need no privileged intents; `guilds` (not privileged) keeps
        # discord.py's guild cache, which it expects. No prefix commands: only slash commands.
        options.setdefault("intents", discord.Intents(guilds=True))
        # No message of ours pings anyone unless it names whom (delivery.py: the requester alone).
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        options.setdefault("command_prefix", commands.when_mentioned)
        options.setdefault("help_command", None)
        super().__init__(**options)
        self.service = service
        self.store = store
        self.community = community or Community(store.engine)
        self.posts = Posts(store.engine)  # which of our messages show which images
        self.pending = Pending(store.engine)  # jobs we still owe a message, across restarts
        self.delivery = Delivery(self)
        self.retractor = Retractor(self)
        self.clock = clock
        self.progress_interval = progress_interval
        self.sync_commands = sync_commands
        self.public_url = public_url  # STATUARY_PUBLIC_URL: the web UI for 'Vary region'; empty hides it
        self.tree.on_error = self._on_tree_error
        self.synced = 0  # how many times commands were synced (once per process)
        self.ready_count = 0
        self._following: set[asyncio.Task] = set()

    # ---- life cycle ---------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        # Runs once per login, not on reconnects: the place for one-time work.
        from bot.cogs import images, making, queue, remix, server, settings, upscale, words

        await asyncio.to_thread(self.community.preload)  # so no command waits on the database before its ack
        for cog in (making.Making(self), images.Images(self), queue.Queue(self), server.Server(self),
                    settings.Settings(self), remix.Remix(self), upscale.Upscale(self), words.Words(self)):
            await self.add_cog(cog)
        self.add_dynamic_items(ResultButton, HistoryButton)
        # discord.py has no public setter for an option's description or choices; both are read when syncing.
        vocab = getattr(self.service, "vocabulary", None)
        if vocab is not None:   # the default model: name a few of its words where people type the prompt
            self.tree.get_command("imagine")._params["prompt"].description = making.prompt_description(vocab)
        for name in ("imagine", "settings"):   # offer only the samplers that suit the model's schedule
            self.tree.get_command(name)._params["sampler"].choices = making.sampler_choices(self.service.limits)
        if self.sync_commands and not self.synced:
            await self.tree.sync()
            self.synced += 1

    async def on_ready(self) -> None:
        self.ready_count += 1  # a reconnect fires on_ready again; nothing here must run twice
        log.info("Discord bot ready as %s (ready #%d)", self.user, self.ready_count)
        if self.ready_count == 1:
            self.spawn(self.delivery.resume())  # what finished (or failed) while we were away
        if self.ready_count == 1 and self.application_id:
            from bot.runner import invite_url

            log.info("Add the bot to a server with %s", invite_url(self.application_id))

    async def close(self) -> None:
        # Stop following jobs: each leaves a note in its message (the jobs go on; the next start
        # delivers what they make, from bot/pending.py).
        tasks = list(self._following)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        await super().close()

    def spawn(self, coro) -> asyncio.Task:
        """Run `coro` (following a job) beside the command that started it; close() cancels it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._following.add(task)
        task.add_done_callback(self._following.discard)
        return task

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        if isinstance(error, app_commands.CheckFailure):
            return  # the check answered the user itself
        await self.fault(interaction, getattr(error, "original", error),
                         f"command {interaction.command and interaction.command.name}")

    async def fault(self, interaction: discord.Interaction, error: BaseException, what: str) -> None:
        """What a command, button or modal did not expect: the traceback to the log, one private
        sentence to the person (the web UI's words when the database is away). A command's
        'thinking...' answer is taken back; a button's message stays."""
        from storage import db

        down = db.outage(error)
        log.error("%s failed%s", what, ": the database cannot be reached" if down else "", exc_info=error)
        text = db.DATABASE_DOWN if down else "Something went wrong on our side; the error is in the bot's log."
        if interaction.type == discord.InteractionType.application_command:
            await self.refuse(interaction, text)
        else:
            await self.tell(interaction, text)

    # ---- buttons: persistent, so they reach the cogs through the client ---------------------------

    async def on_result_button(self, interaction: discord.Interaction, action: str, ids: list[str]) -> None:
        await self.get_cog("Making").on_result_button(interaction, action, ids)

    async def on_history_button(self, interaction: discord.Interaction, page: int, query: str | None) -> None:
        await self.get_cog("Images").on_history_button(interaction, page, query)

    # ---- what every command shares ------------------------------------------------------------------

    def result_view(self, ids: list[str]) -> discord.ui.View:
        """The buttons under a result, with what this deployment offers (Upscale 2x, Vary region)."""
        hires = getattr(self.service, "hires_defaults", None)
        return result_view(ids, public_url=self.public_url, upscale=bool(hires and hires.helps))

    def owner(self, interaction: discord.Interaction) -> Owner:
        user = interaction.user
        return Owner("discord", str(user.id), user.display_name or user.name,
                     None if interaction.guild_id is None else str(interaction.guild_id),
                     None if interaction.channel_id is None else str(interaction.channel_id))

    def token_alive_at(self, created: float | None, lead: float = 0.0) -> bool:
        """Whether an interaction token made at `created` (unix time) is still ours to use, `lead` seconds from now."""
        return created is not None and self.clock() - created + lead < TOKEN_LIFETIME_S - TOKEN_MARGIN_S

    def wants_dm(self, interaction: discord.Interaction) -> bool:
        """Whether this member asked for results by DM (/private). In memory: Community.preload."""
        return interaction.guild_id is not None and self.community.is_private(interaction.user.id)

    async def tell(self, interaction: discord.Interaction, text: str) -> None:
        """A short private answer, whether or not the interaction was answered yet."""
        text = clip(text, CONTENT_MAX)  # over Discord's limit the whole answer would be refused
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not answer interaction %s: %s", interaction.id, exc)

    async def refuse(self, interaction: discord.Interaction, text: str) -> None:
        """Take back a deferred 'thinking...' answer and say privately why nothing was queued."""
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            pass
        await self.tell(interaction, text)

    async def ack(self, interaction: discord.Interaction, *, ephemeral: bool = False) -> bool:
        """Defer at once. False when Discord no longer takes the answer (too late, already answered)."""
        try:
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            return True
        except discord.InteractionResponded:
            return True
        except discord.HTTPException as exc:
            log.warning("could not defer interaction %s: %s", interaction.id, exc)
            return False

    async def edit_original(self, interaction: discord.Interaction, content: str) -> None:
        try:
            await interaction.edit_original_response(content=clip(content, CONTENT_MAX))
        except discord.HTTPException as exc:
            log.info("could not edit interaction %s: %s", interaction.id, exc)
