"""Recipes inside PNG files: an A1111-compatible `parameters` text chunk, so existing tools
read our files, and the full per-image request as JSON in a `statuary` chunk.

The embedded recipe is deterministic on purpose: the request that makes exactly this image,
the model's hash and name, and the software version; no ids, timestamps or paths. So a
reproduction writes a byte-identical file, and the file's sha256 names its content.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

from core.request import GenerationRequest, InvalidRequest

CHUNK = "statuary"
A1111_CHUNK = "parameters"
FORMAT = 1  # of the statuary chunk

# Our sampler names -> the names A1111 writes (and reads back).
A1111_SAMPLERS = {
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "dpmpp_2m": "DPM++ 2M",
    "euler": "Euler",
    "euler_a": "Euler a",
    "ddim": "DDIM",
    "unipc": "UniPC",
}


class BadMetadata(ValueError):
    """A file's embedded recipe is missing, unreadable, or has been changed."""


def recipe(request: dict[str, Any], model_sha256: str, model_name: str, software_version: str) -> dict[str, Any]:
    """What goes in the `statuary` chunk for one image: that image's own request (to_dict()
    form), the model, the software version. Nothing that differs between two runs."""
    return {"format": FORMAT, "request": request, "model_sha256": model_sha256,
            "model": model_name, "software_version": software_version}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def a1111_parameters(d: dict[str, Any], model_sha256: str, model_name: str) -> str:
    """The A1111 `parameters` text for a request in to_dict() form: prompt, negative prompt
    line, then 'Key: value, ...'."""
    loras = d.get("loras") or []
    # A1111 reads LoRAs from tags in the prompt, and their file hashes from 'Lora hashes'.
    lines = [d["prompt"] + "".join(f" <lora:{e[0]}:{_num(e[1])}>" for e in loras)]
    if d.get("negative_prompt"):
        lines.append(f"Negative prompt: {d['negative_prompt']}")
    params = [
        ("Steps", str(d["steps"])),
        ("Sampler", A1111_SAMPLERS.get(d["sampler"], d["sampler"])),
        ("CFG scale", _num(d["guidance"])),
        ("Seed", str(d["seed"])),
        ("Size", f"{d['width']}x{d['height']}"),
    ]
    if model_sha256:
        params.append(("Model hash", model_sha256[:10]))
    if model_name:
        params.append(("Model", _quote(model_name)))
    if d.get("variation_strength", 0) > 0:
        params += [("Variation seed", str(d["variation_seed"])),
                   ("Variation seed strength", _num(d["variation_strength"]))]
    if d.get("init_image_sha256"):
        params.append(("Denoising strength", _num(d["strength"])))
    if any(len(e) > 2 and e[2] for e in loras):
        params.append(("Lora hashes", _quote(", ".join(f"{e[0]}: {e[2][:12]}" for e in loras if len(e) > 2))))
    if d.get("hires"):  # A1111's names; its txt2img hires fix calls the second pass's strength 'Denoising strength'
        h = d["hires"]
        if not d.get("init_image_sha256"):
            params.append(("Denoising strength", _num(h["strength"])))
        params += [("Hires upscale", _num(h["scale"])), ("Hires steps", str(h["steps"])),
                   ("Hires upscaler", {"lanczos": "Lanczos", "latent": "Latent"}.get(h["upscaler"], h["upscaler"]))]
        if d.get("init_image_sha256"):
            params.append(("Hires denoising strength", _num(h["strength"])))
    lines.append(", ".join(f"{k}: {v}" for k, v in params))
    return "\n".join(lines)


def _quote(value: str) -> str:
    return json.dumps(value) if any(c in value for c in ',:"\n') else value


# A1111's own pattern for its 'Key: value' list; values with commas are JSON-quoted.
_PARAM = re.compile(r'\s*([\w][\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_a1111(text: str) -> dict[str, str]:
    """Parse A1111 `parameters` text into {'Prompt': ..., 'Negative prompt': ..., 'Steps': '20', ...}."""
    lines = text.strip().split("\n")
    last = lines[-1] if lines else ""
    if len(_PARAM.findall(last)) < 3:  # no parameter line: the whole text is the prompt
        last, lines = "", lines + [""]
    prompt, negative, in_negative = [], [], False
    for line in lines[:-1]:
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].lstrip()
        (negative if in_negative else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for key, value in _PARAM.findall(last):
        value = value.strip()
        if value.startswith('"') and value.endswith('"'):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        out[key.strip()] = value
    return out


def png_info(recipe_: dict[str, Any] | None, parameters: str | None) -> Any:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    if parameters is not None:
        info.add_text(A1111_CHUNK, parameters)  # tEXt, or iTXt when the prompt is not Latin-1
    if recipe_ is not None:
        info.add_text(CHUNK, json.dumps(recipe_, sort_keys=True, ensure_ascii=True, separators=(",", ":")))
    return info


def encode_png(image: Any, recipe_: dict[str, Any] | None, parameters: str | None) -> bytes:
    """The PNG file's bytes. Same pixels and recipe -> same bytes (on one zlib build)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=png_info(recipe_, parameters), compress_level=6)
    return buf.getvalue()


def _subject(source: str | Path | bytes) -> str:
    """How a message names the file: its path, or for bytes (an upload) 'This file'."""
    return "This file" if isinstance(source, (bytes, bytearray)) else str(source)


def _object(name: str) -> str:
    return "this file" if name == "This file" else name


def read_text_chunks(source: str | Path | bytes) -> dict[str, str]:
    """The text chunks of a PNG (tEXt, zTXt, iTXt). Raises BadMetadata on a damaged or non-PNG file."""
    from PIL import Image, UnidentifiedImageError

    name = _subject(source)
    limit = Image.MAX_IMAGE_PIXELS
    too_large = f"{name} is too large a picture to read: Statuary reads pictures of at most {limit:,} pixels."
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as im:
            if limit and im.width * im.height > limit:   # load() would decode every pixel (a PNG bomb)
                raise BadMetadata(too_large)
            if im.format != "PNG":
                return {str(k): str(v) for k, v in (im.info or {}).items() if isinstance(v, str)}
            im.load()  # reads every chunk, checking each CRC
            return {str(k): str(v) for k, v in im.text.items()}
    except (FileNotFoundError, BadMetadata):
        raise
    except Image.DecompressionBombError:   # Pillow's own refusal, at twice the limit
        raise BadMetadata(too_large) from None
    except (UnidentifiedImageError, SyntaxError, OSError, ValueError) as exc:
        raise BadMetadata(f"{name} is not a readable image file.") from exc


def read_recipe(source: str | Path | bytes) -> dict[str, Any]:
    """What the file says about how it was made.

    Returns {'source': 'statuary', 'recipe': {...}, 'parameters': {...}} for our files,
    {'source': 'a1111', 'parameters': {...}} for files with only A1111 text, and raises
    BadMetadata when there is no recipe or the `statuary` chunk is damaged or disagrees with
    the `parameters` text beside it (one of them was edited).
    """
    name = _subject(source)
    chunks = read_text_chunks(source)
    text = chunks.get(A1111_CHUNK)
    if CHUNK not in chunks:
        if text is None:
            raise BadMetadata(f"{name} has no recipe (neither a 'statuary' nor a 'parameters' text chunk).")
        return {"source": "a1111", "parameters": parse_a1111(text)}
    try:
        rec = json.loads(chunks[CHUNK])
        if not isinstance(rec, dict) or rec.get("format") != FORMAT or not isinstance(rec.get("request"), dict):
            raise ValueError("not a statuary recipe object")
        request_without_images(rec["request"]).validate()
    except (ValueError, TypeError, InvalidRequest) as exc:
        raise BadMetadata(f"The 'statuary' recipe in {_object(name)} is damaged or edited ({exc}).") from exc
    if text is not None:
        expected = a1111_parameters(rec["request"], rec.get("model_sha256", ""), rec.get("model", ""))
        if text != expected:
            raise BadMetadata(f"The 'parameters' text and the 'statuary' recipe in {_object(name)} disagree; "
                              "one of them was edited after the file was written.")
    return {"source": "statuary", "recipe": rec, "parameters": parse_a1111(text) if text else None}


def request_without_images(d: dict[str, Any]) -> GenerationRequest:
    """The request a to_dict() describes, minus its init image / mask (their hashes stay in
    `d`; storage loads the bytes). Raises InvalidRequest on unknown fields."""
    return GenerationRequest.from_dict({**d, "init_image_sha256": None, "mask_sha256": None})
