"""User text as the bot echoes it back: cut to a short form first, then mentions and markdown
escaped, so a prompt, query, id or name can neither ping anyone nor format the bot's message."""

from __future__ import annotations

from discord.utils import escape_markdown, escape_mentions


def clip(text: object, n: int) -> str:
    """`text` cut to at most `n` characters, an ellipsis marking a cut."""
    text = str(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def echo(text: object, n: int) -> str:
    """`text` cut to `n` characters, then made inert: no mention, no markdown (``||``, ``**``, ...)."""
    return escape_markdown(escape_mentions(clip(text, n)))
