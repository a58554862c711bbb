"""The hires fix (A1111's name for it): make the picture at the base size, upscale it, then
repaint it at the larger size (img2img), all in one job. It is a field of the request
(`GenerationRequest.hires`), so it is stored, reproduced and varied like everything else.

    request = GenerationRequest("a red fox", hires=Hires(scale=2, steps=20, strength=0.5))

- `scale` (1 to 2): the second pass's size, the base size times this, on the model's grid.
- `steps`: the second pass's schedule; as in img2img, its last strength x steps run.
- `strength` (above 0, up to 1): how much of the upscaled picture is repainted.
- `upscaler`: "lanczos" (Lanczos on the decoded pixels, then the VAE encodes them again) or
  "latent" (bilinear upscale of the latents: no decode/encode, softer, needs more strength).

The second pass draws its noise on the CPU from the image's own seed (at the larger shape), so
a reproduction is bit-identical on the CPU like any other image.

Per-model defaults come from the model folder's `hires.json` when it has one (all keys
optional; unknown keys are refused):

    {"helps": true, "scale": 2, "steps": 20, "strength": 0.5, "upscaler": "lanczos",
     "note": "why these values: the grid that measured them"}

`"helps": false` says the hires fix does not improve this model's pictures: the web UI and the
bot then say so (with the note) instead of offering it. Without the file: the defaults below.

Nothing at import time needs torch: core.request imports this module.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.model_defaults import read_folder_json

if TYPE_CHECKING:
    from PIL.Image import Image

    from core.generator import Generator, Trajectory
    from core.request import FieldError, ModelLimits

UPSCALERS = ("lanczos", "latent")
SCALE_MIN, SCALE_MAX = 1.0, 2.0
CONFIG_FILE = "hires.json"


@dataclasses.dataclass(frozen=True)
class Hires:
    """The hires fix's settings in a request. `steps` None: the request's own steps (decided at resolve)."""

    scale: float = 2.0
    steps: int | None = None
    strength: float = 0.5
    upscaler: str = "lanczos"


def target_size(width: int, height: int, scale: float, multiple: int) -> tuple[int, int]:
    """The second pass's size: the base size times `scale`, rounded to the model's grid."""
    return (max(multiple, round(width * scale / multiple) * multiple),
            max(multiple, round(height * scale / multiple) * multiple))


def pass_steps(hires: Hires, steps: int) -> int:
    """Steps the second pass runs (its schedule's last strength x steps; at least one), as
    Generator.begin_at counts them."""
    n = hires.steps or steps
    return max(1, min(int(round(n * hires.strength)), n))


def check(errors: list["FieldError"], hires: Any, width: int | None, height: int | None, limits: "ModelLimits",
          has_mask: bool) -> None:
    """Append a FieldError for each bad hires setting (named as users type them: hires_scale, ...)."""
    from core.request import STEPS_MAX, FieldError, _is_float, _is_int

    if hires is None:
        return
    if not isinstance(hires, Hires):
        errors.append(FieldError("hires", type(hires).__name__, "give scale, steps, strength and upscaler"))
        return
    ok_scale = _is_float(hires.scale) and SCALE_MIN <= hires.scale <= SCALE_MAX
    if not ok_scale:
        errors.append(FieldError("hires_scale", hires.scale, f"use a number from {SCALE_MIN:g} to {SCALE_MAX:g}"))
    if hires.steps is not None and not (_is_int(hires.steps) and 1 <= hires.steps <= STEPS_MAX):
        errors.append(FieldError("hires_steps", hires.steps, f"use a whole number from 1 to {STEPS_MAX} "
                                                             "(or leave it empty for the request's steps)"))
    if not (_is_float(hires.strength) and 0 < hires.strength <= 1):
        errors.append(FieldError("hires_strength", hires.strength, "use a number above 0 and up to 1"))
    if hires.upscaler not in UPSCALERS:
        errors.append(FieldError("hires_upscaler", hires.upscaler, "use one of " + ", ".join(UPSCALERS)))
    if has_mask:
        errors.append(FieldError("hires_scale", hires.scale, "the hires fix does not apply to inpainting; "
                                                             "leave it off when you give a mask"))
    if ok_scale and limits is not None:
        w = width if _is_int(width) else limits.native_size
        h = height if _is_int(height) else limits.native_size
        w2, h2 = target_size(w, h, hires.scale, limits.multiple)
        if max(w2, h2) > limits.max_side:
            most = math.floor(limits.max_side / max(w, h) * 100) / 100
            allowed = (f"at {w}x{h} it would make {w2}x{h2}, beyond this model's largest side {limits.max_side}; "
                       + (f"use at most {most:g}" if most >= SCALE_MIN else "use a smaller width and height"))
            errors.append(FieldError("hires_scale", hires.scale, allowed))


def from_value(value: Any) -> Any:
    """A request's `hires` from JSON (a dict) as Hires; anything else as it is (validation judges it)."""
    if isinstance(value, dict) and set(value) <= {f.name for f in dataclasses.fields(Hires)}:
        return Hires(**value)
    return value


def to_value(hires: Hires | None) -> dict[str, Any] | None:
    """The recipe's form: numbers in one type each, so the same settings are the same bytes."""
    if hires is None:
        return None
    return {"scale": float(hires.scale), "steps": None if hires.steps is None else int(hires.steps),
            "strength": float(hires.strength), "upscaler": str(hires.upscaler)}


def text(d: dict[str, Any] | None) -> str | None:
    """A recipe's hires fix in words, the same in every front-end: '2x (lanczos), 20 steps at strength 0.5'."""
    if not d:
        return None
    steps = f"{d.get('steps')} steps" if d.get("steps") else "the same steps"
    return f"{float(d['scale']):g}x ({d.get('upscaler')}), {steps} at strength {float(d['strength']):g}"


# ---- per-model defaults -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HiresDefaults:
    """What a model's folder says about the hires fix (hires.json), or the defaults."""

    helps: bool = True
    hires: Hires = Hires(scale=2.0, steps=None, strength=0.5, upscaler="lanczos")
    note: str = ""
    source: str = ""  # the file they came from; empty: the built-in defaults

    @classmethod
    def load(cls, folder: str | Path | None) -> "HiresDefaults":
        path = Path(folder) / CONFIG_FILE if folder else None
        data = read_folder_json(path, {"helps", "scale", "steps", "strength", "upscaler", "note"})
        if data is None:
            return cls()
        base = cls().hires
        hires = Hires(scale=data.get("scale", base.scale), steps=data.get("steps", base.steps),
                      strength=data.get("strength", base.strength), upscaler=data.get("upscaler", base.upscaler))
        from core.request import ANY_MODEL

        errors: list = []
        check(errors, hires, None, None, ANY_MODEL, False)
        if errors or not isinstance(data.get("helps", True), bool):
            why = " ".join(str(e) for e in errors) or "helps: use true or false."
            raise ValueError(f"{path}: {why}")
        return cls(helps=data.get("helps", True), hires=hires, note=str(data.get("note", "")), source=str(path))

    def to_json(self) -> dict[str, Any]:
        """What a distributed worker announces, so front-ends without the model folder offer the same."""
        return {"helps": self.helps, "hires": to_value(self.hires), "note": self.note, "source": self.source}

    @classmethod
    def from_json(cls, d: dict[str, Any] | None) -> "HiresDefaults":
        if not d:
            return cls()
        return cls(helps=bool(d["helps"]), hires=Hires(**d["hires"]), note=str(d.get("note", "")),
                   source=str(d.get("source", "")))

    @property
    def refusal(self) -> str:
        """What to say instead of offering the hires fix when it does not help this model."""
        return ("The hires fix does not improve this model's pictures, so it is not offered"
                + (f": {self.note}" if self.note else "."))


# ---- the second pass ------------------------------------------------------------------------------------


def second_pass(gen: "Generator", traj: "Trajectory", image: "Image") -> "Trajectory":
    """The trajectory that repaints image `traj.index` of a hires request at the larger size,
    starting from its upscaled picture (`image`, the decoded first pass) or latents."""
    import numpy as np
    import torch
    from PIL import Image as PILImage

    request, m = traj.request, gen.model
    hires = request.hires
    width, height = target_size(request.width, request.height, hires.scale, m.limits.multiple)
    # The image's own recipe at the larger size, as plain img2img without an image file: the
    # start (noise from the image's seed, the scheduler) is built as for any request, then
    # `begin_at` puts the upscaled source in.
    one = dataclasses.replace(request.image_request(traj.index), width=width, height=height,
                              steps=hires.steps or request.steps, strength=hires.strength, init_image=None,
                              mask=None, hires=None, variation_seed=None, variation_strength=0.0,
                              variation_chain=())
    second = gen.start(one, 0, gen.encode(one))
    second.index = traj.index
    if hires.upscaler == "latent":
        shape = (height // m.vae_scale_factor, width // m.vae_scale_factor)
        source = torch.nn.functional.interpolate(traj.latents.float(), size=shape, mode="bilinear",
                                                 align_corners=False).to(m.dtype)
    else:
        big = image.convert("RGB").resize((width, height), PILImage.Resampling.LANCZOS)
        source = gen._encode_image(np.asarray(big, dtype=np.float32) / 255.0)
    gen.begin_at(second, source, hires.strength)
    return second
