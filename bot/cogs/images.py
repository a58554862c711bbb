"""Looking at and deleting pictures: /info, /history (with its persistent paging buttons),
/delete, and the Info, Timeline and Delete buttons under a result.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import render
from bot.buttons import ID_MAX, QUERY_MAX, history_view
from bot.text import clip, echo
from core.jobs import Owner
from core.request import Described, FieldError

if TYPE_CHECKING:
    from bot.client import StatuaryBot

log = logging.getLogger(__name__)

HISTORY_PER_PAGE = 10
STATUSES = {"done": "Made", "failed": "Failed", "interrupted": "Interrupted", "cancelled": "Cancelled",
            "undone": "Failed, interrupted or cancelled"}  # /history's status choices


class Images(commands.Cog):
    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    # ---- the commands ---------------------------------------------------------------------------

    @app_commands.command(name="info")
    @app_commands.describe(id="The image's id")
    async def info_command(self, interaction: discord.Interaction, id: app_commands.Range[str, 1, ID_MAX]) -> None:
        """Everything about how an image was made"""
        await self.info(interaction, id)

    @app_commands.command(name="history")
    @app_commands.describe(query="Only pictures whose prompt has all these words",
                           status="Pictures made (the default), or jobs that failed, were interrupted or cancelled")
    @app_commands.choices(status=[app_commands.Choice(name=label, value=value) for value, label in STATUSES.items()])
    async def history(self, interaction: discord.Interaction,
                      query: app_commands.Range[str, 1, QUERY_MAX] | None = None, status: str = "done") -> None:
        """Your pictures, newest first (only you see this)"""
        # QUERY_MAX: the paging buttons carry the query in their custom_id, which holds 100 characters.
        if query is not None and len(query) > QUERY_MAX:  # Discord's max_length can be bypassed
            return await self.bot.tell(interaction, str(FieldError("query", Described(f"a text of {len(query)} characters"),
                                                                   f"use at most {QUERY_MAX} characters")))
        if status not in STATUSES:
            return await self.bot.tell(interaction, str(FieldError("status", status, "use one of "
                                                                   + ", ".join(STATUSES))))
        await interaction.response.defer(ephemeral=True, thinking=True)
        owner = self.bot.owner(interaction)
        if status != "done":
            text = await asyncio.to_thread(self.jobs_page, owner, query, status)
            return await interaction.edit_original_response(content=text)
        text, page, pages = await asyncio.to_thread(self.history_page, owner, query, 1)
        view = history_view(query, page, pages) if pages > 1 else discord.utils.MISSING
        await interaction.edit_original_response(content=text, view=view)

    @app_commands.command(name="delete")
    @app_commands.describe(id="The id of one of your images")
    async def delete_command(self, interaction: discord.Interaction, id: app_commands.Range[str, 1, ID_MAX]) -> None:
        """Delete one of your images: its picture, files and record"""
        await self.delete(interaction, [id])

    # ---- what the commands and buttons do ---------------------------------------------------------

    async def info(self, interaction: discord.Interaction, image_id: str) -> None:
        from bot.client import storage_errors

        if not await self.bot.ack(interaction, ephemeral=True):  # first: the database may be slow
            return
        try:
            rec = await asyncio.to_thread(self.bot.store.get, image_id)
        except storage_errors() as exc:
            return await self.bot.edit_original(interaction, f"⚠️ {exc}")
        await self.bot.edit_original(interaction, render.recipe_full(rec))

    async def timeline(self, interaction: discord.Interaction, ids: list[str]) -> None:
        """The images emerging from the noise, as animated GIFs (WebP when a GIF is too big)."""
        from bot.client import DEFAULT_FILESIZE, storage_errors

        if not await self.bot.ack(interaction, ephemeral=True):
            return
        limit = interaction.filesize_limit or DEFAULT_FILESIZE
        store = self.bot.store

        def files() -> tuple[list[discord.File], list[str]]:
            out, missing = [], []
            for iid in ids:
                try:
                    chosen = None
                    for fmt in ("gif", "webp"):
                        path = store.timeline_file(iid, fmt)
                        if path.stat().st_size <= limit:
                            chosen = path
                            break
                    if chosen is None:
                        missing.append(f"`{iid}`: its timeline is larger than this server's upload limit")
                    else:
                        out.append(discord.File(chosen, filename=f"{iid}-timeline{chosen.suffix}"))
                except storage_errors() as exc:
                    missing.append(str(exc))
            return out, missing

        found, missing = await asyncio.to_thread(files)
        text = "🎞️ From noise to picture: " + " ".join(f"`{i}`" for i in ids)
        if missing:
            text += "\n" + "\n".join(f"⚠️ {m}" for m in missing)
        try:
            await interaction.edit_original_response(content=text, attachments=found)
        except discord.HTTPException as exc:
            log.warning("could not post a timeline: %s", exc)

    async def delete(self, interaction: discord.Interaction, ids: list[str], *, from_button: bool = False) -> None:
        """Delete the user's own images (rows and files) and, from a button, the message showing them."""
        from bot.client import storage_errors
        from storage import NotFound

        bot = self.bot
        if not await bot.ack(interaction, ephemeral=True):
            return
        owner = bot.owner(interaction)

        def run() -> tuple[list[str], list[str], list[str]]:
            done, gone, refused = [], [], []
            for iid in ids:
                try:
                    bot.store.delete(iid, owner)
                    done.append(iid)
                except NotFound as exc:
                    if exc.id and bot.store.was_deleted(exc.id):
                        gone.append(exc.id)  # deleted before: nothing to do, and not by this person
                    else:
                        refused.append(str(exc))
                except storage_errors() as exc:
                    refused.append(str(exc))
            return done, gone, refused

        done, gone, refused = await asyncio.to_thread(run)
        handled: set[str] = set()
        # A ❌ under a message whose pictures are all deleted takes the message down, whoever
        # clicks: a deleted picture must not stay up. It says 'deleted already', never 'Deleted'.
        if from_button and (done or gone) and not refused and interaction.message is not None:
            try:
                await interaction.message.delete()
                handled.add(str(interaction.message.id))
            except discord.NotFound:
                handled.add(str(interaction.message.id))
            except discord.HTTPException as exc:  # no Manage Messages in a channel, say
                log.info("could not delete message %s: %s", interaction.message.id, exc)
        if done:
            await bot.retractor.retract(done, handled=handled)
        lines = []
        if done:
            lines.append("🗑️ Deleted " + " ".join(f"`{i}`" for i in done) + " (picture, files and record).")
        if gone:
            lines.append("⚠️ " + " ".join(f"`{i}`" for i in gone) + " had been deleted already; nothing was done.")
        lines += [f"⚠️ {r}" for r in refused]
        await bot.edit_original(interaction, "\n".join(lines) or "Nothing to delete.")

    # ---- history pages -------------------------------------------------------------------------------

    def jobs_page(self, owner: Owner, query: str | None, status: str) -> str:
        """The newest of `owner`'s jobs that ended without pictures, each with its reason."""
        from storage.store import ENDED_UNDONE

        statuses = ENDED_UNDONE if status == "undone" else (status,)
        result = self.bot.store.jobs(statuses, owner=owner, query=query or None, per_page=HISTORY_PER_PAGE)
        label = STATUSES[status].lower()
        if not result.total:
            return f"You have no {label} jobs" + (f" matching “{echo(query, 100)}”." if query else ".")
        lines = [f"**Your {label} jobs**{f' matching “{echo(query, 100)}”' if query else ''} — the newest "
                 f"{len(result.items)} of {result.total}"]
        for job in result.items:
            lines.append(f"{job.created:%Y-%m-%d %H:%M} · **{job.status}** · {echo(job.request.get('prompt', ''), 60)}"
                         f" — {echo(job.reason or 'no reason was recorded', 200)}")
        return clip("\n".join(lines), render.CONTENT_MAX)

    def history_page(self, owner: Owner, query: str | None, page: int) -> tuple[str, int, int]:
        """The text of one page of `owner`'s pictures, the page shown (`page` brought within the
        pages there are now: a button may be older than a delete), and the number of pages."""
        store = self.bot.store
        result = store.history(owner=owner, query=query or None, page=max(1, page), per_page=HISTORY_PER_PAGE)
        if result.total and result.page > result.pages:
            result = store.history(owner=owner, query=query or None, page=result.pages, per_page=HISTORY_PER_PAGE)
        if not result.total:
            return (f"No pictures of yours match “{echo(query, 100)}”." if query else "You have no pictures yet."), 1, 1
        lines = [f"**Your pictures**{f' matching “{echo(query, 100)}”' if query else ''} — page {result.page} of "
                 f"{result.pages} ({result.total} images)"]
        for rec in result.items:
            lines.append(f"`{rec.id}` {rec.created:%Y-%m-%d %H:%M} · seed {rec.seed} · "
                         f"{echo(rec.image_request.get('prompt', ''), 70)}")
        return clip("\n".join(lines), render.CONTENT_MAX), result.page, result.pages

    async def on_history_button(self, interaction: discord.Interaction, page: int, query: str | None) -> None:
        """◀ Newer / Older ▶: that page of the clicker's own pictures, in place of the ephemeral answer."""
        owner = self.bot.owner(interaction)  # whoever clicks sees only their own pictures
        try:
            await interaction.response.defer()  # first: the database may be slow; the page follows
        except discord.HTTPException as exc:
            return log.warning("could not acknowledge a history click: %s", exc)
        text, page, pages = await asyncio.to_thread(self.history_page, owner, query, page)
        view = history_view(query, page, pages) if pages > 1 else None
        try:
            await interaction.edit_original_response(content=text, view=view)
        except discord.HTTPException as exc:
            log.warning("could not turn a history page: %s", exc)
