"""The buttons under every result. They are persistent: each button's custom_id names its
action and the image ids it acts on (`statuary:v:k7x2m9qa`), and one DynamicItem class,
registered at start-up, turns any such id back into a button -- so a click on a result
posted before the bot restarted still works.
"""

from __future__ import annotations

import re
from typing import Any

import discord

PREFIX = "statuary"
# action: u = upscale (post alone), v = subtle variation, vs = strong variation, rr = re-roll,
#         i = info, t = timeline, x = delete, e = edit prompt (remix), h = upscale 2x (hires fix)
ACTIONS = ("u", "v", "vs", "rr", "i", "t", "x", "e", "h")
ID_MAX = 32  # the longest id option Discord lets through (ids are 8 characters; room for stray spaces)
TEMPLATE = re.compile(PREFIX + r":(?P<action>u|vs|v|rr|i|t|x|e|h):(?P<ids>[0-9a-z]{1,16}(?:\.[0-9a-z]{1,16}){0,3})")


def custom_id(action: str, ids: list[str]) -> str:
    assert action in ACTIONS and 1 <= len(ids) <= 4
    return f"{PREFIX}:{action}:{'.'.join(ids)}"


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=TEMPLATE):
    """One button of a result; the bot's `on_result_button` does the work."""

    def __init__(self, action: str, ids: list[str], *, label: str | None = None, emoji: str | None = None,
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary, row: int | None = None):
        self.action, self.ids = action, list(ids)
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, row=row,
                                           custom_id=custom_id(action, self.ids)))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "ResultButton":
        return cls(match["action"], match["ids"].split("."), label=item.label,
                   emoji=str(item.emoji) if item.emoji else None, style=item.style)

    async def callback(self, interaction: discord.Interaction) -> Any:
        try:
            await interaction.client.on_result_button(interaction, self.action, self.ids)
        except Exception as exc:  # noqa: BLE001 -- said to the person; discord.py would only log it
            await interaction.client.fault(interaction, exc, f"button {self.action}")


def inpaint_link(public_url: str, image_id: str) -> str:
    """The web UI's Inpaint tab with `image_id` loaded (webui/app.py reads `?inpaint=`)."""
    return f"{public_url.rstrip('/')}/?inpaint={image_id}"


def result_view(ids: list[str], *, public_url: str = "", upscale: bool = False) -> discord.ui.View:
    """U1-U4 and V1-V4 (subtle and strong) for a batch, then re-roll, info, timeline, delete and
    edit prompt. One image also gets Upscale 2x (`upscale`: the model's hires fix is offered)
    and Vary region, a link to the web UI's Inpaint tab (only with a `public_url`)."""
    view = discord.ui.View(timeout=None)
    ids = list(ids)[:4]
    if len(ids) > 1:
        for n, iid in enumerate(ids, 1):
            view.add_item(ResultButton("u", [iid], label=f"U{n}", row=0))
        for n, iid in enumerate(ids, 1):
            view.add_item(ResultButton("v", [iid], label=f"V{n}", row=1))
        for n, iid in enumerate(ids, 1):
            view.add_item(ResultButton("vs", [iid], label=f"V{n} strong", row=2))
        row = 3
    else:
        view.add_item(ResultButton("v", ids, label="Vary (subtle)", row=0))
        view.add_item(ResultButton("vs", ids, label="Vary (strong)", row=0))
        if upscale:
            view.add_item(ResultButton("h", ids, emoji="🔍", label="Upscale 2x", row=0))
        if public_url:
            view.add_item(discord.ui.Button(label="Vary region", emoji="🖌️", url=inpaint_link(public_url, ids[0]),
                                            row=0))
        row = 1
    view.add_item(ResultButton("rr", ids, emoji="🔄", label="Re-roll", row=row))
    view.add_item(ResultButton("i", ids, emoji="ℹ️", label="Info", row=row))
    view.add_item(ResultButton("t", ids, emoji="🎞️", label="Timeline", row=row))
    view.add_item(ResultButton("x", ids, emoji="❌", label="Delete", style=discord.ButtonStyle.danger, row=row))
    view.add_item(ResultButton("e", ids, emoji="✏️", label="Edit prompt", row=row))
    return view


# ---- /history paging --------------------------------------------------------------------------------
# Persistent too: the custom_id carries the page to show and the query (`statuary:h:2:red fox`), so
# the buttons work after the 15-minute token, ten minutes of idling or a restart. It names no user:
# a click shows the *clicker's* own pictures (the answer is ephemeral, so in practice only the one
# who asked can click it), never the pictures of whoever the message was first made for.
HISTORY_TEMPLATE = re.compile(PREFIX + r":h:(?P<page>[0-9]{1,6}):(?P<query>.*)", re.DOTALL)
QUERY_MAX = 100 - len(f"{PREFIX}:h:999999:")  # Discord's custom_id holds 100 characters


def history_custom_id(page: int, query: str | None) -> str:
    query = query or ""
    assert 0 <= page <= 999_999 and len(query) <= QUERY_MAX
    return f"{PREFIX}:h:{page}:{query}"


class HistoryButton(discord.ui.DynamicItem[discord.ui.Button], template=HISTORY_TEMPLATE):
    """◀ Newer / Older ▶ under a /history answer; the bot's `on_history_button` does the work."""

    def __init__(self, page: int, query: str | None, *, label: str | None = None, disabled: bool = False):
        self.page, self.query = page, query or None
        super().__init__(discord.ui.Button(label=label, style=discord.ButtonStyle.secondary, disabled=disabled,
                                           custom_id=history_custom_id(page, query)))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "HistoryButton":
        return cls(int(match["page"]), match["query"], label=item.label, disabled=item.disabled)

    async def callback(self, interaction: discord.Interaction) -> Any:
        try:
            await interaction.client.on_history_button(interaction, self.page, self.query)
        except Exception as exc:  # noqa: BLE001 -- said to the person; discord.py would only log it
            await interaction.client.fault(interaction, exc, "history button")


def history_view(query: str | None, page: int, pages: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(HistoryButton(page - 1, query, label="◀ Newer", disabled=page <= 1))
    view.add_item(HistoryButton(page + 1, query, label="Older ▶", disabled=page >= pages))
    return view
