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
from typing import TYPE_CHECKING, Any, AsyncIterator

import discord

from bot import render
from bot.text import clip
from bot.pending import Owed
from core.jobs import Cancelled, Done, Failed, JobHandle, JobResult, Owner, Progress, Queued, Started
from core.prompts import result_notes

if TYPE_CHECKING:
    from bot.client import StatuaryBot

log = logging.getLogger(__name__)


NOTE_LEAD_S = 60  # a progress message gets its final note this long before its token stops being used
NOTE_CHECK_S = 5.0  # how often a job with no news checks whether that time has come
RESTART_NOTE = "⏸️ The bot restarted while this was being made; the result comes here when it is ready."
EXPIRY_NOTE = ("⏳ Still working. Discord lets me edit this message for 15 minutes only, so the result "
               "will be posted in this channel, mentioning you.")


@dataclasses.dataclass
class Target:
    """Where one job's messages go and how to reach the person who asked."""

    user: Any  # a discord.abc.User, or a Recipient after a restart (an id, a mention and send())
    channel_id: int | None
    filesize_limit: int
    interaction: discord.Interaction | None = None  # edits go to its original response while its token lives
    message: discord.Message | None = None  # or to this message (a DM, or a channel message after expiry)
    dm: bool = False
    gone: bool = False  # the message was deleted: no more progress edits
    shown_final: bool = False  # the result (or the failure) landed: nothing may cover it now
    header: str = ""
    note: str = ""  # a line kept under the result too (e.g. what the default model draws)
    generation_id: str | None = None  # set once submitted: the bot owes it a message (bot/pending.py)
    webhook: discord.Webhook | None = None  # after a restart: the interaction's token, without the interaction
    token_created: float | None = None  # when the interaction (and its token) was made

    def __post_init__(self) -> None:
        if self.interaction is not None and self.token_created is None:
            self.token_created = self.interaction.created_at.timestamp()

    @property
    def has_token(self) -> bool:
        return self.interaction is not None or self.webhook is not None

    async def edit_original(self, **kwargs: Any) -> discord.Message:
        if self.interaction is not None:
            return await self.interaction.edit_original_response(**kwargs)
        return await self.webhook.edit_message("@original", **kwargs)  # type: ignore[arg-type,union-attr]

    def drop_token(self) -> None:
        self.interaction = self.webhook = None


class Recipient:
    """A Discord user known only by id (a job followed again after a restart): mention and DM."""

    def __init__(self, bot: "StatuaryBot", user_id: int):
        self.bot, self.id = bot, int(user_id)

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    async def send(self, content: str | None = None, **kwargs: Any) -> discord.Message:
        channel = await self.bot.create_dm(discord.Object(self.id))
        return await channel.send(content, **kwargs)


class Delivery:
    """Shows a job's progress and result where its Target says. Never raises for Discord's sake."""

    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    async def follow(self, handle: JobHandle, target: Target, header: str) -> None:
        """Show the job's events until its end. Cancelled (the bot is closing): say so in the
        message first; the job itself goes on, and the next start delivers it (bot/pending.py)."""
        try:
            await self._follow(handle, target, header)
        except asyncio.CancelledError:
            # Cancelled after the result landed (during the bookkeeping that follows it): leave it up.
            if (not target.shown_final and not target.gone and target.has_token
                    and self.bot.token_alive_at(target.token_created)):
                try:
                    await asyncio.wait_for(target.edit_original(content=f"{header}\n{RESTART_NOTE}", attachments=[]),
                                           5)
                except (discord.HTTPException, asyncio.TimeoutError):
                    pass
            raise

    async def _events(self, handle: JobHandle, target: Target) -> AsyncIterator[Any]:
        """The job's events; while none comes (a long wait in the queue), check every NOTE_CHECK_S
        whether the token is about to die and the message needs its final note."""
        events = handle.events().__aiter__()
        pending: asyncio.Future | None = None
        try:
            while True:
                pending = pending or asyncio.ensure_future(events.__anext__())
                done, _ = await asyncio.wait({pending}, timeout=NOTE_CHECK_S)
                if not done:
                    await self._note_if_ending(target)
                    continue
                try:
                    event = pending.result()
                except StopAsyncIteration:
                    return
                pending = None
                yield event
        finally:
            if pending is not None:
                pending.cancel()

    async def _note_if_ending(self, target: Target) -> bool:
        """Replace the progress shown through a token about to die with a final note (a progress frame
        would otherwise stay forever); later messages go to the channel. True when it did."""
        if target.message is not None or target.gone or not target.has_token:
            return False
        if not self.bot.token_alive_at(target.token_created) or self.bot.token_alive_at(target.token_created,
                                                                                         NOTE_LEAD_S):
            return False
        try:
            await target.edit_original(content=f"{target.header}\n{EXPIRY_NOTE}", attachments=[])
        except discord.HTTPException as exc:
            log.info("could not leave the note on a job's message: %s", exc)
        await self._drop_token(target)
        return True

    async def _follow(self, handle: JobHandle, target: Target, header: str) -> None:
        bot = self.bot
        target.header = header
        last = -math.inf
        shown_queue = False
        async for event in self._events(handle, target):
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
                    # Progress counts steps over all the job's images (they may run side by side): say so,
                    # rather than pairing one image's number with the whole job's count.
                    count = handle.request.count
                    data, name = await asyncio.to_thread(  # ~30 ms of PNG encoding: not on the event loop
                        lambda: render.encode_within(render.preview(event.preview), target.filesize_limit, "preview"))
                    what = f"{count} pictures — step {event.step} of {event.total} in all" if count > 1 \
                        else f"step {event.step}/{event.total}"
                    await self.deliver(target, f"{header}\n🎨 Carving {what}…", files=[(data, name)])
                    last = bot.clock()  # from when the edit landed: a slow (or rate-limited) edit delays the next
            elif isinstance(event, Done):
                await self.finish(target, event.result)
            elif isinstance(event, Failed):
                await self.deliver(target, f"{header}\n❌ The job failed: {event.reason}", final=True)
            elif isinstance(event, Cancelled):
                await self.deliver(target, f"{header}\n🚫 Cancelled.", final=True)
            if isinstance(event, (Done, Failed, Cancelled)):
                await self.paid(target)

    async def paid(self, target: Target) -> None:
        """The job's final message is shown (or cannot be): the bot owes it nothing more."""
        if target.generation_id is not None:
            try:
                await asyncio.to_thread(self.bot.pending.forget, target.generation_id)
            except Exception:  # noqa: BLE001 -- at worst the next start posts it again
                log.exception("could not forget the delivery of %s", target.generation_id)

    # ---- what the bot owes, across restarts ---------------------------------------------------------

    async def owe(self, handle: JobHandle, target: Target, header: str) -> None:
        """Note that this job's final message is owed (a restart before it would lose it otherwise)."""
        target.header, target.generation_id = header, handle.generation_id
        if handle.generation_id is None:
            return  # a service without a record: nothing to resume from
        message_id = str(target.message.id) if target.message is not None else None
        owed = Owed(handle.generation_id, str(target.user.id), str(target.channel_id), target.dm,
                    target.interaction.token if target.interaction is not None else None, target.token_created,
                    message_id, header, target.filesize_limit)
        try:
            await asyncio.to_thread(self.bot.pending.add, owed)
        except Exception:  # noqa: BLE001 -- the job runs anyway; only a restart would lose its message
            log.exception("could not note the delivery of %s", handle.generation_id)

    async def resume(self) -> None:
        """At start: deliver what finished, failed or was interrupted while the bot was away, and
        follow again what still runs in this process. Never raises."""
        try:
            owed = await asyncio.to_thread(self.bot.pending.all)
        except Exception:  # noqa: BLE001
            return log.exception("could not read the deliveries owed")
        for item in owed:
            try:
                await self._resume_one(item)
            except Exception:  # noqa: BLE001 -- one bad row must not stop the others
                log.exception("could not deliver %s after a restart", item.generation_id)

    async def _resume_one(self, item: Owed) -> None:
        from storage import NotFound

        bot = self.bot
        try:
            gen = await asyncio.to_thread(bot.store.generation, item.generation_id)
        except NotFound:  # its images were deleted meanwhile: nothing to show
            return await asyncio.to_thread(bot.pending.forget, item.generation_id)
        target = Target(Recipient(bot, int(item.user_id)), int(item.channel_id), item.filesize_limit, dm=item.dm,
                        header=item.header, generation_id=item.generation_id, token_created=item.token_created)
        if item.token and bot.application_id:
            target.webhook = discord.Webhook.partial(bot.application_id, item.token, client=bot)
        if item.message_id:
            target.message = bot.get_partial_messageable(int(item.channel_id)).get_partial_message(
                int(item.message_id))
        live = next((h for h in bot.service.handles_of(Owner("discord", item.user_id))
                     if h.generation_id == item.generation_id), None)
        if live is not None:
            return await self.follow(live, target, item.header)
        if gen.status == "done":
            content = render.recipe_line(gen.request, gen.image_ids)
            files = await asyncio.to_thread(self._stored_files, list(gen.image_ids), target.filesize_limit)
            message = await self.deliver(target, content, files=files,
                                         view=self.bot.result_view(list(gen.image_ids)) if gen.image_ids else None,
                                         final=True)
            await bot.retractor.remember(message, list(gen.image_ids))
        elif gen.status in ("failed", "cancelled", "interrupted"):
            why = {"failed": "❌ The job failed", "cancelled": "🚫 Cancelled",
                   "interrupted": "⚠️ The job was interrupted"}[gen.status]
            await self.deliver(target, f"{item.header}\n{why}: {gen.reason or 'no reason was recorded'}", final=True)
        else:
            return  # queued or running in another process: its follower there delivers it
        await self.paid(target)

    def _stored_files(self, ids: list[str], limit: int) -> list[tuple[bytes, str]]:
        recs = [self.bot.store.get(i) for i in ids]
        return [render.stored_files([r.path for r in recs], limit, "-".join(r.id for r in recs))]

    # ---- the result ---------------------------------------------------------------------------------

    async def finish(self, target: Target, result: JobResult) -> None:
        ids = [img.id for img in result.images if img.id]
        content = render.recipe_line(result.request.to_dict(), ids)
        for cut in result_notes(result.fingerprint):  # a prompt cut at the text encoder's window
            content += f"\n✂️ {cut}"
        if target.note:
            content += f"\n{target.note}"
        files = await asyncio.to_thread(self.result_files, result, target.filesize_limit)
        message = await self.deliver(target, content, files=files, view=self.bot.result_view(ids) if ids else None,
                                     final=True)
        await self.bot.retractor.remember(message, ids)

    def result_files(self, result: JobResult, limit: int) -> list[tuple[bytes, str]]:
        if len(result.images) == 1:
            img = result.images[0]
            return [image_file(img.path, img.image, img.id or "image", limit)]
        picture = render.board([img.image for img in result.images])
        stem = "-".join(img.id or str(img.index) for img in result.images)
        return [render.encode_within(picture, limit, stem)]

    async def _drop_token(self, target: Target) -> None:
        target.drop_token()
        if target.generation_id is not None:
            try:
                await asyncio.to_thread(self.bot.pending.drop_token, target.generation_id)
            except Exception:  # noqa: BLE001
                log.exception("could not note that the token of %s is no longer used", target.generation_id)

    async def deliver(self, target: Target, content: str, *, files: list[tuple[bytes, str]] | None = None,
                      view: discord.ui.View | None = None, final: bool = False) -> discord.Message | None:
        """Show `content` (and files) where the job lives; never raises for Discord's sake. Returns the
        message it landed in, or None where it landed nowhere."""
        message = await self._deliver(target, content, files=files, view=view, final=final)
        if final and message is not None:
            target.shown_final = True
        return message

    async def _deliver(self, target: Target, content: str, *, files: list[tuple[bytes, str]] | None,
                       view: discord.ui.View | None, final: bool) -> discord.Message | None:
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
            if not final and await self._note_if_ending(target):
                return None
            if target.has_token and self.bot.token_alive_at(target.token_created):
                target.message = None
                return await target.edit_original(**kwargs)
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
            await self._drop_token(target)  # the token is no longer good
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
    """The stored PNG (it carries its recipe) as the file to post: enlarged when small, re-encoded
    smaller when it does not fit; `image` stands in when the file is gone."""
    if path and Path(path).exists():
        return render.stored_png(path, limit, stem)
    return render.encode_within(render.enlarge(image), limit, stem)
