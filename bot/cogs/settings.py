"""A member's own defaults for /imagine: `/settings` shows, changes and resets them.

Steps, sampler, aspect and count fill what a member leaves out of /imagine (the server's
defaults and maxima still apply on top); `private` is the same switch as /private. They are
stored in the database (discord_user_prefs, migration 0130), the same in every server.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.making import ASPECT_CHOICES, ASPECT_VALUES, SAMPLER_CHOICES
from bot.community import MemberDefaults
from core.request import COUNT_MAX, STEPS_MAX, FieldError, InvalidRequest, ModelLimits

if TYPE_CHECKING:
    from bot.client import StatuaryBot


def check(steps: int | None, sampler: str | None, aspect: str | None, count: int | None, limits: ModelLimits) -> None:
    """Discord's ranges and choices can be bypassed (an old client, a raw API call): check again.
    A sampler must suit the loaded model (`limits`), as /imagine would require."""
    errors = []
    if steps is not None and not (isinstance(steps, int) and 1 <= steps <= STEPS_MAX):
        errors.append(FieldError("steps", steps, f"use a whole number from 1 to {STEPS_MAX}"))
    if sampler is not None and sampler not in limits.samplers:
        errors.append(FieldError("sampler", sampler, limits.allowed_samplers))
    if aspect is not None and aspect not in ASPECT_VALUES:
        errors.append(FieldError("aspect", aspect, "use one of " + ", ".join(ASPECT_VALUES)))
    if count is not None and not (isinstance(count, int) and 1 <= count <= COUNT_MAX):
        errors.append(FieldError("count", count, f"use a whole number from 1 to {COUNT_MAX}"))
    if errors:
        raise InvalidRequest(errors)


def describe(member: MemberDefaults) -> str:
    """The member's settings in words; what is not set says whose default applies."""
    server = "the server's default"

    def shown(value, unit: str = "") -> str:
        return f"**{value}{unit}**" if value is not None else server

    return "\n".join([
        "⚙️ **Your defaults for /imagine** (options you give /imagine win; the server's maxima still apply)",
        f"• steps: {shown(member.steps)}",
        f"• sampler: {shown(member.sampler)}",
        f"• aspect: {shown(member.aspect)}",
        f"• count: {shown(member.count)}",
        f"• private: **{'on' if member.private else 'off'}** "
        f"(results {'by DM' if member.private else 'in the channel'})",
        "Change one with `/settings steps:30`, or go back to the server's defaults with `/settings reset:True`.",
    ])


class Settings(commands.Cog):
    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    @app_commands.command(name="settings")
    @app_commands.describe(steps="Your default denoising steps", sampler="Your default sampler",
                           aspect="Your default shape", count="Your default number of pictures (1-4)",
                           private="On: your results come by DM only",
                           reset="Forget all your defaults (the server's apply again) and turn private off")
    @app_commands.choices(aspect=ASPECT_CHOICES, sampler=SAMPLER_CHOICES)
    async def settings(self, interaction: discord.Interaction,
                       steps: app_commands.Range[int, 1, STEPS_MAX] | None = None, sampler: str | None = None,
                       aspect: str | None = None, count: app_commands.Range[int, 1, COUNT_MAX] | None = None,
                       private: bool | None = None, reset: bool = False) -> None:
        """Your own defaults for /imagine: shown, changed, or reset (only you see this)"""
        try:
            check(steps, sampler, aspect, count, self.bot.service.limits)
        except InvalidRequest as exc:
            return await self.bot.tell(interaction, f"⚠️ {exc}")
        await interaction.response.defer(ephemeral=True, thinking=True)
        changes = {k: v for k, v in dict(steps=steps, sampler=sampler, aspect=aspect, count=count,
                                         private=private).items() if v is not None}
        uid = interaction.user.id
        community = self.bot.community
        if changes or reset:
            member = await asyncio.to_thread(lambda: community.update_member(uid, reset=reset, **changes))
        else:
            member = await asyncio.to_thread(community.member, uid)
        text = describe(member)
        if reset:
            text = "↩️ Your defaults are reset.\n" + text
        elif changes:
            text = "✅ Saved.\n" + text
        await self.bot.edit_original(interaction, text)
