"""Images members attach to /imagine (img2img): checked against the core's limits before anything
is downloaded or queued, then read.

Discord states an attachment's size, content type and (for images) width and height, so a file
too large, too many pixels or not an image is refused from those alone, in the core's words
(core.request: IMAGE_MAX_BYTES, IMAGE_MAX_PIXELS); the downloaded bytes then go through the
request's own validation (a truncated or disguised file is refused there, still before queueing).
"""

from __future__ import annotations

import discord

from core.request import IMAGE_MAX_BYTES, IMAGE_MAX_PIXELS, FieldError, InvalidRequest

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WebP"}


def check(attachment: discord.Attachment) -> None:
    """Raise InvalidRequest when the attachment is plainly not an image the core takes."""
    errors = []
    ctype = (attachment.content_type or "").split(";")[0].strip().lower()
    if ctype not in FORMATS:
        errors.append(FieldError("image", attachment.filename, "attach a PNG, JPEG or WebP picture"))
    elif attachment.size > IMAGE_MAX_BYTES:
        errors.append(FieldError("image", f"a {attachment.size / 2**20:.1f} MiB file",
                                 f"use an image file of at most {IMAGE_MAX_BYTES // 2**20} MiB"))
    elif attachment.width and attachment.height and attachment.width * attachment.height > IMAGE_MAX_PIXELS:
        side = int(IMAGE_MAX_PIXELS ** 0.5)
        errors.append(FieldError("image", f"{attachment.width}x{attachment.height}",
                                 f"use an image of at most {IMAGE_MAX_PIXELS} pixels ({side} x {side})"))
    if errors:
        raise InvalidRequest(errors)


async def read(attachment: discord.Attachment) -> bytes:
    """The attachment's bytes; InvalidRequest when Discord will not give them (expired, deleted)."""
    try:
        data = await attachment.read()
    except (discord.HTTPException, discord.NotFound) as exc:
        raise InvalidRequest([FieldError("image", attachment.filename, "attach it again: Discord did not hand "
                                         f"the file over ({getattr(exc, 'status', 'error')})")]) from exc
    if len(data) > IMAGE_MAX_BYTES:  # the stated size was wrong
        raise InvalidRequest([FieldError("image", data, f"use an image file of at most "
                                                        f"{IMAGE_MAX_BYTES // 2**20} MiB")])
    return data
