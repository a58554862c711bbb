"""The queue and a member's preferences: /queue, /cancel and /private."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.text import echo
from core.jobs import Owner

if TYPE_CHECKING:
    from bot.client import StatuaryBot


class Queue(commands.Cog):
    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    @app_commands.command(name="queue")
    async def queue(self, interaction: discord.Interaction) -> None:
        """What runs now, and where your jobs are in the queue"""
        await interaction.response.defer(ephemeral=True, thinking=True)
        text = await asyncio.to_thread(self.queue_text, self.bot.owner(interaction))  # may read preferences
        await self.bot.edit_original(interaction, text)

    @app_commands.command(name="cancel")
    @app_commands.describe(all="Cancel every job of yours, not only the newest")
    async def cancel(self, interaction: discord.Interaction, all: bool = False) -> None:
        """Cancel your newest job that has not finished"""
        handles = self.bot.service.handles_of(self.bot.owner(interaction))
        if not handles:
            return await interaction.response.send_message("You have no jobs waiting or running.", ephemeral=True)
        chosen = handles if all else [handles[-1]]
        cancelled = [h for h in chosen if h.cancel()]
        await interaction.response.send_message(
            f"🚫 Cancelled {len(cancelled)} job(s): " + "; ".join(f"“{echo(h.request.prompt, 60)}”"
                                                                 for h in cancelled), ephemeral=True)

    @app_commands.command(name="private")
    @app_commands.describe(on="On: your results come by DM only. Off: in the channel")
    async def private(self, interaction: discord.Interaction, on: bool) -> None:
        """Get your results by DM instead of in the channel"""
        await interaction.response.defer(ephemeral=True, thinking=True)
        await asyncio.to_thread(self.bot.community.set_private, interaction.user.id, on)
        await interaction.edit_original_response(
            content="📬 From now on your results come by DM." if on else "Your results show in the channel again.")

    def _shown(self, job: dict, asker: Owner) -> bool:
        """Whether `asker` may see this job's prompt: their own, or another member's who has not
        asked for privacy (/private on) and did not make it in a DM. Runs in a thread."""
        if (job.get("source"), job.get("user_id")) == asker.key:
            return True
        if job.get("source") != "discord":
            return True
        return job.get("guild_id") is not None and not self.bot.community.is_private(job["user_id"])

    def queue_text(self, owner: Owner) -> str:
        service = self.bot.service
        status = service.status()
        running = status.get("running")
        lines = []
        if running and not self._shown(running, owner):
            lines.append(f"**Now:** a private job, step {running['step']}/{running['total']}")
        elif running:
            lines.append(f"**Now:** “{echo(running['prompt'], 80)}” for {echo(running['owner'], 40)} "
                         f"({running['source']}), step {running['step']}/{running['total']}")
        else:
            lines.append("**Now:** nothing is running.")
        lines.append(f"**Waiting:** {status.get('queued', 0)} job(s).")
        mine = service.handles_of(owner)
        for handle in mine:
            pos = handle.position
            where = "running" if pos is None else f"position {pos}"
            lines.append(f"• yours, {where}: “{echo(handle.request.prompt, 80)}”")
        if not mine:
            lines.append("You have no jobs waiting.")
        return "\n".join(lines)
