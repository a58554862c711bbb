"""/words: what the loaded model knows how to draw (the default model's word list), so a member on
Discord can find a subject without the repository's VOCABULARY.md. `/words` lists every subject
by group; `/words search:fox` shows each matching subject with all the words that mean it."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.render import CONTENT_MAX
from bot.text import clip, echo
from core.vocabulary import HOW_TO_ASK, ModelVocabulary

if TYPE_CHECKING:
    from bot.client import StatuaryBot

SEARCH_MAX = 40        # characters of a search
FIELD_MAX = 1024       # Discord's limits on an embed field's value, on fields, and on a message's embeds
FIELDS_MAX = 25
EMBEDS_TEXT_MAX = 6000

NO_LIST = ("This model has no word list: it is a Stable Diffusion checkpoint, not the emoji model, so describe "
           "what you want in your own words.")


class Words(commands.Cog):
    def __init__(self, bot: "StatuaryBot"):
        self.bot = bot

    @app_commands.command(name="words")
    @app_commands.describe(search="Part of a word, e.g. fox or ice: the subjects it finds, with every word for each")
    async def words(self, interaction: discord.Interaction,
                    search: app_commands.Range[str, 1, SEARCH_MAX] | None = None) -> None:
        """The subjects this model knows how to draw"""
        vocab = getattr(self.bot.service, "vocabulary", None)
        if vocab is None:
            return await interaction.response.send_message(NO_LIST, ephemeral=True)
        if search is not None:
            return await interaction.response.send_message(found_text(vocab, search), ephemeral=True)
        text, embed, file = word_list(vocab)
        extra = {"embed": embed} if embed is not None else {"file": file}
        await interaction.response.send_message(text, ephemeral=True, **extra)


def found_text(vocab: ModelVocabulary, search: str) -> str:
    """The subjects with a word starting with `search`, one a line with all its words; or why none."""
    found = vocab.find(search)
    if not found:
        return (f"No subject of this model has a word starting with “{echo(search, SEARCH_MAX)}”. "
                f"`/words` lists all {len(vocab.emoji)}; for example: {', '.join(vocab.subjects[:6])}.")
    n = len(found)
    head = f"**{n} subject{'s' if n > 1 else ''}** with a word starting with “{echo(search, SEARCH_MAX)}”:\n"
    lines, used = [], len(head) + 60
    for e in found:
        if used + len(e.line()) + 1 > CONTENT_MAX:
            lines.append(f"… and {len(found) - len(lines)} more: make the search longer.")
            break
        lines.append(e.line())
        used += len(e.line()) + 1
    return head + "\n".join(lines)


def word_list(vocab: ModelVocabulary) -> tuple[str, discord.Embed | None, discord.File | None]:
    """The whole list: a sentence and an embed of the subjects by group, or, when a larger word list
    would not fit Discord's limits on embeds, the sentence and words.txt (every word of each)."""
    examples = ", ".join(f"`{p}`" for p in vocab.examples(3))
    text = clip(f"This model draws emoji: **{len(vocab.emoji)} subjects**. {HOW_TO_ASK} For example {examples}. "
                "`/words search:fox` shows every word that means a subject.", CONTENT_MAX)
    embed = discord.Embed(title="Subjects this model knows")
    total = len(embed.title)
    for group, subjects in vocab.by_category().items():
        chunks = _chunks([f"{e.char} {e.label}".strip() for e in subjects], FIELD_MAX)
        for k, chunk in enumerate(chunks):
            name = group if len(chunks) == 1 else f"{group} ({k + 1}/{len(chunks)})"
            embed.add_field(name=name, value=chunk, inline=False)
            total += len(name) + len(chunk)
    if total <= EMBEDS_TEXT_MAX and len(embed.fields) <= FIELDS_MAX:
        return text, embed, None
    listing = "\n".join(e.line() for e in vocab.emoji) + "\n"
    return text, None, discord.File(io.BytesIO(listing.encode("utf-8")), filename="words.txt")


def _chunks(items: list[str], most: int) -> list[str]:
    """`items` joined with ', ' into pieces of at most `most` characters."""
    out, cur = [], ""
    for item in items:
        nxt = f"{cur}, {item}" if cur else item
        if len(nxt) > most and cur:
            out.append(cur)
            nxt = item
        cur = nxt
    return out + ([cur] if cur else [])
