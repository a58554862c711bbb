"""The command line's options: the argparse types and flags shared by `statuary generate` and the
storage subcommands (reproduce, vary, upscale), and how they become a GenerationRequest. A bad value
is refused in request validation's words ('steps: '1e6' is not allowed; use a whole number from 1 to
150.'), the same sentence the web UI and the bot give.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse that says a bad value in request validation's words ('steps: '1e6' is not allowed;
    use a whole number from 1 to 150.') instead of 'invalid int value', and takes no abbreviated
    option: argparse would read `--n 4` as `--negative 4` and draw with "4" as the negative prompt,
    and an abbreviation in a script changes meaning when an option is added."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        m = re.match(r"argument [^:]+: (\S+: .* is not allowed; .*)", message)
        if m:
            self.exit(2, f"statuary: {m[1]}\n")
        super().error(message)


def whole(field: str, lo: int, hi: int | None, allowed: str | None = None):
    """An argparse type: a whole number, refused in request validation's words when the text is
    not one. The range is request validation's to check, so that it names every bad field at once."""
    from core.request import FieldError

    def parse(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(str(FieldError(
                field, _short(text), allowed or f"use a whole number from {lo} to {hi}"))) from None

    return parse


def number(field: str, lo: float, hi: float):
    """An argparse type: a finite number from lo to hi (request validation checks the range too)."""
    import math

    from core.request import FieldError

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(str(FieldError(field, _short(text), f"use a finite number from {lo:g} "
                                                                                f"to {hi:g}")))
        return value

    return parse


def _short(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."


def flag_names(exc: Exception, names: dict[str, str]) -> str:
    """An InvalidRequest's sentences with each field called by the flag that sets it here."""
    import dataclasses

    from core.request import InvalidRequest

    if not isinstance(exc, InvalidRequest):
        return str(exc)
    return " ".join(str(dataclasses.replace(e, field=names.get(e.field, e.field))) for e in exc.errors)


GENERATE_FLAGS = {"negative_prompt": "negative", "variation_seed": "variation-seed",
                  "variation_strength": "variation-strength", "init_image": "init-image",
                  "loras": "lora", "prompt_syntax": "prompt-syntax",
                  "hires_scale": "hires-scale", "hires_steps": "hires-steps", "hires_strength": "hires-strength",
                  "hires_upscaler": "hires-upscaler"}


def _read_file(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"statuary: cannot read {what} {path}: {exc.strerror}")


def add_request_arguments(p: argparse.ArgumentParser) -> None:
    from core.request import COUNT_MAX, GUIDANCE_MAX, MIN_SIDE, SAMPLERS, SEED_MAX, STEPS_MAX

    side = f"use a multiple of 8 from {MIN_SIDE} up to the model's largest side"
    p.add_argument("--negative", default="", help="negative prompt: what the image should not show")
    p.add_argument("--seed", type=whole("seed", 0, SEED_MAX), default=None,
                   help="0..4294967295; random (and printed) if left out")
    p.add_argument("--count", type=whole("count", 1, COUNT_MAX), default=1, help="images to make, 1-4 (image k uses seed+k)")
    p.add_argument("--steps", type=whole("steps", 1, STEPS_MAX), default=20, help="denoising steps, 1-150")
    p.add_argument("--guidance", type=number("guidance", 0, GUIDANCE_MAX), default=None,
                   help="how strongly to follow the prompt (CFG scale), 0-30; default: the model's "
                        "(its folder's defaults.json; 7 without one)")
    p.add_argument("--width", type=whole("width", 1, None, side), default=None,
                   help="pixels, multiple of 8; default: the model's size")
    p.add_argument("--height", type=whole("height", 1, None, side), default=None,
                   help="pixels, multiple of 8; default: the model's size")
    p.add_argument("--sampler", default=None,
                   help="one of " + ", ".join(SAMPLERS) + "; default: the model's (dpmpp_2m_karras for SD checkpoints, "
                        "ddim for the default model, whose schedule Karras spacing does not suit)")
    p.add_argument("--variation-seed", type=whole("variation-seed", 0, SEED_MAX), default=None,
                   help="seed blended in for a variation")
    p.add_argument("--variation-strength", type=number("variation-strength", 0, 1), default=0.0,
                   help="0 = the seed's image, 1 = the variation seed's")
    p.add_argument("--init-image", default=None, help="start from this image (img2img)")
    p.add_argument("--strength", type=number("strength", 0, 1), default=0.75,
                   help="img2img/inpaint: how much of the init image to repaint")
    p.add_argument("--mask", default=None, help="inpaint: white = repaint, black = keep; same size as --init-image")
    p.add_argument("--lora", action="append", default=[], metavar="NAME:WEIGHT",
                   help="a LoRA from STATUARY_LORA_DIR by file name, weight -2 to 2 (default 1); repeat for more; "
                        "<lora:name:0.8> in the prompt does the same")
    p.add_argument("--prompt-syntax", choices=("a1111", "plain"), default="a1111",
                   help="a1111 (default): (word:1.3), (word), [word], BREAK, long prompts in chunks; "
                        "plain: the words as written, cut at the text encoder's window")
    add_hires_arguments(p, "--hires-")


def add_hires_arguments(p: argparse.ArgumentParser, prefix: str) -> None:
    """The hires fix's flags (core/hires.py): `--hires-scale` turns it on in `generate`; `upscale`
    takes the same four as --scale, --steps, --strength, --upscaler."""
    from core.hires import SCALE_MAX, SCALE_MIN, UPSCALERS
    from core.request import STEPS_MAX

    name = prefix.lstrip("-")  # "hires-" or ""
    p.add_argument(f"{prefix}scale", type=number(f"{name}scale", SCALE_MIN, SCALE_MAX), default=None,
                   help=f"hires fix: repaint the picture this much larger, {SCALE_MIN:g}-{SCALE_MAX:g}")
    p.add_argument(f"{prefix}steps", type=whole(f"{name}steps", 1, STEPS_MAX), default=None,
                   help="hires fix: steps of the second pass (default: the same as --steps)")
    p.add_argument(f"{prefix}strength", type=number(f"{name}strength", 0, 1), default=None,
                   help="hires fix: how much of the upscaled picture to repaint (default 0.5)")
    p.add_argument(f"{prefix}upscaler", default=None,
                   help="hires fix: " + " or ".join(UPSCALERS) + " (default lanczos)")


def hires_from_args(scale, steps, strength, upscaler, defaults=None):
    """A Hires from the flags (None when none is given); what is left out comes from `defaults`
    (the model's, core/hires.py) or the built-in ones."""
    from core.hires import Hires

    if scale is None and steps is None and strength is None and upscaler is None:
        return None
    base = defaults or Hires()
    return Hires(scale=base.scale if scale is None else scale, steps=base.steps if steps is None else steps,
                 strength=base.strength if strength is None else strength, upscaler=upscaler or base.upscaler)


def request_from_args(args: argparse.Namespace):
    from core.request import GenerationRequest, parse_lora

    return GenerationRequest(
        prompt=args.prompt, negative_prompt=args.negative, seed=args.seed, count=args.count, steps=args.steps,
        guidance=args.guidance, width=args.width, height=args.height, sampler=args.sampler,
        variation_seed=args.variation_seed, variation_strength=args.variation_strength,
        init_image=_read_file(args.init_image, "init image"), strength=args.strength,
        mask=_read_file(args.mask, "mask"), prompt_syntax=args.prompt_syntax,
        loras=tuple(parse_lora(text) for text in args.lora),
        hires=hires_from_args(args.hires_scale, args.hires_steps, args.hires_strength, args.hires_upscaler))
