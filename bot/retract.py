"""Taking deleted images off Discord: which of the bot's messages show an image is noted when
it is posted (bot/posts.py), and a delete redraws a grid without the image or takes the post down.
"""

from __future__ import annotations

import asyncio
import io
import logging
from typing import TYPE_CHECKING, Any

import discord

from bot import render
from bot.posts import Post
from bot.text import clip

if TYPE_CHECKING:
    from bot.client import StatuaryBot

log = logging.getLogger(__name__)


class Retractor:
    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot
        self._retracting = asyncio.Lock()  # one delete's edits at a time: two deletes in one grid

    async def remember(self, message: discord.Message | None, ids: list[str]) -> None:
        """Note that `message` shows `ids`, so a later delete can reach it. Ephemeral answers are not
        noted: only their interaction's token (15 minutes) could ever touch them again."""
        if message is None or not ids or message.flags.ephemeral:
            return
        try:
            await asyncio.to_thread(self.bot.posts.record, message.id, message.channel.id, ids)
        except Exception:  # noqa: BLE001 -- the result is posted; failing to note it must not undo that
            log.exception("could not record message %s as showing %s", message.id, ids)

    async def retract(self, deleted: list[str], *, handled: frozenset[str] | set[str] = frozenset()) -> None:
        """Take the deleted images off every message of ours that shows them, and forget those rows.
        `handled`: message ids already dealt with (the one whose ❌ was clicked). Never raises."""
        posts_table = self.bot.posts
        async with self._retracting:
            try:
                posts = await asyncio.to_thread(posts_table.showing, deleted)
            except Exception:  # noqa: BLE001
                log.exception("could not look up the messages showing %s", deleted)
                return
            gone = set(deleted)
            for post in posts.values():
                keep = [i for i in post.image_ids if i not in gone]
                try:
                    if post.message_id in handled:
                        await asyncio.to_thread(posts_table.forget, post.message_id)
                    elif keep:
                        await self._redraw(post, keep, [i for i in post.image_ids if i in gone])
                    else:
                        await self._take_down(post)
                except Exception:  # noqa: BLE001 -- one bad message must not stop the others
                    log.exception("could not take deleted images off message %s", post.message_id)
            try:
                await asyncio.to_thread(posts_table.forget_images, deleted)
            except Exception:  # noqa: BLE001
                log.exception("could not forget the messages of %s", deleted)

    def _message(self, post: Post) -> discord.PartialMessage:
        # By channel, not by interaction token: the token dies after 15 minutes, the message does not.
        return self.bot.get_partial_messageable(int(post.channel_id)).get_partial_message(int(post.message_id))

    async def _take_down(self, post: Post) -> None:
        """Delete a message all of whose images are deleted. Already gone, or not allowed: logged, no more."""
        try:
            await self._message(post).delete()
        except discord.NotFound:
            pass  # deleted by someone already
        except discord.HTTPException as exc:  # no access to the channel any more, say
            # Its rows for images still there stay, so deleting one of those later tries again;
            # the deleted images' rows go anyway (retract).
            log.info("could not delete message %s in channel %s: %s", post.message_id, post.channel_id, exc)
            return
        await asyncio.to_thread(self.bot.posts.forget, post.message_id)

    async def _redraw(self, post: Post, keep: list[str], deleted: list[str]) -> None:
        """A grid that also shows images still there: edit it to show only those, with their ids and
        buttons, and a note of what was deleted. Deleting one picture of four should not take the
        other three (and their U/V buttons) away from the people using them, and nobody expects a
        'deleted' placeholder to keep showing where a picture was: redrawing the grid without it is
        what a user sees when they delete it, and the note says why the grid shrank."""
        from bot.client import DEFAULT_FILESIZE, storage_errors

        store = self.bot.store

        def load() -> tuple[list[str], dict[str, Any] | None, tuple[bytes, str] | None]:
            recs = []
            for iid in keep:
                try:
                    recs.append(store.get(iid))
                except storage_errors():
                    pass  # deleted elsewhere (the web UI, say) since: leave it out too
            if not recs:
                return [], None, None
            ids = [r.id for r in recs]
            return ids, recs[0].image_request, render.stored_files([r.path for r in recs], DEFAULT_FILESIZE,
                                                                   "-".join(ids))

        ids, request, file = await asyncio.to_thread(load)
        if not ids:
            return await self._take_down(post)
        note = "\n🗑️ Deleted by its owner: " + " ".join(f"`{i}`" for i in deleted)
        content = clip(render.recipe_line(request, ids) + note, render.CONTENT_MAX)
        data, name = file
        try:
            await self._message(post).edit(content=content, view=self.bot.result_view(ids),
                                           attachments=[discord.File(io.BytesIO(data), filename=name)])
        except discord.NotFound:
            return await asyncio.to_thread(self.bot.posts.forget, post.message_id)
        except discord.HTTPException as exc:
            # Cannot edit it: a deleted picture must not stay up, so try taking the whole post down.
            log.info("could not edit message %s (%s); deleting it instead", post.message_id, exc)
            return await self._take_down(post)
        await asyncio.to_thread(self.bot.posts.record, post.message_id, post.channel_id, ids)
