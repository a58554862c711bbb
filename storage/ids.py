"""Short image ids: 8 characters people can read aloud and type, safe in URLs and filenames.

The alphabet leaves out 0/o, 1/l/i so a typed id is never ambiguous; 31**8 is about 8.5e11,
so a random id collides with an existing one about once in a billion draws at a million
images. Ids are never reused: a deleted image's id stays taken (see `DeletedId`).
"""

from __future__ import annotations

import secrets

ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
LENGTH = 8


def new_id() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(LENGTH))


def normalize(text: str) -> str | None:
    """The id in canonical form (lower case, no surrounding space), or None if it cannot be one."""
    if not isinstance(text, str):
        return None
    s = text.strip().lower()
    if len(s) != LENGTH or any(c not in ALPHABET for c in s):
        return None
    return s


SHOWN_MAX = 20  # a typed id is echoed at most this long: a message never repeats a pasted essay


def shown(text: object) -> str:
    """A typed id as messages echo it: printable, and cut to SHOWN_MAX characters with its length."""
    s = "".join(c if c.isprintable() else "?" for c in str(text).strip())
    return s if len(s) <= SHOWN_MAX else f"{s[:SHOWN_MAX - 1]}… ({len(s)} characters)"


GENERATION_LENGTH = 12  # generation ids are longer, so one is never taken for an image id


def new_generation_id() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(GENERATION_LENGTH))
