"""Making pictures: /imagine, /reproduce, /vary and the result buttons (U, V, V strong, re-roll),
with the server's rules (channels, blocked words, per-member limits, defaults) checked first.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
from typing import TYPE_CHECKING, Any, Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot import attachments, render
from bot.buttons import ID_MAX
from bot.community import GuildRules, MemberDefaults
from bot.delivery import Target
from bot.text import echo
from core.jobs import JobHandle, Owner, QueueFull, Quota
from core.request import (COUNT_MAX, SAMPLERS, SEED_MAX, STEPS_MAX, FieldError, GenerationRequest, InvalidRequest,
                          parse_lora)

if TYPE_CHECKING:
    from bot.client import StatuaryBot
    from core.request import ModelLimits
    from core.vocabulary import ModelVocabulary

log = logging.getLogger(__name__)

SUBTLE, STRONG = 0.2, 0.6  # variation strengths of the V and 'V strong' buttons
ASPECT_VALUES = tuple(label.split()[0] for label, _, _ in render.ASPECTS)
ASPECT_CHOICES = [app_commands.Choice(name=label, value=label.split()[0]) for label, _, _ in render.ASPECTS]
SIZE_MIN, SIZE_MAX = 64, 4096
SAMPLER_CHOICES = [app_commands.Choice(name=s, value=s) for s in SAMPLERS]   # replaced at start-up (sampler_choices)


def sampler_choices(limits: "ModelLimits") -> list[app_commands.Choice[str]]:
    """The sampler choices of /imagine and /settings for the loaded model: only the samplers that
    suit its noise schedule (ModelLimits.samplers), its default named as such."""
    return [app_commands.Choice(name=f"{s} (this model's default)" if s == limits.default_sampler else s, value=s)
            for s in limits.samplers]


def prompt_description(vocab: "ModelVocabulary") -> str:
    """/imagine's prompt option for a model with a word list: a few of its words (Discord allows 100 characters)."""
    words = list(vocab.subjects[:6])
    while words:
        text = f"What to draw, e.g. {', '.join(words)}, with 3d/flat/cartoon style"
        if len(text) <= 100:
            return text
        words.pop()
    return "What to draw: an emoji subject, with 3d/flat/cartoon style"


def saved_sampler(member: MemberDefaults, limits: "ModelLimits") -> str | None:
    """The member's /settings sampler when it suits the loaded model; None (the model's default)
    when there is none, or when it was saved under a model with another noise schedule."""
    return member.sampler if member.sampler in limits.samplers else None


def unsuited_default_note(member: MemberDefaults, limits: "ModelLimits") -> str:
    """One line when the member's /settings sampler does not suit the loaded model ("" otherwise):
    /imagine then draws with the model's default instead of refusing every command."""
    if member.sampler is None or saved_sampler(member, limits) is not None:
        return ""
    return (f"Your /settings sampler {member.sampler} does not suit this model; it drew with "
            f"{limits.default_sampler}, the model's default.")


def lora_suggestions(catalog: list[dict[str, Any]], current: str, most: int = 25) -> list[app_commands.Choice[str]]:
    """Autocomplete for /imagine's lora option: files whose name holds what was typed before any
    ':weight', with that weight kept; trigger words (when the file names them) in the label."""
    typed, _, weight = (current or "").partition(":")
    out = []
    for item in catalog:
        if typed.strip().lower() not in item["name"].lower():
            continue
        value = f"{item['name']}:{weight.strip()}" if weight.strip() else item["name"]
        words = ", ".join(item.get("trigger_words") or [])
        label = f"{value} — {words}" if words else value
        out.append(app_commands.Choice(name=label[:100], value=value[:100]))
    return out[:most]


class Making(commands.Cog):
    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    # ---- the commands ---------------------------------------------------------------------------

    @app_commands.command(name="imagine")
    @app_commands.describe(
        prompt="What to draw, in a few words", negative="What the picture should not show",
        seed="Number that fixes the noise (same seed + prompt = same picture); random if empty",
        steps="Denoising steps: more is slower and finer", guidance="How closely to follow the prompt (CFG scale); the model's own default if empty",
        aspect="Shape of the picture", count="How many pictures (a 2×2 grid for four)",
        sampler="Denoising method", size="Picture size: the side of a square of the same area, in pixels",
        image="A picture to start from (PNG, JPEG or WebP); its shape is kept unless you give an aspect",
        strength="With an image: how much of it is repainted (0.05 = barely, 1 = all)",
        hires="Hires fix: make it this much larger (1-2), repainted at the larger size",
        lora="A LoRA from the server's folder, as name or name:weight (weight -2 to 2, default 1)")
    @app_commands.choices(aspect=ASPECT_CHOICES, sampler=SAMPLER_CHOICES)
    async def imagine(self, interaction: discord.Interaction, prompt: app_commands.Range[str, 1, 1000],
                      negative: app_commands.Range[str, 1, 1000] | None = None,
                      seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
                      steps: app_commands.Range[int, 1, STEPS_MAX] | None = None,
                      guidance: app_commands.Range[float, 0.0, 30.0] | None = None, aspect: str | None = None,
                      count: app_commands.Range[int, 1, COUNT_MAX] | None = None, sampler: str | None = None,
                      size: app_commands.Range[int, SIZE_MIN, SIZE_MAX] | None = None,
                      image: discord.Attachment | None = None,
                      strength: app_commands.Range[float, 0.05, 1.0] = 0.6,
                      hires: app_commands.Range[float, 1.0, 2.0] | None = None,
                      lora: app_commands.Range[str, 1, 120] | None = None) -> None:
        """Carve a picture out of noise from your prompt"""
        bot = self.bot
        init_image = None
        if image is not None:  # checked before anything is downloaded or queued
            try:
                attachments.check(image)
                if not (isinstance(strength, (int, float)) and 0.05 <= strength <= 1.0):
                    raise InvalidRequest([FieldError("strength", strength, "use a number from 0.05 to 1")])
            except InvalidRequest as exc:
                return await bot.tell(interaction, f"⚠️ {exc}")
            if not await bot.ack(interaction, ephemeral=bot.wants_dm(interaction)):
                return
            try:
                init_image = await attachments.read(image)
            except InvalidRequest as exc:
                return await bot.refuse(interaction, f"⚠️ {exc}")

        def submit(owner: Owner, quota: Quota) -> JobHandle:  # runs in a thread, after the defer
            rules = bot.community.guild(interaction.guild_id)
            request = self.build_request(rules, prompt=prompt, negative=negative or "", seed=seed, steps=steps,
                                         guidance=guidance, aspect=aspect, count=count, sampler=sampler, size=size,
                                         member=bot.community.member(interaction.user.id),
                                         shape=image_shape(init_image), lora=lora)
            if init_image is not None:
                request = dataclasses.replace(request, init_image=init_image, strength=strength)
                request.validate(bot.service.limits)  # the core's image checks, before queueing
            if hires is not None:  # the model's own hires settings at this scale (core/hires.py)
                defaults = bot.service.hires_defaults
                if not defaults.helps:
                    raise ValueError(defaults.refusal)
                request = dataclasses.replace(request, hires=dataclasses.replace(defaults.hires, scale=hires))
            return bot.service.submit(request, owner, quota=quota)

        vocab = getattr(bot.service, "vocabulary", None)
        notes = [f"💡 {vocab.hint('/words')}"] if vocab is not None and not vocab.knows(prompt) else []  # still runs
        if sampler is None and (note := unsuited_default_note(bot.community.member(interaction.user.id),
                                                              bot.service.limits)):
            notes.append(f"💡 {note}")
        await self.start(interaction, [prompt, negative or ""], submit, f"**{echo(prompt, 300)}**", "\n".join(notes))

    @app_commands.command(name="reproduce")
    @app_commands.describe(id="The image's id (8 characters, shown under every result)")
    async def reproduce_command(self, interaction: discord.Interaction, id: app_commands.Range[str, 1, ID_MAX]) -> None:
        """Make an image again from its stored recipe: the same pixels"""
        await self.reproduce(interaction, id)

    @app_commands.command(name="vary")
    @app_commands.describe(id="The image's id", strength="0.05 = nearly the same picture, 1 = a new one",
                           seed="Variation seed (random if empty)")
    async def vary_command(self, interaction: discord.Interaction, id: app_commands.Range[str, 1, ID_MAX],
                           strength: app_commands.Range[float, 0.01, 1.0] = SUBTLE,
                           seed: app_commands.Range[int, 0, SEED_MAX] | None = None) -> None:
        """Variations of an image: its seed, mixed with another"""
        await self.vary(interaction, id, strength, seed)

    # ---- the result buttons -----------------------------------------------------------------------

    async def on_result_button(self, interaction: discord.Interaction, action: str, ids: list[str]) -> None:
        images = self.bot.get_cog("Images")
        if action in ("v", "vs"):
            strength = SUBTLE if action == "v" else STRONG
            await self.vary(interaction, ids[0], strength, None)
        elif action == "rr":
            await self.reroll(interaction, ids)
        elif action == "u":
            await self.upscale(interaction, ids[0])
        elif action == "i":
            await images.info(interaction, ids[0])
        elif action == "t":
            await images.timeline(interaction, ids)
        elif action == "x":
            await images.delete(interaction, ids, from_button=True)
        elif action == "e":
            await self.bot.get_cog("Remix").edit_prompt(interaction, ids)
        elif action == "h":
            await self.bot.get_cog("Upscale").upscale_2x(interaction, ids[0])

    async def _load(self, interaction: discord.Interaction, read: Callable[[], Any]) -> Any:
        """Acknowledge first (the database may be slow), then read; None after saying why not."""
        from bot.client import storage_errors

        if not await self.bot.ack(interaction, ephemeral=self.bot.wants_dm(interaction)):
            return None
        try:
            return await asyncio.to_thread(read)
        except storage_errors() as exc:
            await self.bot.refuse(interaction, f"⚠️ {exc}")
            return None

    async def vary(self, interaction: discord.Interaction, image_id: str, strength: float, seed: int | None) -> None:
        if (rec := await self._load(interaction, lambda: self.bot.store.get(image_id))) is None:
            return
        header = f"**{echo(rec.image_request.get('prompt', ''), 300)}** — variation of `{rec.id}` " \
                 f"(strength {strength:g})"
        await self.start(interaction, _texts(rec.image_request),
                         lambda owner, quota: self.bot.store.vary(rec.id, self.bot.service, owner, strength, seed,
                                                                  quota=quota), header)

    async def reproduce(self, interaction: discord.Interaction, image_id: str) -> None:
        if (rec := await self._load(interaction, lambda: self.bot.store.get(image_id))) is None:
            return
        header = f"**{echo(rec.image_request.get('prompt', ''), 300)}** — reproducing `{rec.id}`"
        await self.start(interaction, _texts(rec.image_request),
                         lambda owner, quota: self.bot.store.reproduce(rec.id, self.bot.service, owner, quota=quota),
                         header)

    async def reroll(self, interaction: discord.Interaction, ids: list[str]) -> None:
        if (request := await self._load(interaction, lambda: self.bot.store.request_for(ids[0]))) is None:
            return
        request = dataclasses.replace(request, seed=None, count=len(ids), variation_seed=None, variation_strength=0.0)
        header = f"**{echo(request.prompt, 300)}** — re-roll"
        await self.start(interaction, [request.prompt, request.negative_prompt],
                         lambda owner, quota: self.bot.service.submit(request, owner, quota=quota), header)

    async def upscale(self, interaction: discord.Interaction, image_id: str) -> None:
        """Post one image alone, at full size, with its id and its buttons."""
        from bot.client import DEFAULT_FILESIZE, storage_errors

        bot = self.bot
        if not await bot.ack(interaction, ephemeral=bot.wants_dm(interaction)):
            return
        try:
            rec = await asyncio.to_thread(bot.store.get, image_id)
        except storage_errors() as exc:
            return await bot.refuse(interaction, f"⚠️ {exc}")
        limit = interaction.filesize_limit or DEFAULT_FILESIZE
        data, name = await asyncio.to_thread(render.stored_png, rec.path, limit, rec.id)
        content = render.recipe_line(rec.image_request, [rec.id])
        target = Target(interaction.user, interaction.channel_id, limit, interaction=interaction)
        if bot.wants_dm(interaction):
            try:
                message = await interaction.user.send(content, file=discord.File(io.BytesIO(data), filename=name),
                                                      view=bot.result_view([rec.id]))
            except discord.HTTPException:
                return await bot.edit_original(interaction, "I cannot DM you; allow DMs or use `/private off`.")
            await bot.retractor.remember(message, [rec.id])
            return await bot.edit_original(interaction, f"📬 Image `{rec.id}` sent by DM.")
        message = await bot.delivery.deliver(target, content, files=[(data, name)], view=bot.result_view([rec.id]),
                                             final=True)
        await bot.retractor.remember(message, [rec.id])

    @imagine.autocomplete("lora")
    async def lora_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        """The LoRA folder's files matching what was typed (a typed :weight is kept)."""
        return await asyncio.to_thread(lora_suggestions, self.bot.service.lora_catalog(), current)

    # ---- admission and submitting ----------------------------------------------------------------------

    def admit(self, interaction: discord.Interaction, *texts: str) -> tuple[str | None, Quota]:
        """Why this member may not start a job here (or None), and the server's per-member Quota,
        which `submit` checks and reserves atomically with the job's record. `texts`: the prompt
        and negative prompt, both checked for blocked words. Runs in a thread."""
        rules = self.bot.community.guild(interaction.guild_id)
        if interaction.guild_id is not None and not rules.channel_allowed(interaction.channel_id):
            allowed = ", ".join(f"<#{c}>" for c in rules.allowed_channels)
            return f"Pictures are made only in {allowed} on this server.", Quota()
        for text in texts:
            word = rules.blocked_word_in(text)
            if word is not None:
                return f"This server does not allow “{word}” in prompts. Change the prompt and try again.", Quota()
        return None, Quota(max_active=rules.max_queued, max_per_hour=rules.max_per_hour)

    async def start(self, interaction: discord.Interaction, texts: list[str],
                    submit: Callable[[Owner, Quota], JobHandle], header: str, note: str = "") -> None:
        """Acknowledge, check the community's rules, submit, then follow the job to its end. `note`:
        one line shown under the header while it runs and under the result."""
        from bot.client import DEFAULT_FILESIZE, storage_errors

        bot = self.bot
        dm = bot.wants_dm(interaction)
        if not await bot.ack(interaction, ephemeral=dm):
            return
        owner = bot.owner(interaction)
        refusal, quota = await asyncio.to_thread(self.admit, interaction, *texts)
        if refusal:
            return await bot.refuse(interaction, refusal)
        target = Target(interaction.user, interaction.channel_id, interaction.filesize_limit or DEFAULT_FILESIZE,
                        interaction=interaction, note=note)
        if note:
            header = f"{header}\n{note}"
        if dm:
            try:
                target.message = await interaction.user.send(f"{header}\n⏳ Submitting…")
            except discord.HTTPException:
                return await bot.refuse(interaction, "You asked for results by DM (`/private`), but I cannot "
                                                     "message you. Allow DMs from this server or use `/private off`.")
            target.dm, target.channel_id = True, target.message.channel.id
            target.filesize_limit = min(target.filesize_limit, DEFAULT_FILESIZE)
            await bot.edit_original(interaction, "📬 Working on it — the result comes by DM.")
        try:
            handle = await asyncio.to_thread(submit, owner, quota)
        except (InvalidRequest, QueueFull, ValueError) as exc:
            return await self._fail_before_start(interaction, target, str(exc))
        except storage_errors() as exc:
            return await self._fail_before_start(interaction, target, str(exc))
        await bot.delivery.owe(handle, target, header)
        bot.spawn(bot.delivery.follow(handle, target, header))  # close() stops following; the job goes on

    async def _fail_before_start(self, interaction: discord.Interaction, target: Target, text: str) -> None:
        if target.message is not None:
            await self.bot.delivery.deliver(target, f"⚠️ {text}", final=True)
            await self.bot.edit_original(interaction, f"⚠️ {text}")
        else:
            await self.bot.refuse(interaction, f"⚠️ {text}")

    def build_request(self, rules: GuildRules, *, prompt: str, negative: str = "", seed: int | None = None,
                      steps: int | None = None, guidance: float | None = None, aspect: str | None = None,
                      count: int | None = None, sampler: str | None = None, size: int | None = None,
                      member: MemberDefaults | None = None,
                      shape: tuple[int, int] | None = None,
                      lora: str | None = None) -> GenerationRequest:
        """A request from /imagine's options, the member's own defaults (/settings) and the server's
        defaults, in that order; ValueError names what is too much. `shape`: an attached picture's
        width and height, kept when no aspect is given."""
        limits = self.bot.service.limits
        member = member or MemberDefaults()
        mine = {k for k, given in (("steps", steps), ("count", count)) if given is None and getattr(member, k)}
        own_shape = aspect is None and shape is not None and min(shape) > 0
        aspect = aspect or member.aspect or "1:1"
        # A /settings sampler saved under another model that does not suit this one: the model's default
        # (unsuited_default_note tells the member); one typed into /imagine is checked below.
        sampler = sampler or saved_sampler(member, limits)
        steps = member.steps if steps is None else steps
        count = member.count if count is None else count
        # Discord's own choices and ranges can be bypassed (an old client, a raw API call): check again.
        errors = []
        if aspect not in ASPECT_VALUES:
            errors.append(FieldError("aspect", aspect, "use one of " + ", ".join(ASPECT_VALUES)))
        if size is not None and not (isinstance(size, int) and SIZE_MIN <= size <= SIZE_MAX):
            errors.append(FieldError("size", size, f"use a whole number from {SIZE_MIN} to {SIZE_MAX}"))
        if errors:
            raise InvalidRequest(errors)
        steps = rules.default_steps if steps is None else steps
        count = rules.default_count if count is None else count
        size = size or rules.default_size or limits.native_size
        problems = []
        yours = " (your /settings default)"
        if steps > rules.max_steps:
            problems.append(f"{steps} steps{yours if 'steps' in mine else ''} is more than this server allows "
                            f"({rules.max_steps})")
        if count > min(rules.max_count, COUNT_MAX):
            problems.append(f"{count} images{yours if 'count' in mine else ''} is more than this server allows "
                            f"({min(rules.max_count, COUNT_MAX)})")
        max_size = min(rules.max_size or limits.max_side, limits.max_side)
        if size > max_size:
            problems.append(f"size {size} is more than {'this server' if rules.max_size else 'the model'} allows "
                            f"({max_size})")
        if problems:
            raise ValueError("; ".join(problems).capitalize() + ".")
        if own_shape:  # the attached picture's shape
            aspect = f"{shape[0]}:{shape[1]}"
        width, height = render.aspect_size(aspect, limits, size)
        if max(width, height) > max_size:  # a wide aspect's long side may pass the cap
            scale = max_size / max(width, height)
            width, height = render.aspect_size(aspect, limits, int(size * scale))
        request = GenerationRequest(prompt=prompt, negative_prompt=negative or "", seed=seed, count=count,
                                    steps=steps, guidance=guidance, width=width, height=height,
                                    sampler=sampler or None,   # None: the model's default
                                    loras=(parse_lora(lora),) if lora else ())
        request.validate(limits)
        return request


def image_shape(data: bytes | None) -> tuple[int, int] | None:
    """An attached picture's width and height (None without one, or when it does not open: the
    request's validation then says why)."""
    if data is None:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 -- any unreadable file: validation refuses it in the core's words
        return None


def _texts(request: dict) -> list[str]:
    """A stored request's prompt and negative prompt: what blocked words are checked in."""
    return [request.get("prompt", ""), request.get("negative_prompt", "")]
