"""Pictures and text for Discord: aspect ratios to model sizes, the 2x2 grid, small pictures
enlarged for display, attachments that fit the server's upload limit, and the recipe line under
every result. Plain functions, tested alone; user text in them goes through bot.text.echo
(discord.utils' escaping) and nothing else of discord.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Iterable

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from bot.text import clip as _clip
from bot.text import echo
from core.hires import text as hires_text
from core.prompts import result_notes
from core.request import MIN_SIDE, ModelLimits, lora_text

# Offered in /imagine's `aspect` choice, as (label, width part, height part).
ASPECTS: tuple[tuple[str, int, int], ...] = (
    ("1:1 square", 1, 1), ("3:2 landscape", 3, 2), ("2:3 portrait", 2, 3), ("4:3 landscape", 4, 3),
    ("3:4 portrait", 3, 4), ("16:9 wide", 16, 9), ("9:16 tall", 9, 16), ("21:9 cinema", 21, 9),
)
CONTENT_MAX = 2000  # Discord's limit on a message's text
# Discord shows an attachment at its own size (up to about 400 px): a picture whose longer side is
# under this is posted enlarged, so the embedded 64 px model's sprites are not thumbnails.
DISPLAY_SIDE = 256


def aspect_size(aspect: str, limits: ModelLimits, side: int | None = None) -> tuple[int, int]:
    """Width and height for `aspect` ("16:9") with about the area of a `side` x `side` square
    (default: the model's native size), on the model's grid and within its limits."""
    a, b = (int(x) for x in aspect.split()[0].split(":"))
    side = side or limits.native_size
    m = limits.multiple
    w, h = side * math.sqrt(a / b), side * math.sqrt(b / a)
    # Neither side below the smallest size a request takes, nor above the model's largest.
    w, h = (w, h) if min(w, h) >= MIN_SIDE else (w * MIN_SIDE / min(w, h), h * MIN_SIDE / min(w, h))
    if max(w, h) > limits.max_side:
        w, h = w * limits.max_side / max(w, h), h * limits.max_side / max(w, h)

    def snap(x: float) -> int:
        return int(min(limits.max_side // m * m, max(math.ceil(MIN_SIDE / m) * m, round(x / m) * m)))

    return snap(w), snap(h)


def grid(images: list[Image.Image]) -> Image.Image:
    """One image as it is; two side by side; three or four as a 2x2 grid (read left to right)."""
    if len(images) == 1:
        return images[0]
    w = max(im.width for im in images)
    h = max(im.height for im in images)
    cols, rows = (2, 1) if len(images) == 2 else (2, 2)
    out = Image.new("RGB", (cols * w, rows * h), (32, 34, 37))  # Discord's dark grey behind a gap
    for i, im in enumerate(images):
        out.paste(im.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    return out


def display_scale(size: tuple[int, int]) -> int:
    """The whole number a picture of `size` is enlarged by for Discord: the smallest that makes its
    longer side at least DISPLAY_SIDE; 1 for pictures that already are."""
    return max(1, math.ceil(DISPLAY_SIDE / max(size)))


def enlarge(image: Image.Image) -> Image.Image:
    """The picture as Discord should show it: small ones enlarged by display_scale, nearest
    neighbour so the pixels stay crisp (as the web UI shows them); others as they are."""
    k = display_scale(image.size)
    return image if k == 1 else image.resize((image.width * k, image.height * k), Image.Resampling.NEAREST)


def board(images: list[Image.Image]) -> Image.Image:
    """What a result post shows of several images: their grid, enlarged for display."""
    return enlarge(grid(images))


def stored_png(path: str | Path, limit: int, stem: str) -> tuple[bytes, str]:
    """A stored PNG as a file to post: as it is when it is big enough to see and fits `limit`;
    else enlarged for display, keeping its text chunks (the recipe), and when that is too big,
    the smaller encodings of encode_within (which carry no recipe)."""
    path = Path(path)
    if path.stat().st_size <= limit:
        with Image.open(path) as im:
            if display_scale(im.size) == 1:
                return path.read_bytes(), f"{stem}.png"
            text = dict(getattr(im, "text", {}))
            image = enlarge(im.copy())
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)  # iTXt where the value is not Latin-1, as the store wrote it
        buf = io.BytesIO()
        image.save(buf, format="PNG", pnginfo=info, optimize=True)
        if buf.tell() <= limit:
            return buf.getvalue(), f"{stem}.png"
        return encode_within(image, limit, stem)
    with Image.open(path) as im:
        return encode_within(enlarge(im.copy()), limit, stem)


def stored_files(paths: list[str | Path], limit: int, stem: str) -> tuple[bytes, str]:
    """What a post shows of stored images: one PNG as stored_png posts it (its recipe kept), several
    as their board, within `limit` bytes."""
    if len(paths) == 1:
        return stored_png(paths[0], limit, stem)
    images = []
    for p in paths:
        with Image.open(p) as im:
            images.append(im.convert("RGB"))
    return encode_within(board(images), limit, stem)


def preview(image: Image.Image, side: int = 256) -> Image.Image:
    """A denoising preview scaled up to be seen (previews are a few dozen pixels a side)."""
    scale = side / max(image.size)
    if scale <= 1:
        return image
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC)


def encode_within(image: Image.Image, limit: int, stem: str) -> tuple[bytes, str]:
    """The image as a file of at most `limit` bytes, and its file name: PNG when it fits, else
    WebP and JPEG at falling quality, then halved sizes. Raises ValueError if nothing fits."""
    candidate = image
    while True:
        for fmt, kwargs in (("PNG", {"optimize": True}), ("WEBP", {"quality": 90}), ("JPEG", {"quality": 90}),
                            ("WEBP", {"quality": 70}), ("JPEG", {"quality": 70})):
            buf = io.BytesIO()
            im = candidate.convert("RGB") if fmt == "JPEG" else candidate
            im.save(buf, format=fmt, **kwargs)
            if buf.tell() <= limit:
                ext = {"PNG": "png", "WEBP": "webp", "JPEG": "jpg"}[fmt]
                return buf.getvalue(), f"{stem}.{ext}"
        if min(candidate.size) <= 16:
            raise ValueError(f"no encoding of the image fits in {limit} bytes")
        candidate = candidate.resize((max(1, candidate.width // 2), max(1, candidate.height // 2)),
                                     Image.Resampling.LANCZOS)


def recipe_line(request: dict[str, Any], ids: Iterable[str] = ()) -> str:
    """The short recipe under a result: prompt, what decides the pixels, and the image ids."""
    prompt = echo(request.get("prompt", ""), 500)
    parts = [f"**{prompt}**"]
    if request.get("negative_prompt"):
        parts.append(f"not: {echo(request['negative_prompt'], 200)}")
    seed = f"seed {request.get('seed')}"
    if request.get("variation_strength"):
        seed += f" · variation {request.get('variation_seed')} @ {request['variation_strength']:g}"
    parts.append(" · ".join([seed, f"{request.get('steps')} steps", f"guidance {request.get('guidance', 0):g}",
                             str(request.get("sampler")), f"{request.get('width')}×{request.get('height')}"]))
    if request.get("loras"):
        parts.append("LoRA: " + ", ".join(f"{echo(str(e[0]), 60)} {float(e[1]):g}" for e in request["loras"]))
    if request.get("hires"):
        parts.append(f"hires fix {hires_text(request['hires'])}")
    ids = list(ids)
    if ids:
        parts.append("ids: " + " ".join(f"`{i}`" for i in ids))
    return _clip("\n".join(parts), CONTENT_MAX)


def recipe_full(rec: Any) -> str:
    """Everything about one stored image (a storage ImageRecord), for /info and the ℹ button."""
    r = rec.image_request
    fp = rec.fingerprint or {}
    lines = [f"**Image `{rec.id}`** — {rec.kind}, by {echo(rec.owner.display_name or rec.owner.user_id, 80)} "
             f"({rec.owner.source}), {rec.created:%Y-%m-%d %H:%M} UTC",
             f"**Prompt:** {echo(r.get('prompt', ''), 800)}"]
    if r.get("negative_prompt"):
        lines.append(f"**Negative:** {echo(r['negative_prompt'], 400)}")
    lines.append(f"**Seed:** {r.get('seed')}" + (
        f" · **variation seed** {r.get('variation_seed')} at strength {r.get('variation_strength'):g}"
        if r.get("variation_strength") else ""))
    lines.append(f"**Steps:** {r.get('steps')} · **guidance** {r.get('guidance'):g} · **sampler** {r.get('sampler')}"
                 f" · **size** {r.get('width')}×{r.get('height')}")
    if r.get("loras"):
        lines.append(f"**LoRA:** {echo(lora_text(r['loras']) or '', 400)}")
    for cut in result_notes(fp):
        lines.append(f"**Prompt cut:** {cut}")
    if r.get("hires"):
        lines.append(f"**Hires fix:** {hires_text(r['hires'])}")
    model = fp.get("model_id") or ""
    if model or fp.get("model_sha256"):
        lines.append(f"**Model:** {echo(str(model), 100)} (sha256 {str(fp.get('model_sha256', ''))[:12]})")
    if rec.parent_chain:
        lines.append("**From:** " + " ← ".join(f"`{p}`" for p in rec.parent_chain))
    if len(rec.image_ids) > 1:
        lines.append("**Batch:** " + " ".join(f"`{i}`" for i in rec.image_ids))
    lines.append(f"Make it again: `/reproduce id:{rec.id}` · vary it: `/vary id:{rec.id}`")
    return _clip("\n".join(lines), CONTENT_MAX)

