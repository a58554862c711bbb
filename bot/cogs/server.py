"""A server's rules for the bot: the /server command group (channels, limits, blocked words,
defaults), for members with Manage Server only."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.community import GuildRules
from core.request import COUNT_MAX, STEPS_MAX

if TYPE_CHECKING:
    from bot.client import StatuaryBot


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Server(commands.GroupCog, group_name="server", group_description="This server's rules for the bot (Manage Server)"):
    def __init__(self, bot: "StatuaryBot"):
        super().__init__()
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        # default_permissions only hides the command; an admin can re-grant it. Check for real.
        if interaction.guild_id is None or not interaction.permissions.manage_guild:
            await interaction.response.send_message("Only members with **Manage Server** can change these settings.",
                                                    ephemeral=True)
            return False
        return True

    async def _update(self, interaction: discord.Interaction, **changes: Any) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        rules = await asyncio.to_thread(self.bot.community.update_guild, interaction.guild_id,
                                        interaction.user.id, **changes)
        await interaction.edit_original_response(content="✅ Saved.\n" + describe_rules(rules))

    @app_commands.command(name="show")
    async def show(self, interaction: discord.Interaction) -> None:
        """Show this server's settings"""
        rules = await asyncio.to_thread(self.bot.community.guild, interaction.guild_id)
        await interaction.response.send_message(describe_rules(rules), ephemeral=True)

    @app_commands.command(name="channels")
    @app_commands.describe(action="allow: add a channel; disallow: remove it; everywhere: clear the list",
                           channel="The channel (default: this one)")
    async def channels(self, interaction: discord.Interaction,
                       action: Literal["allow", "disallow", "everywhere"],
                       channel: discord.TextChannel | None = None) -> None:
        """Choose the channels where pictures may be made (none listed: everywhere)"""
        cid = str(channel.id if channel else interaction.channel_id)
        current = list(self.bot.community.guild(interaction.guild_id).allowed_channels)
        if action == "allow":
            current = current + [cid] if cid not in current else current
        elif action == "disallow":
            current = [c for c in current if c != cid]
        else:
            current = []
        await self._update(interaction, allowed_channels=current)

    @app_commands.command(name="limits")
    @app_commands.describe(queued="A member's jobs waiting or running at once (0: no limit)",
                           per_hour="A member's jobs per hour (0: no limit)")
    async def limits(self, interaction: discord.Interaction, queued: app_commands.Range[int, 0, 1000] | None = None,
                     per_hour: app_commands.Range[int, 0, 100_000] | None = None) -> None:
        """Per-member limits"""
        changes = {}
        if queued is not None:
            changes["max_queued"] = queued or None
        if per_hour is not None:
            changes["max_per_hour"] = per_hour or None
        await self._update(interaction, **changes)

    @app_commands.command(name="blocked")
    @app_commands.describe(action="add or remove words, or clear the list",
                           words="Words or phrases, separated by commas")
    async def blocked(self, interaction: discord.Interaction, action: Literal["add", "remove", "clear"],
                      words: str = "") -> None:
        """Words that may not appear in prompts"""
        given = [w.strip().lower() for w in words.split(",") if w.strip()]
        current = list(self.bot.community.guild(interaction.guild_id).blocked_words)
        if action == "add":
            current += [w for w in given if w not in current]
        elif action == "remove":
            current = [w for w in current if w not in given]
        else:
            current = []
        await self._update(interaction, blocked_words=current)

    @app_commands.command(name="defaults")
    @app_commands.describe(steps="Default steps (0: reset)", max_steps="Most steps allowed (0: reset)",
                           size="Default size in pixels (0: the model's)", max_size="Largest size (0: the model's)",
                           count="Default number of pictures (0: reset)", max_count="Most pictures per job (0: reset)")
    async def defaults(self, interaction: discord.Interaction,
                       steps: app_commands.Range[int, 0, STEPS_MAX] | None = None,
                       max_steps: app_commands.Range[int, 0, STEPS_MAX] | None = None,
                       size: app_commands.Range[int, 0, 4096] | None = None,
                       max_size: app_commands.Range[int, 0, 4096] | None = None,
                       count: app_commands.Range[int, 0, COUNT_MAX] | None = None,
                       max_count: app_commands.Range[int, 0, COUNT_MAX] | None = None) -> None:
        """Default and maximum steps, size and number of pictures"""
        given = {"default_steps": steps, "max_steps": max_steps, "default_size": size, "max_size": max_size,
                 "default_count": count, "max_count": max_count}
        await self._update(interaction, **{k: (v or None) for k, v in given.items() if v is not None})


def describe_rules(rules: GuildRules) -> str:
    channels = ", ".join(f"<#{c}>" for c in rules.allowed_channels) or "every channel"
    return "\n".join([
        f"**Channels:** {channels}",
        f"**Per member:** {rules.max_queued or 'no limit on'} jobs at once, "
        f"{rules.max_per_hour or 'no limit on'} jobs per hour",
        f"**Blocked words:** {', '.join(rules.blocked_words) or 'none'}",
        f"**Steps:** default {rules.default_steps}, at most {rules.max_steps}",
        f"**Size:** default {rules.default_size or 'the model’s'}, at most {rules.max_size or 'the model’s'}",
        f"**Pictures per job:** default {rules.default_count}, at most {rules.max_count}",
    ])
