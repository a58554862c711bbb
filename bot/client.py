"""The Discord bot: slash commands and result buttons, on top of the job service and the store.

    bot = StatuaryBot(service, store)        # dependencies come in through the constructor
    await bot.start(token)                   # bot/runner.py does this in its own thread

Discord's rules shape the code:
- every interaction is acknowledged (deferred) first, well inside Discord's 3 seconds; the
  slow parts (database, queue) run after, in threads, never blocking the event loop;
- an interaction token lives 15 minutes: while it lives the job edits the original response;
  after that (or if the response is gone) the result is a normal channel message that
  mentions the user;
- progress edits are throttled (one per `progress_interval` seconds); HTTP 429 answers are
  left to discord.py, which waits them out;
- attachments are made to fit the upload limit Discord states for the interaction;
- commands are synced once per process (setup_hook), not on every (re)connect.
The bot's clock is injectable (`clock=`) so tests can age an interaction's token.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import io
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Literal

import discord
from discord import app_commands

from bot import render
from bot.buttons import QUERY_MAX, HistoryButton, ResultButton, history_view, result_view
from bot.community import Community, GuildRules
from bot.posts import Post, Posts
from core.jobs import (Cancelled, Done, Failed, JobHandle, JobResult, Owner, Progress, QueueFull, Queued,
                       Started)
from core.request import COUNT_MAX, SAMPLERS, SEED_MAX, STEPS_MAX, GenerationRequest, InvalidRequest

log = logging.getLogger(__name__)

TOKEN_LIFETIME_S = 15 * 60
TOKEN_MARGIN_S = 30  # stop using a token this long before Discord does
SUBTLE, STRONG = 0.2, 0.6  # variation strengths of the V and 'V strong' buttons
DEFAULT_FILESIZE = 10 * 1024 * 1024  # Discord's smallest upload limit
HISTORY_PER_PAGE = 10


def storage_errors() -> tuple[type[Exception], ...]:
    from storage import BadMetadata, NotFound, NotYours

    return NotFound, NotYours, BadMetadata


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


class StatuaryBot(discord.Client):
    def __init__(self, service, store, *, community: Community | None = None, clock: Callable[[], float] = time.time,
                 progress_interval: float = 1.5, sync_commands: bool = True, **options: Any):
        # Slash commands and buttons need no privileged intents; `guilds` (not privileged) keeps
        # discord.py's guild cache, which it expects.
        options.setdefault("intents", discord.Intents(guilds=True))
        options.setdefault("allowed_mentions", discord.AllowedMentions(everyone=False, roles=False, users=True))
        super().__init__(**options)
        self.service = service
        self.store = store
        self.community = community or Community(store.engine)
        self.posts = Posts(store.engine)  # which of our messages show which images
        self._retracting = asyncio.Lock()  # one delete's edits at a time: two deletes in one grid
        self.clock = clock
        self.progress_interval = progress_interval
        self.sync_commands = sync_commands
        self.tree = app_commands.CommandTree(self)
        self.tree.on_error = self._on_tree_error
        self.synced = 0  # how many times commands were synced (once per process)
        self.ready_count = 0
        self._jobs: set[asyncio.Task] = set()
        _add_commands(self)

    # ---- life cycle ---------------------------------------------------------------------------

    async def setup_hook(self) -> None:
        # Runs once per login, not on reconnects: the place for one-time work.
        self.add_dynamic_items(ResultButton, HistoryButton)
        if self.sync_commands and not self.synced:
            await self.tree.sync()
            self.synced += 1

    async def on_ready(self) -> None:
        self.ready_count += 1  # a reconnect fires on_ready again; nothing here must run twice
        log.info("Discord bot ready as %s (ready #%d)", self.user, self.ready_count)
        if self.ready_count == 1 and self.application_id:
            from bot.runner import invite_url

            log.info("Add the bot to a server with %s", invite_url(self.application_id))

    async def close(self) -> None:
        for task in list(self._jobs):
            task.cancel()
        await super().close()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)
        return task

    async def _on_tree_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        log.exception("command %s failed", interaction.command and interaction.command.name, exc_info=error)
        await self._tell(interaction, "Something went wrong on our side; the error is in the bot's log.")

    # ---- helpers --------------------------------------------------------------------------------

    def owner(self, interaction: discord.Interaction) -> Owner:
        user = interaction.user
        return Owner("discord", str(user.id), user.display_name or user.name,
                     None if interaction.guild_id is None else str(interaction.guild_id),
                     None if interaction.channel_id is None else str(interaction.channel_id))

    def token_alive(self, interaction: discord.Interaction) -> bool:
        age = self.clock() - interaction.created_at.timestamp()
        return age < TOKEN_LIFETIME_S - TOKEN_MARGIN_S

    def wants_dm(self, interaction: discord.Interaction) -> bool:
        return interaction.guild_id is not None and self.community.is_private(interaction.user.id)

    async def _tell(self, interaction: discord.Interaction, text: str) -> None:
        """A short private answer, whether or not the interaction was answered yet."""
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException as exc:
            log.warning("could not answer interaction %s: %s", interaction.id, exc)

    async def _refuse(self, interaction: discord.Interaction, text: str) -> None:
        """Take back a deferred 'thinking...' answer and say privately why nothing was queued."""
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            pass
        await self._tell(interaction, text)

    async def _ack(self, interaction: discord.Interaction, *, ephemeral: bool = False) -> bool:
        """Defer at once. False when Discord no longer takes the answer (too late, already answered)."""
        try:
            await interaction.response.defer(thinking=True, ephemeral=ephemeral)
            return True
        except discord.InteractionResponded:
            return True
        except discord.HTTPException as exc:
            log.warning("could not defer interaction %s: %s", interaction.id, exc)
            return False

    # ---- admission: channel, blocked words, per-member limits -----------------------------------------

    def _admit(self, interaction: discord.Interaction, owner: Owner, prompt: str) -> str | None:
        """Why this member may not start a job here now, or None. Runs in a thread (may query)."""
        rules = self.community.guild(interaction.guild_id)
        if interaction.guild_id is not None and not rules.channel_allowed(interaction.channel_id):
            allowed = ", ".join(f"<#{c}>" for c in rules.allowed_channels)
            return f"Pictures are made only in {allowed} on this server."
        word = rules.blocked_word_in(prompt)
        if word is not None:
            return f"This server does not allow “{word}” in prompts. Change the prompt and try again."
        if rules.max_queued is not None:
            mine = len(self.service.handles_of(owner))
            if mine >= rules.max_queued:
                return (f"You have {mine} job{'s' if mine != 1 else ''} waiting or running; this server allows "
                        f"{rules.max_queued} at once. Wait for one to finish, or `/cancel` one.")
        if rules.max_per_hour is not None:
            since = dt.datetime.fromtimestamp(self.clock() - 3600, dt.timezone.utc)
            used = self.community.jobs_since(owner.user_id, owner.guild_id, since)
            if used >= rules.max_per_hour:
                return (f"You have started {used} jobs in the last hour; this server allows "
                        f"{rules.max_per_hour} per hour. Try again a little later.")
        return None

    async def _start(self, interaction: discord.Interaction, prompt: str, submit: Callable[[Owner], JobHandle],
                     header: str) -> None:
        """Acknowledge, check the community's rules, submit, then follow the job to its end."""
        dm = self.wants_dm(interaction)
        if not await self._ack(interaction, ephemeral=dm):
            return
        owner = self.owner(interaction)
        refusal = await asyncio.to_thread(self._admit, interaction, owner, prompt)
        if refusal:
            return await self._refuse(interaction, refusal)
        target = Target(interaction.user, interaction.channel_id, interaction.filesize_limit or DEFAULT_FILESIZE,
                        interaction=interaction)
        if dm:
            try:
                target.message = await interaction.user.send(f"{header}\n⏳ Submitting…")
            except discord.HTTPException:
                return await self._refuse(interaction, "You asked for results by DM (`/private`), but I cannot "
                                                       "message you. Allow DMs from this server or use `/private off`.")
            target.dm, target.channel_id = True, target.message.channel.id
            target.filesize_limit = min(target.filesize_limit, DEFAULT_FILESIZE)
            await self._edit_original(interaction, "📬 Working on it — the result comes by DM.")
        try:
            handle = await asyncio.to_thread(submit, owner)
        except (InvalidRequest, QueueFull, ValueError) as exc:
            return await self._fail_before_start(interaction, target, str(exc))
        except storage_errors() as exc:
            return await self._fail_before_start(interaction, target, str(exc))
        await self._follow(handle, target, header)

    async def _fail_before_start(self, interaction: discord.Interaction, target: Target, text: str) -> None:
        if target.message is not None:
            await self._deliver(target, f"⚠️ {text}", final=True)
            await self._edit_original(interaction, f"⚠️ {text}")
        else:
            await self._refuse(interaction, f"⚠️ {text}")

    # ---- following a job ------------------------------------------------------------------------------

    async def _follow(self, handle: JobHandle, target: Target, header: str) -> None:
        last = -math.inf
        shown_queue = False
        async for event in handle.events():
            now = self.clock()
            if isinstance(event, Queued):
                if not shown_queue or now - last >= self.progress_interval:
                    shown_queue = True
                    await self._deliver(target, f"{header}\n⏳ In the queue: position {event.position}.")
                    last = self.clock()
            elif isinstance(event, Started):
                pass
            elif isinstance(event, Progress):
                if now - last >= self.progress_interval:
                    count = handle.request.count
                    which = f"image {event.image_index + 1} of {count} — " if count > 1 else ""
                    data, name = render.encode_within(render.preview(event.preview), target.filesize_limit, "preview")
                    await self._deliver(target, f"{header}\n🎨 Carving {which}step {event.step}/{event.total}…",
                                        files=[(data, name)])
                    last = self.clock()  # from when the edit landed: a slow (or rate-limited) edit delays the next
            elif isinstance(event, Done):
                await self._finish(target, event.result)
            elif isinstance(event, Failed):
                await self._deliver(target, f"{header}\n❌ The job failed: {event.reason}", final=True)
            elif isinstance(event, Cancelled):
                await self._deliver(target, f"{header}\n🚫 Cancelled.", final=True)

    async def _finish(self, target: Target, result: JobResult) -> None:
        ids = [img.id for img in result.images if img.id]
        content = render.recipe_line(result.request.to_dict(), ids)
        files = await asyncio.to_thread(self._result_files, result, target.filesize_limit)
        message = await self._deliver(target, content, files=files, view=result_view(ids) if ids else None,
                                      final=True)
        await self._remember(message, ids)

    def _result_files(self, result: JobResult, limit: int) -> list[tuple[bytes, str]]:
        if len(result.images) == 1:
            img = result.images[0]
            return [self._image_file(img.path, img.image, img.id or "image", limit)]
        picture = render.grid([img.image for img in result.images])
        stem = "-".join(img.id or str(img.index) for img in result.images)
        return [render.encode_within(picture, limit, stem)]

    @staticmethod
    def _image_file(path: str | Path | None, image, stem: str, limit: int) -> tuple[bytes, str]:
        """The stored PNG as it is (it carries its recipe) when it fits; a smaller encoding when not."""
        if path and Path(path).exists() and Path(path).stat().st_size <= limit:
            return Path(path).read_bytes(), f"{stem}.png"
        if image is None:
            from PIL import Image

            with Image.open(path) as im:
                image = im.copy()
        return render.encode_within(image, limit, stem)

    async def _deliver(self, target: Target, content: str, *, files: list[tuple[bytes, str]] | None = None,
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
            if target.interaction is not None and self.token_alive(target.interaction):
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
        send = {"content": render._clip(mention + content, render.CONTENT_MAX), "files": make_files()}
        if view is not None:
            send["view"] = view
        try:
            if target.dm:
                target.message = await target.user.send(**send)
            else:
                channel = self.get_partial_messageable(target.channel_id)
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

    async def _edit_original(self, interaction: discord.Interaction, content: str) -> None:
        try:
            await interaction.edit_original_response(content=content)
        except discord.HTTPException as exc:
            log.info("could not edit interaction %s: %s", interaction.id, exc)

    # ---- requests ----------------------------------------------------------------------------------------

    def build_request(self, rules: GuildRules, *, prompt: str, negative: str = "", seed: int | None = None,
                      steps: int | None = None, guidance: float = 7.0, aspect: str = "1:1", count: int | None = None,
                      sampler: str | None = None, size: int | None = None) -> GenerationRequest:
        """A request from /imagine's options and the server's defaults; ValueError names what is too much."""
        limits = self.service.limits
        steps = rules.default_steps if steps is None else steps
        count = rules.default_count if count is None else count
        size = size or rules.default_size or limits.native_size
        problems = []
        if steps > rules.max_steps:
            problems.append(f"{steps} steps is more than this server allows ({rules.max_steps})")
        if count > min(rules.max_count, COUNT_MAX):
            problems.append(f"{count} images is more than this server allows ({min(rules.max_count, COUNT_MAX)})")
        max_size = min(rules.max_size or limits.max_side, limits.max_side)
        if size > max_size:
            problems.append(f"size {size} is more than {'this server' if rules.max_size else 'the model'} allows "
                            f"({max_size})")
        if problems:
            raise ValueError("; ".join(problems).capitalize() + ".")
        width, height = render.aspect_size(aspect, limits, size)
        if max(width, height) > max_size:  # a wide aspect's long side may pass the cap
            scale = max_size / max(width, height)
            width, height = render.aspect_size(aspect, limits, int(size * scale))
        request = GenerationRequest(prompt=prompt, negative_prompt=negative or "", seed=seed, count=count,
                                    steps=steps, guidance=guidance, width=width, height=height,
                                    sampler=sampler or GenerationRequest.sampler)
        request.validate(limits)
        return request

    # ---- buttons ------------------------------------------------------------------------------------------

    async def on_result_button(self, interaction: discord.Interaction, action: str, ids: list[str]) -> None:
        if action in ("v", "vs"):
            strength = SUBTLE if action == "v" else STRONG
            await self.vary(interaction, ids[0], strength, None)
        elif action == "rr":
            await self.reroll(interaction, ids)
        elif action == "u":
            await self.upscale(interaction, ids[0])
        elif action == "i":
            await self.info(interaction, ids[0])
        elif action == "t":
            await self.timeline(interaction, ids)
        elif action == "x":
            await self.delete(interaction, ids, from_button=True)

    async def _record(self, interaction: discord.Interaction, image_id: str):
        """The stored image, or None after telling the user why not."""
        try:
            return await asyncio.to_thread(self.store.get, image_id)
        except storage_errors() as exc:
            await self._tell(interaction, f"⚠️ {exc}")
            return None

    async def vary(self, interaction: discord.Interaction, image_id: str, strength: float, seed: int | None) -> None:
        try:
            rec = await asyncio.to_thread(self.store.get, image_id)
        except storage_errors() as exc:
            return await self._tell(interaction, f"⚠️ {exc}")
        header = f"**{render._clip(rec.image_request.get('prompt', ''), 300)}** — variation of `{rec.id}` " \
                 f"(strength {strength:g})"
        await self._start(interaction, rec.image_request.get("prompt", ""),
                          lambda owner: self.store.vary(rec.id, self.service, owner, strength, seed), header)

    async def reproduce(self, interaction: discord.Interaction, image_id: str) -> None:
        try:
            rec = await asyncio.to_thread(self.store.get, image_id)
        except storage_errors() as exc:
            return await self._tell(interaction, f"⚠️ {exc}")
        header = f"**{render._clip(rec.image_request.get('prompt', ''), 300)}** — reproducing `{rec.id}`"
        await self._start(interaction, rec.image_request.get("prompt", ""),
                          lambda owner: self.store.reproduce(rec.id, self.service, owner), header)

    async def reroll(self, interaction: discord.Interaction, ids: list[str]) -> None:
        try:
            request = await asyncio.to_thread(self.store.request_for, ids[0])
        except storage_errors() as exc:
            return await self._tell(interaction, f"⚠️ {exc}")
        request = dataclasses.replace(request, seed=None, count=len(ids), variation_seed=None, variation_strength=0.0)
        header = f"**{render._clip(request.prompt, 300)}** — re-roll"
        await self._start(interaction, request.prompt, lambda owner: self.service.submit(request, owner), header)

    async def upscale(self, interaction: discord.Interaction, image_id: str) -> None:
        """Post one image alone, at full size, with its id and its buttons."""
        if not await self._ack(interaction, ephemeral=self.wants_dm(interaction)):
            return
        try:
            rec = await asyncio.to_thread(self.store.get, image_id)
        except storage_errors() as exc:
            return await self._refuse(interaction, f"⚠️ {exc}")
        limit = interaction.filesize_limit or DEFAULT_FILESIZE
        data, name = await asyncio.to_thread(self._image_file, rec.path, None, rec.id, limit)
        content = render.recipe_line(rec.image_request, [rec.id])
        target = Target(interaction.user, interaction.channel_id, limit, interaction=interaction)
        if self.wants_dm(interaction):
            try:
                message = await interaction.user.send(content, file=discord.File(io.BytesIO(data), filename=name),
                                                      view=result_view([rec.id]))
            except discord.HTTPException:
                return await self._edit_original(interaction, "I cannot DM you; allow DMs or use `/private off`.")
            await self._remember(message, [rec.id])
            return await self._edit_original(interaction, f"📬 Image `{rec.id}` sent by DM.")
        message = await self._deliver(target, content, files=[(data, name)], view=result_view([rec.id]), final=True)
        await self._remember(message, [rec.id])

    async def info(self, interaction: discord.Interaction, image_id: str) -> None:
        rec = await self._record(interaction, image_id)
        if rec is not None:
            await self._tell(interaction, render.recipe_full(rec))

    async def timeline(self, interaction: discord.Interaction, ids: list[str]) -> None:
        """The images emerging from the noise, as animated GIFs (WebP when a GIF is too big)."""
        if not await self._ack(interaction, ephemeral=True):
            return
        limit = interaction.filesize_limit or DEFAULT_FILESIZE

        def files() -> tuple[list[discord.File], list[str]]:
            out, missing = [], []
            for iid in ids:
                try:
                    chosen = None
                    for fmt in ("gif", "webp"):
                        path = self.store.timeline_file(iid, fmt)
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
        if not await self._ack(interaction, ephemeral=True):
            return
        owner = self.owner(interaction)

        def run() -> tuple[list[str], list[str]]:
            done, refused = [], []
            for iid in ids:
                try:
                    self.store.delete(iid, owner)
                    done.append(iid)
                except storage_errors() as exc:
                    if "was deleted" in str(exc):
                        done.append(iid)  # already gone: the message can go too
                    else:
                        refused.append(str(exc))
            return done, refused

        done, refused = await asyncio.to_thread(run)
        handled: set[str] = set()
        if from_button and done and not refused and interaction.message is not None:
            try:
                await interaction.message.delete()
                handled.add(str(interaction.message.id))
            except discord.NotFound:
                handled.add(str(interaction.message.id))
            except discord.HTTPException as exc:  # no Manage Messages in a channel, say
                log.info("could not delete message %s: %s", interaction.message.id, exc)
        if done:
            await self._retract(done, handled=handled)
        lines = []
        if done:
            lines.append("🗑️ Deleted " + " ".join(f"`{i}`" for i in done) + " (picture, files and record).")
        lines += [f"⚠️ {r}" for r in refused]
        await self._edit_original(interaction, "\n".join(lines) or "Nothing to delete.")

    # ---- our posts of an image: remembered when posted, taken down when it is deleted ----------------

    async def _remember(self, message: discord.Message | None, ids: list[str]) -> None:
        """Note that `message` shows `ids`, so a later delete can reach it. Ephemeral answers are not
        noted: only their interaction's token (15 minutes) could ever touch them again."""
        if message is None or not ids or message.flags.ephemeral:
            return
        try:
            await asyncio.to_thread(self.posts.record, message.id, message.channel.id, ids)
        except Exception:  # noqa: BLE001 -- the result is posted; failing to note it must not undo that
            log.exception("could not record message %s as showing %s", message.id, ids)

    async def _retract(self, deleted: list[str], *, handled: frozenset[str] | set[str] = frozenset()) -> None:
        """Take the deleted images off every message of ours that shows them, and forget those rows.
        `handled`: message ids already dealt with (the one whose ❌ was clicked). Never raises."""
        async with self._retracting:
            try:
                posts = await asyncio.to_thread(self.posts.showing, deleted)
            except Exception:  # noqa: BLE001
                log.exception("could not look up the messages showing %s", deleted)
                return
            gone = set(deleted)
            for post in posts.values():
                keep = [i for i in post.image_ids if i not in gone]
                try:
                    if post.message_id in handled:
                        await asyncio.to_thread(self.posts.forget, post.message_id)
                    elif keep:
                        await self._redraw(post, keep, [i for i in post.image_ids if i in gone])
                    else:
                        await self._take_down(post)
                except Exception:  # noqa: BLE001 -- one bad message must not stop the others
                    log.exception("could not take deleted images off message %s", post.message_id)
            try:
                await asyncio.to_thread(self.posts.forget_images, deleted)
            except Exception:  # noqa: BLE001
                log.exception("could not forget the messages of %s", deleted)

    def _message(self, post: Post) -> discord.PartialMessage:
        # By channel, not by interaction token: the token dies after 15 minutes, the message does not.
        return self.get_partial_messageable(int(post.channel_id)).get_partial_message(int(post.message_id))

    async def _take_down(self, post: Post) -> None:
        """Delete a message all of whose images are deleted. Already gone, or not allowed: logged, no more."""
        try:
            await self._message(post).delete()
        except discord.NotFound:
            pass  # deleted by someone already
        except discord.HTTPException as exc:  # no access to the channel any more, say
            # Its rows for images still there stay, so deleting one of those later tries again;
            # the deleted images' rows go anyway (_retract).
            log.info("could not delete message %s in channel %s: %s", post.message_id, post.channel_id, exc)
            return
        await asyncio.to_thread(self.posts.forget, post.message_id)

    async def _redraw(self, post: Post, keep: list[str], deleted: list[str]) -> None:
        """A grid that also shows images still there: edit it to show only those, with their ids and
        buttons, and a note of what was deleted. Deleting one picture of four should not take the
        other three (and their U/V buttons) away from the people using them, and nobody expects a
        'deleted' placeholder to keep showing where a picture was: redrawing the grid without it is
        what a user sees when they delete it, and the note says why the grid shrank."""
        def load() -> tuple[list[str], dict[str, Any] | None, tuple[bytes, str] | None]:
            recs = []
            for iid in keep:
                try:
                    recs.append(self.store.get(iid))
                except storage_errors():
                    pass  # deleted elsewhere (the web UI, say) since: leave it out too
            if not recs:
                return [], None, None
            if len(recs) == 1:
                return [recs[0].id], recs[0].image_request, self._image_file(recs[0].path, None, recs[0].id,
                                                                            DEFAULT_FILESIZE)
            from PIL import Image

            images = []
            for r in recs:
                with Image.open(r.path) as im:
                    images.append(im.convert("RGB"))
            stem = "-".join(r.id for r in recs)
            return [r.id for r in recs], recs[0].image_request, render.encode_within(render.grid(images),
                                                                                   DEFAULT_FILESIZE, stem)

        ids, request, file = await asyncio.to_thread(load)
        if not ids:
            return await self._take_down(post)
        note = "\n🗑️ Deleted by its owner: " + " ".join(f"`{i}`" for i in deleted)
        content = render._clip(render.recipe_line(request, ids) + note, render.CONTENT_MAX)
        data, name = file
        try:
            await self._message(post).edit(content=content, view=result_view(ids),
                                           attachments=[discord.File(io.BytesIO(data), filename=name)])
        except discord.NotFound:
            return await asyncio.to_thread(self.posts.forget, post.message_id)
        except discord.HTTPException as exc:
            # Cannot edit it: a deleted picture must not stay up, so try taking the whole post down.
            log.info("could not edit message %s (%s); deleting it instead", post.message_id, exc)
            return await self._take_down(post)
        await asyncio.to_thread(self.posts.record, post.message_id, post.channel_id, ids)

    # ---- history, queue, cancel ------------------------------------------------------------------------

    def history_page(self, owner: Owner, query: str | None, page: int) -> tuple[str, int, int]:
        """The text of one page of `owner`'s pictures, the page shown (`page` brought within the
        pages there are now: a button may be older than a delete), and the number of pages."""
        result = self.store.history(owner=owner, query=query or None, page=max(1, page), per_page=HISTORY_PER_PAGE)
        if result.total and result.page > result.pages:
            result = self.store.history(owner=owner, query=query or None, page=result.pages,
                                        per_page=HISTORY_PER_PAGE)
        if not result.total:
            return ("No pictures of yours match “%s”." % query) if query else "You have no pictures yet.", 1, 1
        lines = [f"**Your pictures**{f' matching “{query}”' if query else ''} — page {result.page} of "
                 f"{result.pages} ({result.total} images)"]
        for rec in result.items:
            lines.append(f"`{rec.id}` {rec.created:%Y-%m-%d %H:%M} · seed {rec.seed} · "
                         f"{render._clip(rec.image_request.get('prompt', ''), 70)}")
        return render._clip("\n".join(lines), render.CONTENT_MAX), result.page, result.pages

    async def on_history_button(self, interaction: discord.Interaction, page: int, query: str | None) -> None:
        """◀ Newer / Older ▶: that page of the clicker's own pictures, in place of the ephemeral answer."""
        owner = self.owner(interaction)  # whoever clicks sees only their own pictures
        text, page, pages = await asyncio.to_thread(self.history_page, owner, query, page)
        view = history_view(query, page, pages) if pages > 1 else None
        try:
            await interaction.response.edit_message(content=text, view=view)
        except discord.HTTPException as exc:
            log.warning("could not turn a history page: %s", exc)

    def queue_text(self, owner: Owner) -> str:
        status = self.service.status()
        running = status.get("running")
        lines = []
        if running:
            lines.append(f"**Now:** “{render._clip(running['prompt'], 80)}” for {running['owner']} "
                         f"({running['source']}), step {running['step']}/{running['total']}")
        else:
            lines.append("**Now:** nothing is running.")
        lines.append(f"**Waiting:** {status.get('queued', 0)} job(s).")
        mine = self.service.handles_of(owner)
        for handle in mine:
            pos = handle.position
            where = "running" if pos is None else f"position {pos}"
            lines.append(f"• yours, {where}: “{render._clip(handle.request.prompt, 80)}”")
        if not mine:
            lines.append("You have no jobs waiting.")
        return "\n".join(lines)


# ---- the slash commands -------------------------------------------------------------------------------


def _add_commands(bot: StatuaryBot) -> None:
    aspect_choices = [app_commands.Choice(name=label, value=label.split()[0]) for label, _, _ in render.ASPECTS]
    sampler_choices = [app_commands.Choice(name=s, value=s) for s in SAMPLERS]
    tree = bot.tree

    @tree.command(name="imagine")
    @app_commands.describe(
        prompt="What to draw, in a few words", negative="What the picture should not show",
        seed="Number that fixes the noise (same seed + prompt = same picture); random if empty",
        steps="Denoising steps: more is slower and finer", guidance="How closely to follow the prompt (CFG scale)",
        aspect="Shape of the picture", count="How many pictures (a 2×2 grid for four)",
        sampler="Denoising method", size="Picture size: the side of a square of the same area, in pixels")
    @app_commands.choices(aspect=aspect_choices, sampler=sampler_choices)
    async def imagine(interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 1000],
                      negative: app_commands.Range[str, 1, 1000] | None = None,
                      seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
                      steps: app_commands.Range[int, 1, STEPS_MAX] | None = None,
                      guidance: app_commands.Range[float, 0.0, 30.0] = 7.0, aspect: str = "1:1",
                      count: app_commands.Range[int, 1, COUNT_MAX] | None = None, sampler: str | None = None,
                      size: app_commands.Range[int, 64, 4096] | None = None) -> None:
        """Carve a picture out of noise from your prompt"""
        def submit(owner: Owner) -> JobHandle:  # runs in a thread, after the defer
            rules = bot.community.guild(interaction.guild_id)
            request = bot.build_request(rules, prompt=prompt, negative=negative or "", seed=seed, steps=steps,
                                        guidance=guidance, aspect=aspect, count=count, sampler=sampler, size=size)
            return bot.service.submit(request, owner)

        await bot._start(interaction, prompt, submit, f"**{render._clip(prompt, 300)}**")

    @tree.command(name="reproduce")
    @app_commands.describe(id="The image's id (8 characters, shown under every result)")
    async def reproduce(interaction: discord.Interaction, id: str) -> None:
        """Make an image again from its stored recipe: the same pixels"""
        await bot.reproduce(interaction, id)

    @tree.command(name="vary")
    @app_commands.describe(id="The image's id", strength="0.05 = nearly the same picture, 1 = a new one",
                           seed="Variation seed (random if empty)")
    async def vary(interaction: discord.Interaction, id: str,
                   strength: app_commands.Range[float, 0.01, 1.0] = SUBTLE,
                   seed: app_commands.Range[int, 0, SEED_MAX] | None = None) -> None:
        """Variations of an image: its seed, mixed with another"""
        await bot.vary(interaction, id, strength, seed)

    @tree.command(name="info")
    @app_commands.describe(id="The image's id")
    async def info(interaction: discord.Interaction, id: str) -> None:
        """Everything about how an image was made"""
        await bot.info(interaction, id)

    @tree.command(name="history")
    @app_commands.describe(query="Only pictures whose prompt has all these words")
    async def history(interaction: discord.Interaction,
                      query: app_commands.Range[str, 1, QUERY_MAX] | None = None) -> None:
        """Your pictures, newest first (only you see this)"""
        # QUERY_MAX: the paging buttons carry the query in their custom_id, which holds 100 characters.
        await interaction.response.defer(ephemeral=True, thinking=True)
        owner = bot.owner(interaction)
        text, page, pages = await asyncio.to_thread(bot.history_page, owner, query, 1)
        view = history_view(query, page, pages) if pages > 1 else discord.utils.MISSING
        await interaction.edit_original_response(content=text, view=view)

    @tree.command(name="delete")
    @app_commands.describe(id="The id of one of your images")
    async def delete(interaction: discord.Interaction, id: str) -> None:
        """Delete one of your images: its picture, files and record"""
        await bot.delete(interaction, [id])

    @tree.command(name="queue")
    async def queue(interaction: discord.Interaction) -> None:
        """What runs now, and where your jobs are in the queue"""
        await interaction.response.send_message(bot.queue_text(bot.owner(interaction)), ephemeral=True)

    @tree.command(name="cancel")
    @app_commands.describe(all="Cancel every job of yours, not only the newest")
    async def cancel(interaction: discord.Interaction, all: bool = False) -> None:
        """Cancel your newest job that has not finished"""
        handles = bot.service.handles_of(bot.owner(interaction))
        if not handles:
            return await interaction.response.send_message("You have no jobs waiting or running.", ephemeral=True)
        chosen = handles if all else [handles[-1]]
        cancelled = [h for h in chosen if h.cancel()]
        await interaction.response.send_message(
            f"🚫 Cancelled {len(cancelled)} job(s): " + "; ".join(f"“{render._clip(h.request.prompt, 60)}”"
                                                                 for h in cancelled), ephemeral=True)

    @tree.command(name="private")
    @app_commands.describe(on="On: your results come by DM only. Off: in the channel")
    async def private(interaction: discord.Interaction, on: bool) -> None:
        """Get your results by DM instead of in the channel"""
        await interaction.response.defer(ephemeral=True, thinking=True)
        await asyncio.to_thread(bot.community.set_private, interaction.user.id, on)
        await interaction.edit_original_response(
            content="📬 From now on your results come by DM." if on else "Your results show in the channel again.")

    tree.add_command(ServerGroup(bot))


@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class ServerGroup(app_commands.Group, name="server", description="This server's rules for the bot (Manage Server)"):
    def __init__(self, bot: StatuaryBot):
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
