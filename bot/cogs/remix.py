"""Remix: the ✏️ Edit prompt button under every result opens a Discord modal with the prompt and
negative prompt filled in; submitting makes a new job with the same seed and settings and the
edited words, recorded as a child of the first image (kind "remix").

A modal must be the interaction's first answer (it cannot follow a defer), so the recipe is read
before answering; it is one row by primary key. The modal lives in this process: one opened
before a restart and submitted after it is dropped by discord.py (the member clicks again).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.text import echo
from core.jobs import JobHandle, Owner, Quota
from core.request import PROMPT_MAX_CHARS

if TYPE_CHECKING:
    from bot.client import StatuaryBot

log = logging.getLogger(__name__)

MODAL_TIMEOUT_S = 15 * 60  # as long as Discord keeps the click's token


class RemixModal(discord.ui.Modal):
    """The prompt and negative prompt of a result, to edit; the rest of the recipe stays."""

    def __init__(self, cog: "Remix", ids: list[str], prompt: str, negative: str):
        super().__init__(title="Edit prompt", timeout=MODAL_TIMEOUT_S)
        self.cog, self.ids = cog, list(ids)
        self.prompt = discord.ui.TextInput(label="Prompt", style=discord.TextStyle.paragraph, default=prompt,
                                           max_length=PROMPT_MAX_CHARS, required=True)
        self.negative = discord.ui.TextInput(label="Negative prompt", style=discord.TextStyle.paragraph,
                                             default=negative or None, max_length=PROMPT_MAX_CHARS, required=False)
        self.add_item(self.prompt)
        self.add_item(self.negative)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.remix(interaction, self.ids, self.prompt.value or "", self.negative.value or "")

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await self.cog.bot.fault(interaction, error, "remix modal")


class Remix(commands.Cog):
    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    async def edit_prompt(self, interaction: discord.Interaction, ids: list[str]) -> None:
        """The Edit prompt button: answer with the modal, pre-filled from the stored recipe."""
        from bot.client import storage_errors

        try:
            rec = await asyncio.to_thread(self.bot.store.get, ids[0])
        except storage_errors() as exc:
            return await self.bot.tell(interaction, f"⚠️ {exc}")
        r = rec.image_request
        modal = RemixModal(self, ids, r.get("prompt", ""), r.get("negative_prompt", ""))
        try:
            await interaction.response.send_modal(modal)
        except discord.HTTPException as exc:  # the 3 seconds passed (a very slow database)
            log.warning("could not open the remix modal for %s: %s", interaction.id, exc)

    async def remix(self, interaction: discord.Interaction, ids: list[str], prompt: str, negative: str) -> None:
        """A new job: the recipe of `ids` (same seeds, size, steps, sampler...) with the edited words."""
        bot = self.bot

        def submit(owner: Owner, quota: Quota) -> JobHandle:  # in a thread, after the defer
            request = bot.store.request_for(ids[0])
            request = dataclasses.replace(request, prompt=prompt, negative_prompt=negative, count=len(ids))
            return bot.service.submit(request, owner, parent_id=ids[0], kind="remix", quota=quota)

        header = f"**{echo(prompt, 300)}** — remix of `{ids[0]}`"
        await bot.get_cog("Making").start(interaction, [prompt, negative], submit, header)
