"""The generation request: every field a front-end may set, validated in one place.

A request is a frozen value. `validate` checks every field and raises one `InvalidRequest`
naming each bad field, its value and what is allowed; nothing is queued before it passes.
`resolve` then fills what the user left open (a random seed, the model's native size and
guidance) so the stored request always says exactly what ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import re
import secrets
import unicodedata
from typing import Any

from core.hires import Hires
from core.hires import check as check_hires
from core.hires import from_value as hires_from_value
from core.hires import to_value as hires_to_value
from core.model_defaults import DEFAULT_GUIDANCE
from core.prompts import DEFAULT_SYNTAX, SYNTAXES
from core.prompts import check as check_prompt_weights

SEED_MAX = 2**32 - 1
PROMPT_MAX_CHARS = 1000
STEPS_MAX = 150
GUIDANCE_MAX = 30.0
COUNT_MAX = 4
MIN_SIDE = 64  # the smallest side for a model that can go this low (see ModelLimits.min_side)
VARIATION_CHAIN_MAX = 64  # earlier variations a request may carry (each costs one noise draw)
IMAGE_MAX_BYTES = 20 * 1024 * 1024
IMAGE_MAX_PIXELS = 4096 * 4096
# Pillow modes an init image or mask may have: 8-bit ones, and 16-bit greyscale (scaled to 8 bits).
# 32-bit integer and float pictures have no agreed white point, so they are refused by name.
IMAGE_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr",
               "I;16", "I;16L", "I;16B", "I;16N")

# LoRA: files in STATUARY_LORA_DIR named by their stem, in the prompt as <lora:name:weight> or listed.
LORA_MAX = 4
LORA_WEIGHT_MIN, LORA_WEIGHT_MAX = -2.0, 2.0
LORA_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_ .+-]{0,99}")
LORA_TAG = re.compile(r"\s*<lora:([^:<>]*)(?::([^<>]*))?>", re.IGNORECASE)
LORA_ALLOWED = (f"give at most {LORA_MAX} LoRAs, each a file name from the LoRA folder (letters, digits, "
                f"space, _ . + -) with a weight from {LORA_WEIGHT_MIN:g} to {LORA_WEIGHT_MAX:g}, "
                "as <lora:name:0.8> in the prompt or name:weight")

# Sampler names users type; core.samplers maps each to a diffusers scheduler.
SAMPLERS = ("dpmpp_2m_karras", "dpmpp_2m", "euler", "euler_a", "ddim", "unipc")
DEFAULT_SAMPLER = "dpmpp_2m_karras"


@dataclasses.dataclass(frozen=True)
class ModelLimits:
    """What the loaded model accepts: sizes are multiples of `multiple`, sides from `min_side`
    to `max_side`. The one place every front-end (web UI, API, CLI, reproduce) takes its size
    range and the sentence that states it from."""

    native_size: int = 512
    max_side: int = 1024
    multiple: int = 8
    # The samplers that suit the model's noise schedule, and the one a request that names none
    # gets (core/samplers.suited: Karras spacing is left out where sigma runs to thousands).
    samplers: tuple[str, ...] = SAMPLERS
    default_sampler: str = DEFAULT_SAMPLER
    # The guidance a request that gives none gets: what the model's folder says suits it
    # (defaults.json, core/model_defaults.py), else DEFAULT_GUIDANCE.
    default_guidance: float = DEFAULT_GUIDANCE

    def __post_init__(self) -> None:
        object.__setattr__(self, "samplers", tuple(self.samplers))   # JSON (a worker's announcement) gives a list

    @property
    def allowed_samplers(self) -> str:
        text = "use one of " + ", ".join(self.samplers)
        left_out = [s for s in SAMPLERS if s not in self.samplers]
        if left_out:
            text += f" ({', '.join(left_out)}: Karras spacing does not suit this model's noise schedule)"
        return text

    @property
    def min_side(self) -> int:
        """MIN_SIDE, or less for a model whose native size or largest side is that small, so
        its own native size is always allowed and there is always a range to choose from."""
        low = min(MIN_SIDE, self.native_size, self.max_side // 2)
        return max(self.multiple, low // self.multiple * self.multiple)

    @property
    def allowed_sizes(self) -> str:
        return f"use a multiple of {self.multiple} from {self.min_side} to {self.max_side}"

    def allows(self, side: Any) -> bool:
        return _is_int(side) and self.min_side <= side <= self.max_side and side % self.multiple == 0

    def fit(self, side: int) -> int:
        """The allowed side nearest below `side` (or the smallest allowed one)."""
        m = self.multiple
        return int(max(self.min_side, min(self.max_side // m * m, int(side) // m * m)))


# validate() without a model: only what no model could take is refused (the model's own limits
# are checked again at submit).
ANY_MODEL = ModelLimits(native_size=8, max_side=4096, multiple=8)


@dataclasses.dataclass(frozen=True)
class FieldError:
    field: str
    value: Any
    allowed: str

    def __str__(self) -> str:
        value = self.value
        if isinstance(value, Described):
            shown = str(value)
        elif isinstance(value, (bytes, bytearray)):
            shown = f"a {len(value)}-byte file"
        else:
            shown = repr(value[:37] + "..." if isinstance(value, str) and len(value) > 40 else value)
        return f"{self.field}: {shown} is not allowed; {self.allowed}."


class Described(str):
    """A value a `FieldError` describes in words instead of showing it (too long, or unprintable):
    "a text of 1600 characters", shown as it is, not quoted."""


class InvalidRequest(ValueError):
    """One or more fields of a request are bad. `errors` lists each; str() reads as a sentence per field."""

    def __init__(self, errors: list[FieldError]):
        self.errors = list(errors)
        super().__init__(" ".join(str(e) for e in self.errors))


@dataclasses.dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    seed: int | None = None  # None: a random seed, chosen and recorded at submit
    count: int = 1
    steps: int = 20
    guidance: float | None = None  # None: the model's default (ModelLimits.default_guidance), recorded at submit
    width: int | None = None  # None: the model's native size
    height: int | None = None
    sampler: str | None = None  # None: the model's default (ModelLimits.default_sampler), recorded at submit
    variation_seed: int | None = None  # None with strength > 0: a random one, recorded
    variation_strength: float = 0.0
    # Earlier variations this one builds on, oldest first: (variation seed, strength) pairs
    # mixed into the seed's noise before this request's own variation. A walk (vary, pick one,
    # vary that) keeps every step, so a variation of a variation is reproduced exactly.
    variation_chain: tuple[tuple[int, float], ...] = ()
    init_image: bytes | None = None  # encoded image file (PNG, JPEG, WebP); resized to width x height
    strength: float = 0.75  # img2img / inpaint: how much of the init image is re-noised
    mask: bytes | None = None  # white = repaint, black = keep; same size as init_image
    # How the prompts are read (core/prompts.py): "a1111" weights (word:1.3), (word), [word] and
    # BREAK, and encodes long prompts in chunks; "plain" (every recipe made before) reads the
    # words as written, cut at the text encoder's window.
    prompt_syntax: str = DEFAULT_SYNTAX
    # LoRAs (core/lora.py): (name, weight) pairs; resolve() adds the prompt's <lora:name:w> tags
    # and the service adds each file's sha256, so a stored request is (name, weight, sha256).
    loras: tuple[tuple[Any, ...], ...] = ()
    hires: Hires | None = None  # the hires fix: a second, larger pass (core/hires.py); None: off

    def __post_init__(self) -> None:
        object.__setattr__(self, "hires", hires_from_value(self.hires))  # JSON gives a dict
        # JSON gives lists: hold the chain as tuples, so requests stay hashable and comparable.
        for name in ("variation_chain", "loras"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) for p in value):
                object.__setattr__(self, name, tuple(tuple(p) for p in value))

    # ---- validation ---------------------------------------------------------------------

    def validate(self, limits: ModelLimits | None = None) -> None:
        """Raise InvalidRequest listing every bad field. Checks sizes against `limits` when given,
        else refuses only sizes no model could take."""
        errors: list[FieldError] = []
        _check_text(errors, "prompt", self.prompt, required=True)
        _check_text(errors, "negative_prompt", self.negative_prompt, required=False)
        _check_int(errors, "seed", self.seed, 0, SEED_MAX, optional=True)
        _check_int(errors, "count", self.count, 1, COUNT_MAX)
        _check_int(errors, "steps", self.steps, 1, STEPS_MAX)
        if self.guidance is not None:
            _check_float(errors, "guidance", self.guidance, 0.0, GUIDANCE_MAX)
        lim = limits or ANY_MODEL
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and not lim.allows(value):
                errors.append(FieldError(name, value, lim.allowed_sizes))
        if self.sampler is not None and (not isinstance(self.sampler, str) or self.sampler not in lim.samplers):
            errors.append(FieldError("sampler", self.sampler, lim.allowed_samplers))
        _check_int(errors, "variation_seed", self.variation_seed, 0, SEED_MAX, optional=True)
        _check_float(errors, "variation_strength", self.variation_strength, 0.0, 1.0)
        _check_chain(errors, self.variation_chain)
        _check_float(errors, "strength", self.strength, 0.0, 1.0)
        _check_syntax(errors, self)
        _check_loras(errors, self)
        if _is_float(self.strength) and self.init_image is not None and self.strength <= 0:
            errors.append(FieldError("strength", self.strength, "use a value above 0 and up to 1 with an init image"))
        check_hires(errors, self.hires, self.width, self.height, lim if limits else None, self.mask is not None)
        init_size = _check_image(errors, "init_image", self.init_image)
        if self.mask is not None:
            if self.init_image is None:
                errors.append(FieldError("mask", self.mask, "a mask needs an init_image to paint on"))
            mask_size = _check_image(errors, "mask", self.mask)
            if init_size and mask_size and init_size != mask_size:
                errors.append(FieldError(
                    "mask", f"{mask_size[0]}x{mask_size[1]}",
                    f"the mask must be the init image's size, {init_size[0]}x{init_size[1]}"))
        if errors:
            raise InvalidRequest(errors)

    def resolve(self, limits: ModelLimits, rng: secrets.SystemRandom | None = None) -> "GenerationRequest":
        """The same request with everything left open decided: seeds, size, sampler, guidance. Validates first."""
        self.validate(limits)
        rng = rng or secrets.SystemRandom()
        changes: dict[str, Any] = {}
        if self.seed is None:
            changes["seed"] = rng.randint(0, SEED_MAX)
        if self.sampler is None:
            changes["sampler"] = limits.default_sampler
        if self.guidance is None:
            changes["guidance"] = float(limits.default_guidance)
        if self.variation_strength > 0 and self.variation_seed is None:
            changes["variation_seed"] = rng.randint(0, SEED_MAX)
        tags = lora_tags(self.prompt)
        if tags:  # the prompt's <lora:...> tags join the list; the prompt keeps its words
            changes["prompt"] = LORA_TAG.sub("", self.prompt).strip()
            changes["loras"] = (*self.loras, *tags)
        loras = changes.get("loras", self.loras)
        if loras:  # weights as floats, so 1 and 1.0 are one recipe
            changes["loras"] = tuple((e[0], float(e[1]), *e[2:]) for e in loras)
        if self.width is None or self.height is None:
            if self.init_image is not None:
                w, h = _image_size(self.init_image)
                m = limits.multiple
                # Keep the init image's aspect, on the model's grid, within its limits.
                scale = min(1.0, limits.max_side / max(w, h))
                w, h = max(limits.min_side, int(w * scale) // m * m), max(limits.min_side, int(h * scale) // m * m)
            else:
                w = h = limits.native_size
            changes.setdefault("width", self.width or w)
            changes.setdefault("height", self.height or h)
        if self.hires is not None and self.hires.steps is None:  # the recipe says how many it ran
            changes["hires"] = dataclasses.replace(self.hires, steps=self.steps)
        resolved = dataclasses.replace(self, **changes) if changes else self
        if resolved.hires is not None:
            resolved.validate(limits)  # the larger size, now that the base size is decided
        return resolved

    # ---- derived values ---------------------------------------------------------------------

    @property
    def mode(self) -> str:
        if self.mask is not None:
            return "inpaint"
        if self.init_image is not None:
            return "img2img"
        return "txt2img"

    # The seed rule (recorded, relied on by reproduce): image k of a plain request uses seed + k;
    # image k of a variation request (variation_strength > 0) keeps the seed and uses
    # variation_seed + k, so a batch of variations are all variations of the same picture.
    # Both wrap at 2**32.

    def image_seed(self, index: int) -> int:
        assert self.seed is not None, "resolve() the request first"
        if self.variation_strength > 0:
            return self.seed
        return (self.seed + index) % (SEED_MAX + 1)

    def image_variation_seed(self, index: int) -> int | None:
        if self.variation_seed is None:
            return None
        if self.variation_strength > 0:
            return (self.variation_seed + index) % (SEED_MAX + 1)
        return self.variation_seed

    def varied(self, strength: float, variation_seed: int | None = None, count: int = 1) -> "GenerationRequest":
        """Variations of the one image this (single-image, resolved) request makes. Its own
        variation joins the chain, so strength 0 gives exactly that image and the walk so far
        is kept; `variation_seed` None means a random one, chosen at submit."""
        chain = self.variation_chain
        if self.variation_strength > 0 and self.variation_seed is not None:
            chain = (*chain, (self.variation_seed, self.variation_strength))
        return dataclasses.replace(self, variation_chain=chain, variation_strength=strength,
                                   variation_seed=variation_seed, count=count)

    def image_request(self, index: int) -> "GenerationRequest":
        """The single-image request that makes exactly image `index` of this one (what reproduce runs)."""
        return dataclasses.replace(self, count=1, seed=self.image_seed(index),
                                   variation_seed=self.image_variation_seed(index))

    @property
    def init_image_sha256(self) -> str | None:
        return hashlib.sha256(self.init_image).hexdigest() if self.init_image is not None else None

    @property
    def mask_sha256(self) -> str | None:
        return hashlib.sha256(self.mask).hexdigest() if self.mask is not None else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe recipe: images appear as their sha256 (the bytes are stored by storage)."""
        d = dataclasses.asdict(self)
        d.pop("init_image")
        d.pop("mask")
        chain = d.pop("variation_chain")
        if chain:  # left out when empty, so every recipe without one reads as it always did
            d["variation_chain"] = [[seed, strength] for seed, strength in chain]
        loras = d.pop("loras")
        if loras:  # left out when empty, as variation_chain
            d["loras"] = [list(entry) for entry in loras]
        if d["prompt_syntax"] == "plain":  # recipes from before prompt syntax read as they always did
            del d["prompt_syntax"]
        d["hires"] = hires_to_value(self.hires)
        if d["hires"] is None:  # left out when off, so every recipe without it reads as it always did
            del d["hires"]
        d["init_image_sha256"] = self.init_image_sha256
        d["mask_sha256"] = self.mask_sha256
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], init_image: bytes | None = None, mask: bytes | None = None) -> "GenerationRequest":
        """Inverse of to_dict; the caller supplies image bytes looked up by their sha256."""
        fields = {f.name for f in dataclasses.fields(cls)} - {"init_image", "mask"}
        unknown = set(d) - fields - {"init_image_sha256", "mask_sha256"}
        if unknown:
            raise InvalidRequest([FieldError(k, d[k], "this is not a request field") for k in sorted(unknown)])
        for key, data in (("init_image_sha256", init_image), ("mask_sha256", mask)):
            if d.get(key) and data is None:
                raise InvalidRequest([FieldError(key, d[key], "the image with this hash was not supplied")])
            if data is not None and d.get(key) != hashlib.sha256(data).hexdigest():
                raise InvalidRequest([FieldError(key, d.get(key), "the supplied image does not match this hash")])
        given = {k: v for k, v in d.items() if k in fields}
        given.setdefault("prompt_syntax", "plain")  # a recipe without it was made before prompt weights
        if given["prompt_syntax"] is None:
            given["prompt_syntax"] = "plain"
        if given.get("loras") is None:
            given.pop("loras", None)
        return cls(**given, init_image=init_image, mask=mask)


def variation_text(d: dict[str, Any]) -> str | None:
    """A request's variations (to_dict() form) in words, oldest first: 'seed 5 at strength 0.5,
    then seed 9 at strength 0.25'; None when it is no variation. One wording for every front-end."""
    steps = [tuple(p) for p in d.get("variation_chain") or []]
    if (d.get("variation_strength") or 0) > 0:
        steps.append((d.get("variation_seed"), d["variation_strength"]))
    if not steps:
        return None
    return ", then ".join(f"seed {seed} at strength {float(strength):g}" for seed, strength in steps)


def lora_tags(prompt: Any) -> tuple[tuple[str, Any], ...]:
    """The prompt's <lora:name:weight> tags as (name, weight); weight 1.0 when left out. Weights
    that are not numbers stay text, for validate() to refuse."""
    if not isinstance(prompt, str):
        return ()
    out = []
    for m in LORA_TAG.finditer(prompt):
        weight: Any = (m.group(2) or "").strip() or 1.0
        if isinstance(weight, str):
            try:
                weight = float(weight)
            except ValueError:
                pass
        out.append((m.group(1).strip(), weight))
    return tuple(out)


def parse_lora(text: str) -> tuple[str, Any]:
    """'name:0.8' (or 'name', weight 1) as (name, weight), for command lines and chat options;
    a weight that is no number stays text, for validate() to refuse in its words."""
    name, _, weight = str(text).strip().rpartition(":") if ":" in str(text) else (str(text).strip(), "", "")
    value: Any = 1.0
    if weight.strip():
        try:
            value = float(weight)
        except ValueError:
            value = weight.strip()
    return name.strip(), value


def lora_text(loras: Any) -> str | None:
    """A request's LoRAs in words: 'pixel at 0.8 (sha256 1a2b3c4d5e6f), ink at 1'."""
    if not loras:
        return None
    parts = []
    for entry in loras:
        name, weight = entry[0], entry[1]
        sha = entry[2] if len(entry) > 2 and entry[2] else None
        parts.append(f"{name} at {float(weight):g}" + (f" (sha256 {sha[:12]})" if sha else ""))
    return ", ".join(parts)


# ---- field checks ---------------------------------------------------------------------------


def _check_syntax(errors: list[FieldError], req: "GenerationRequest") -> None:
    if req.prompt_syntax not in SYNTAXES:
        errors.append(FieldError("prompt_syntax", req.prompt_syntax, "use one of " + ", ".join(SYNTAXES)))
        return
    if req.prompt_syntax == "a1111":
        for name in ("prompt", "negative_prompt"):
            text = getattr(req, name)
            why = check_prompt_weights(text) if isinstance(text, str) else None
            if why:
                errors.append(FieldError(name, text, why))


def _check_loras(errors: list[FieldError], req: "GenerationRequest") -> None:
    if isinstance(req.negative_prompt, str) and LORA_TAG.search(req.negative_prompt):
        errors.append(FieldError("negative_prompt", req.negative_prompt,
                                 "a <lora:...> tag belongs in the prompt, not the negative prompt"))
    given = req.loras
    if not isinstance(given, tuple) or not all(isinstance(e, tuple) and len(e) in (2, 3) for e in given):
        errors.append(FieldError("loras", given, LORA_ALLOWED))
        return
    entries = [*given, *lora_tags(req.prompt)]
    seen: set[str] = set()
    for entry in entries:
        name, weight = entry[0], entry[1]
        sha = entry[2] if len(entry) > 2 else None
        if not isinstance(name, str) or not LORA_NAME.fullmatch(name):
            errors.append(FieldError("loras", name, "a LoRA is named by its file name without .safetensors "
                                     "(letters, digits, space, _ . + -, up to 100 characters)"))
        elif not _is_float(weight) or not LORA_WEIGHT_MIN <= weight <= LORA_WEIGHT_MAX:
            shown = f"{weight:g}" if _is_float(weight) else weight
            errors.append(FieldError("loras", f"{name}:{shown}",
                                     f"use a LoRA weight from {LORA_WEIGHT_MIN:g} to {LORA_WEIGHT_MAX:g}"))
        elif name.lower() in seen:
            errors.append(FieldError("loras", name, "each LoRA may be given once"))
        elif sha is not None and not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)):
            errors.append(FieldError("loras", f"{name} sha256 {sha}", "a LoRA's sha256 is 64 hex digits"))
        if isinstance(name, str):
            seen.add(name.lower())
    if len(entries) > LORA_MAX:
        errors.append(FieldError("loras", f"{len(entries)} LoRAs", f"give at most {LORA_MAX} LoRAs"))



def _check_chain(errors: list[FieldError], chain: Any) -> None:
    allowed = (f"give at most {VARIATION_CHAIN_MAX} earlier variations, each a variation seed from 0 to "
               f"{SEED_MAX} and a strength above 0 and up to 1")
    ok = isinstance(chain, tuple) and len(chain) <= VARIATION_CHAIN_MAX and all(
        len(p) == 2 and _is_int(p[0]) and 0 <= p[0] <= SEED_MAX and _is_float(p[1]) and 0 < p[1] <= 1
        for p in chain)
    if not ok:
        shown = Described(f"a walk of {len(chain)} earlier variations") if isinstance(chain, tuple) else chain
        errors.append(FieldError("variation_chain", shown, allowed))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_float(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_int(errors: list[FieldError], name: str, value: Any, lo: int, hi: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not _is_int(value) or not lo <= value <= hi:
        errors.append(FieldError(name, value, f"use a whole number from {lo} to {hi}" + (" (or leave it empty for random)" if optional else "")))


def _check_float(errors: list[FieldError], name: str, value: Any, lo: float, hi: float) -> None:
    if not _is_float(value) or not lo <= value <= hi:
        errors.append(FieldError(name, value, f"use a finite number from {lo:g} to {hi:g}"))


def _check_text(errors: list[FieldError], name: str, value: Any, required: bool) -> None:
    if not isinstance(value, str):
        errors.append(FieldError(name, value, "use text"))
        return
    if required and not value.strip():
        errors.append(FieldError(name, value, "write a few words describing the image"))
    elif len(value) > PROMPT_MAX_CHARS:
        errors.append(FieldError(name, Described(f"a text of {len(value)} characters"), f"use at most {PROMPT_MAX_CHARS} characters"))
    else:
        bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") and c not in "\n\t\u200d"]
        if bad:
            codes = ", ".join(f"U+{ord(c):04X}" for c in dict.fromkeys(bad))
            errors.append(FieldError(name, Described(f"a text with {codes}"), "remove control characters (only newlines and tabs are allowed)"))


def _image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def _check_image(errors: list[FieldError], name: str, data: Any) -> tuple[int, int] | None:
    if data is None:
        return None
    if not isinstance(data, (bytes, bytearray)):
        errors.append(FieldError(name, type(data).__name__, "give the image file's bytes (PNG, JPEG or WebP)"))
        return None
    if len(data) > IMAGE_MAX_BYTES:
        errors.append(FieldError(name, data, f"use an image file of at most {IMAGE_MAX_BYTES // 2**20} MiB"))
        return None
    from PIL import Image, UnidentifiedImageError

    too_big = f"use an image of at most {IMAGE_MAX_PIXELS} pixels ({int(IMAGE_MAX_PIXELS ** 0.5)} x {int(IMAGE_MAX_PIXELS ** 0.5)})"
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > IMAGE_MAX_PIXELS:
                errors.append(FieldError(name, f"{im.width}x{im.height}", too_big))
                return None
            if im.mode not in IMAGE_MODES:
                kind = {"I": "32-bit integer", "F": "32-bit float"}.get(im.mode, im.mode)
                errors.append(FieldError(name, f"a {kind} ({im.mode}) image", "use an 8-bit or 16-bit RGB, RGBA or "
                                                                              "greyscale image"))
                return None
            im.load()  # decode fully: a truncated file fails here, not mid-job
            return im.size
    except Image.DecompressionBombError:  # PIL refuses to open it at all: far beyond our limit
        errors.append(FieldError(name, data, too_big))
        return None
    except (UnidentifiedImageError, OSError, ValueError):
        errors.append(FieldError(name, data, "give a readable PNG, JPEG or WebP image"))
        return None
