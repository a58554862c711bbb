"""Following one job on Discord: where its messages go (Target), throttled progress edits, and
the result -- in the interaction's original response while its token lives, else as a channel
message (or a DM) that mentions the person who asked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.buttons import result_view
from bot.text import clip
from core.jobs import Cancelled, Done, Failed, JobHandle, JobResult, Progress, Queued, Started

if TYPE_CHECKING:
    from bot.client import StatuaryBot

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Target:
    """Where one job's messages go and how to reach the person who asked."""

    user: discord.abc.User
    channel_id: int | None
    filesize_limit: int
    interaction: discord.Interaction | None = None  # edits go to its original response while its token lives
    message: discord.Message | None = None  # or to this message (a DM, or a channel message after expiry)
    dm: bool = False
    gone: bool = False  # the message was deleted: no more progress edits


class Delivery:
    """Shows a job's progress and result where its Target says. Never raises for Discord's sake."""

    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    async def follow(self, handle: JobHandle, target: Target, header: str) -> None:
        bot = self.bot
        last = -math.inf
        shown_queue = False
        async for event in handle.events():
            now = bot.clock()
            if isinstance(event, Queued):
                if not shown_queue or now - last >= bot.progress_interval:
                    shown_queue = True
                    await self.deliver(target, f"{header}\n⏳ In the queue: position {event.position}.")
                    last = bot.clock()
            elif isinstance(event, Started):
                pass
            elif isinstance(event, Progress):
                if now - last >= bot.progress_interval:
                    count = handle.request.count
                    which = f"image {event.image_index + 1} of {count} — " if count > 1 else ""
                    data, name = render.encode_within(render.preview(event.preview), target.filesize_limit, "preview")
                    await self.deliver(target, f"{header}\n🎨 Carving {which}step {event.step}/{event.total}…",
                                       files=[(data, name)])
                    last = bot.clock()  # from when the edit landed: a slow (or rate-limited) edit delays the next
            elif isinstance(event, Done):
                await self.finish(target, event.result)
            elif isinstance(event, Failed):
                await self.deliver(target, f"{header}\n❌ The job failed: {event.reason}", final=True)
            elif isinstance(event, Cancelled):
                await self.deliver(target, f"{header}\n🚫 Cancelled.", final=True)

    async def finish(self, target: Target, result: JobResult) -> None:
        ids = [img.id for img in result.images if img.id]
        content = render.recipe_line(result.request.to_dict(), ids)
        files = await asyncio.to_thread(self.result_files, result, target.filesize_limit)
        message = await self.deliver(target, content, files=files, view=result_view(ids) if ids else None,
                                     final=True)
        await self.bot.retractor.remember(message, ids)

    def result_files(self, result: JobResult, limit: int) -> list[tuple[bytes, str]]:
        if len(result.images) == 1:
            img = result.images[0]
            return [image_file(img.path, img.image, img.id or "image", limit)]
        picture = render.grid([img.image for img in result.images])
        stem = "-".join(img.id or str(img.index) for img in result.images)
        return [render.encode_within(picture, limit, stem)]

    async def deliver(self, target: Target, content: str, *, files: list[tuple[bytes, str]] | None = None,
                      view: discord.ui.View | None = None, final: bool = False) -> discord.Message | None:
        """Show `content` (and files) where the job lives; never raises for Discord's sake. Returns the
        message it landed in, or None where it landed nowhere."""
        if target.gone and not final:
            return None

        def make_files():
            return [discord.File(io.BytesIO(data), filename=name) for data, name in files or []]

        kwargs: dict[str, Any] = {"content": content, "attachments": make_files()}
        if view is not None:
            kwargs["view"] = view
        try:
            if target.message is not None:
                target.message = await target.message.edit(**kwargs)
                return target.message
            if target.interaction is not None and self.bot.token_alive(target.interaction):
                target.message = None
                return await target.interaction.edit_original_response(**kwargs)
        except discord.NotFound:
            log.info("the message of a job was deleted; %s", "posting the result anew" if final else "no more edits")
            target.gone = True
            target.message = None
        except discord.Forbidden as exc:
            log.warning("no permission to edit a job's message: %s", exc)
            target.gone = True
            target.message = None
        except discord.HTTPException as exc:
            if exc.status != 401 and getattr(exc, "code", 0) != 50027:  # 50027: invalid webhook token
                log.warning("could not edit a job's message: %s", exc)
                if not final:
                    return None
            target.interaction = None  # the token is no longer good
        if not final:
            return None
        # The token has expired or the message is gone: a normal message that mentions the user.
        mention = "" if target.dm else f"{target.user.mention} "
        # Only the requester may be pinged, whatever the text holds (a prompt is escaped too).
        send = {"content": clip(mention + content, render.CONTENT_MAX), "files": make_files(),
                "allowed_mentions": discord.AllowedMentions.none() if target.dm
                else discord.AllowedMentions(everyone=False, roles=False, users=[target.user], replied_user=False)}
        if view is not None:
            send["view"] = view
        try:
            if target.dm:
                target.message = await target.user.send(**send)
            else:
                channel = self.bot.get_partial_messageable(target.channel_id)
                target.message = await channel.send(**send)
            return target.message
        except discord.HTTPException as exc:
            log.warning("could not post a result in channel %s: %s; trying a DM", target.channel_id, exc)
        if not target.dm:
            try:
                send["files"] = make_files()
                target.message = await target.user.send(**send)
                return target.message
            except discord.HTTPException as exc:
                log.warning("could not DM user %s either: %s", target.user.id, exc)
        return None


def image_file(path: str | Path | None, image, stem: str, limit: int) -> tuple[bytes, str]:
    """The stored PNG as it is (it carries its recipe) when it fits; a smaller encoding when not."""
    if path and Path(path).exists() and Path(path).stat().st_size <= limit:
        return Path(path).read_bytes(), f"{stem}.png"
    if image is None:
        from PIL import Image

        with Image.open(path) as im:
            image = im.copy()
    return render.encode_within(image, limit, stem)
