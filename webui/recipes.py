"""What the web UI shows and reads, as plain functions: error messages, recipe text, status
bars, PNG info, masks from the brush layer. No Gradio here, so each is easy to test alone.
"""

from __future__ import annotations

import html
import io
import logging
from typing import Any

from core.hires import text as hires_text
from core.jobs import JobCancelled, JobFailed, QueueFull
from core.prompts import result_notes
from core.request import InvalidRequest, lora_text, variation_text
from core.samplers import LABELS

log = logging.getLogger(__name__)

# What each request field is called on screen (InvalidRequest names fields by their code names).
FIELD_LABELS = {
    "prompt": "Prompt", "negative_prompt": "Negative prompt", "seed": "Seed", "count": "Images",
    "steps": "Steps", "guidance": "Guidance", "width": "Width", "height": "Height", "sampler": "Sampler",
    "variation_seed": "Variation seed", "variation_strength": "Variation strength", "init_image": "Source image",
    "strength": "Strength", "mask": "Mask", "variation_chain": "Earlier variations",
    "page": "Page", "per_page": "Per page", "query": "Search",
    "hires_scale": "Hires scale", "hires_steps": "Hires steps", "hires_strength": "Hires strength",
    "hires_upscaler": "Hires upscaler",
}


def error_message(exc: BaseException) -> str:
    """One readable paragraph for any error a handler meets; never a traceback."""
    from storage import BadMetadata, NotFound, NotYours, db

    if isinstance(exc, InvalidRequest):
        return " ".join(f"{FIELD_LABELS.get(e.field, e.field)}: {str(e).split(': ', 1)[1]}" for e in exc.errors)
    if isinstance(exc, QueueFull):
        return str(exc)
    if isinstance(exc, JobFailed):
        return f"The job failed: {exc.reason}"
    if isinstance(exc, JobCancelled):
        return "Cancelled."
    if isinstance(exc, (NotFound, NotYours, BadMetadata, UserError)):
        return str(exc)
    if db.outage(exc):
        log.error("web UI handler failed: the database cannot be reached", exc_info=exc)
        return f"{db.DATABASE_DOWN} (The details are in the server log.)"
    log.error("web UI handler failed", exc_info=exc)
    return "Something went wrong on our side; the error is in the server's log. Try again."


# ---- sizes ---------------------------------------------------------------------------------------

# The shapes the bot's /imagine offers (bot/render.py ASPECTS; a test keeps the two lists equal).
ASPECTS: tuple[tuple[str, int, int], ...] = (
    ("1:1 square", 1, 1), ("3:2 landscape", 3, 2), ("2:3 portrait", 2, 3), ("4:3 landscape", 4, 3),
    ("3:4 portrait", 3, 4), ("16:9 wide", 16, 9), ("9:16 tall", 9, 16), ("21:9 cinema", 21, 9),
)


def aspect_size(a: int, b: int, limits: Any) -> tuple[int, int]:
    """Width and height of shape a:b with about the area of the model's native square, on its
    grid and within its smallest and largest sides."""
    import math

    w, h = limits.native_size * math.sqrt(a / b), limits.native_size * math.sqrt(b / a)
    if max(w, h) > limits.max_side:
        w, h = w * limits.max_side / max(w, h), h * limits.max_side / max(w, h)
    if min(w, h) < limits.min_side:
        w, h = w * limits.min_side / min(w, h), h * limits.min_side / min(w, h)
    m = limits.multiple
    return limits.fit(round(w / m) * m), limits.fit(round(h / m) * m)


# ---- values moved into range: always said, in the core's words ----------------------------------

# A value each number field cannot take, to ask the core what it does allow (its own sentence).
_IMPOSSIBLE = {"steps": 0, "guidance": -1.0, "width": 1, "height": 1, "count": 0, "variation_strength": -1.0,
               "strength": -1.0}


def allowed_text(field: str, limits: Any = None) -> str:
    """The core's 'use ...' rule for one request field, e.g. 'use a whole number from 1 to 150'."""
    from core.request import GenerationRequest

    extra = {"init_image": png_bytes(_blank())} if field == "strength" else {}  # the rule with a picture
    value = 0.0 if field == "strength" else _IMPOSSIBLE[field]
    try:
        GenerationRequest(prompt="-", **{field: value}, **extra).validate(limits)
    except InvalidRequest as exc:
        return next(e.allowed for e in exc.errors if e.field == field)
    raise AssertionError(f"{field}={value!r} was accepted")


def _blank() -> Any:
    from PIL import Image

    return Image.new("RGB", (8, 8))


def changed_note(label: str, value: Any, allowed: str, new: Any) -> str:
    """The one sentence every tab uses when it moves a value into range."""
    return f"{label}: {_num(value)} is not allowed; {allowed}. It is set to {_num(new)}."


def fit_recipe(fields: dict[str, Any], limits: Any) -> tuple[dict[str, Any], list[str]]:
    """A recipe's size, steps and guidance moved into what the core and this model allow, with
    a sentence for each change (an A1111 file's 512 px on a 64 px model, 200 steps, ...)."""
    from core.request import GUIDANCE_MAX, STEPS_MAX

    out, notes = dict(fields), []
    rules = {"width": limits.fit, "height": limits.fit,
             "steps": lambda v: int(max(1, min(STEPS_MAX, v))),
             "guidance": lambda v: float(max(0.0, min(GUIDANCE_MAX, v)))}
    for key, fit in rules.items():
        value = out.get(key)
        if value is None:
            continue
        try:
            from core.request import GenerationRequest

            GenerationRequest(prompt="-", **{key: value}).validate(limits)
        except InvalidRequest:
            new = fit(value)
            notes.append(changed_note(FIELD_LABELS[key], value, allowed_text(key, limits), new))
            out[key] = new
    return out, notes


def upload_problem(data: bytes) -> str | None:
    """What is wrong with an uploaded picture, by the core's own rules and words; None if nothing.
    Run when the file arrives, so a bad one is refused before anything else happens."""
    from core.request import GenerationRequest

    try:
        GenerationRequest(prompt="-", init_image=bytes(data), strength=0.5).validate()
    except InvalidRequest as exc:
        return error_message(InvalidRequest([e for e in exc.errors if e.field == "init_image"] or exc.errors))
    return None


class UserError(ValueError):
    """Something the person can fix (no mask painted, no source chosen); the message says what."""


# ---- status box -------------------------------------------------------------------------------


def status_html(text: str, fraction: float | None = None, kind: str = "info") -> str:
    """The status line of a tab: a message and, while a job runs, a progress bar. Nothing at all
    (not an empty bordered box) when there is nothing to say."""
    if not text and fraction is None:
        return ""
    bar = ""
    if fraction is not None:
        pct = max(0.0, min(1.0, fraction)) * 100
        bar = (f'<div class="st-bar" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
               f'aria-valuenow="{pct:.0f}"><div style="width:{pct:.1f}%"></div></div>')
    role = ' role="alert"' if kind == "error" else ""
    return f'<div class="st-status st-{kind}"{role}><span class="st-msg">{html.escape(text)}</span>{bar}</div>'


def error_html(exc: BaseException) -> str:
    if isinstance(exc, JobCancelled):
        return status_html("Cancelled.", None, "info")
    return status_html(error_message(exc), None, "error")


# ---- recipes -------------------------------------------------------------------------------------


def _num(x: Any) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def recipe_rows(d: dict[str, Any]) -> list[tuple[str, str]]:
    """A request (to_dict() form) as (label, value) rows, leaving out what does not apply."""
    rows = [("Prompt", d.get("prompt") or "")]
    if d.get("negative_prompt"):
        rows.append(("Negative prompt", d["negative_prompt"]))
    rows.append(("Seed", str(d.get("seed"))))
    variations = variation_text(d)
    if variations:
        rows.append(("Variation" if ", then " not in variations else "Variations", variations))
    rows += [
        ("Steps", str(d.get("steps"))),
        ("Guidance", _num(d.get("guidance"))),
        ("Size", f"{d.get('width')} × {d.get('height')}"),
        ("Sampler", LABELS.get(d.get("sampler"), str(d.get("sampler")))),
    ]
    loras = lora_text(d.get("loras"))
    if loras:
        rows.append(("LoRA", loras))
    if (d.get("count") or 1) > 1:
        rows.append(("Images", str(d["count"])))
    if d.get("init_image_sha256"):
        what = "inpaint" if d.get("mask_sha256") else "img2img"
        rows.append(("Source", f"{what} from image sha256 {d['init_image_sha256'][:12]}…, strength {_num(d.get('strength'))}"))
    if d.get("hires"):
        rows.append(("Hires fix", hires_text(d["hires"])))
    return rows


def rows_markdown(rows: list[tuple[str, str]]) -> str:
    """Rows as a compact two-column HTML table (Markdown tables need a header row we do not want)."""
    def cell(v: str) -> str:
        return html.escape(v).replace("\n", "<br>")

    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{cell(v)}</td></tr>" for k, v in rows)
    return f'<table class="st-recipe">{body}</table>'


def record_markdown(rec: Any) -> str:
    """Everything about one stored image: id, owner, parents, recipe, model."""
    owner = rec.owner.display_name or rec.owner.user_id
    lines = [f"### Image `{rec.id}`",
             f"by **{html.escape(owner)}** ({rec.owner.source}) · {rec.kind} · "
             f"{rec.created.strftime('%Y-%m-%d %H:%M')} UTC · {rec.width}×{rec.height}"]
    if rec.parent_chain:
        lines.append("Parents: " + " ← ".join(f"`{p}`" for p in rec.parent_chain))
    model = rec.fingerprint.get("model_id", "")
    model = str(model).rstrip("/").split("/")[-1]
    rows = recipe_rows(rec.image_request)
    rows.append(("Model", f"{model} ({str(rec.fingerprint.get('model_sha256', ''))[:10]})"))
    for note in result_notes(rec.fingerprint):
        rows.append(("Prompt cut", note))
    return "\n\n".join(lines) + "\n\n" + rows_markdown(rows)


# ---- PNG info ------------------------------------------------------------------------------------

# How a message names where a file's recipe comes from (png_fields' first value).
RECIPE_KINDS = {"statuary": "a Statuary", "a1111": "an AUTOMATIC1111"}

# A1111's sampler names back to ours.
_A1111_TO_OURS = {label: name for name, label in LABELS.items()}


def png_fields(data: bytes) -> tuple[str, dict[str, Any], str]:
    """Read a PNG's recipe: (source 'statuary'|'a1111', Generate-tab fields, markdown to show).
    Raises BadMetadata when the file has no readable recipe."""
    from storage import read_recipe

    info = read_recipe(bytes(data))
    if info["source"] == "statuary":
        rec = info["recipe"]
        d = dict(rec["request"])
        fields = {k: d.get(k) for k in ("prompt", "negative_prompt", "seed", "steps", "guidance", "width", "height",
                                         "sampler", "variation_seed", "variation_strength", "variation_chain",
                                         "hires", "loras")}
        rows = recipe_rows(d) + [("Model", f"{rec.get('model', '')} ({str(rec.get('model_sha256', ''))[:10]})"),
                                 ("Software", f"statuary {rec.get('software_version', '')}")]
        return "statuary", fields, "**A Statuary image.** Its full recipe:\n\n" + rows_markdown(rows)
    p = info["parameters"]
    fields: dict[str, Any] = {"prompt": p.get("Prompt", ""), "negative_prompt": p.get("Negative prompt", "")}
    for key, name, conv in (("Steps", "steps", int), ("CFG scale", "guidance", float), ("Seed", "seed", int),
                            ("Variation seed", "variation_seed", int),
                            ("Variation seed strength", "variation_strength", float)):
        try:
            fields[name] = conv(p[key])
        except (KeyError, ValueError):
            pass
    if "Size" in p:
        try:
            w, h = (int(v) for v in p["Size"].lower().split("x"))
            fields.update(width=w, height=h)
        except ValueError:
            pass
    if p.get("Sampler") in _A1111_TO_OURS:
        fields["sampler"] = _A1111_TO_OURS[p["Sampler"]]
    note = ""
    if p.get("Hires upscale"):
        fields["hires"], note = a1111_hires(p)
    rows = [(k, str(v)) for k, v in p.items() if v not in ("", None)]
    return "a1111", fields, "**An AUTOMATIC1111-style image.** Its parameters:\n\n" + rows_markdown(rows) + note


def a1111_hires(p: dict[str, str]) -> tuple[dict[str, Any] | None, str]:
    """A1111's hires fix parameters as a recipe's `hires` (None when they do not parse), and a
    sentence when its upscaler is not one of ours (ESRGAN and such: Lanczos stands in)."""
    given = p.get("Hires upscaler", "Latent")
    try:
        hires = {"scale": float(p["Hires upscale"]), "steps": int(p.get("Hires steps") or 0) or None,
                 "strength": float(p.get("Denoising strength", 0.5)),
                 "upscaler": "latent" if given.lower().startswith("latent") else "lanczos"}
    except (KeyError, ValueError):
        return None, ""
    if given.lower() != "lanczos" and not given.lower().startswith("latent"):
        return hires, f"\n\nIts hires upscaler {html.escape(given)} is not available here; Lanczos stands in."
    return hires, ""


# ---- images --------------------------------------------------------------------------------------


def png_bytes(image: Any) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def mask_from_layers(layers: list[Any] | None, size: tuple[int, int]) -> bytes | None:
    """The inpainting mask (white = repaint) from the editor's brush layers: every pixel any
    stroke touched. None when nothing was painted."""
    from PIL import Image, ImageChops

    mask = None
    for layer in layers or []:
        if layer is None:
            continue
        if not isinstance(layer, Image.Image):
            layer = Image.open(layer) if isinstance(layer, str) else Image.fromarray(layer)
        alpha = layer.getchannel("A") if layer.mode in ("RGBA", "LA") else layer.convert("L")
        alpha = alpha.point(lambda v: 255 if v > 0 else 0)
        mask = alpha if mask is None else ImageChops.lighter(mask, alpha)
    if mask is None or mask.getbbox() is None:
        return None
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    return png_bytes(mask.convert("L"))
