"""Upscale 2x: the button on a single image's post (and on a one-image result), as Midjourney
users expect: the image through the hires fix at twice its size (core/hires.py), with the
model's own hires settings, recorded as the image's child (kind "upscale").

The button is shown only when the model's folder does not say the hires fix fails to help it
(hires.json, "helps": false); a click on an old button then says why instead.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.text import echo

if TYPE_CHECKING:
    from bot.client import StatuaryBot

SCALE = 2.0


class Upscale(commands.Cog):
    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    async def upscale_2x(self, interaction: discord.Interaction, image_id: str) -> None:
        bot = self.bot
        defaults = bot.service.hires_defaults
        if not defaults.helps:
            return await bot.tell(interaction, defaults.refusal)
        making = bot.get_cog("Making")
        if (rec := await making._load(interaction, lambda: bot.store.get(image_id))) is None:
            return
        hires = dataclasses.replace(defaults.hires, scale=SCALE)
        r = rec.image_request
        header = f"**{echo(r.get('prompt', ''), 300)}** — upscaling `{rec.id}` 2x (hires fix)"
        await making.start(interaction, [r.get("prompt", ""), r.get("negative_prompt", "")],
                           lambda owner, quota: bot.store.upscale(rec.id, bot.service, owner, hires, quota=quota),
                           header)
