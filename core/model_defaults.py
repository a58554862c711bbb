"""What a model's folder says its pictures are best made with: `defaults.json` beside the weights.

    {"guidance": 12, "note": "why: the judged subject grid at guidance 5, 7, 10, 14 and 20"}

All keys optional; unknown keys are refused, so a typo does not pass unnoticed. `guidance` is
what a request that gives none gets (core.request.ModelLimits.default_guidance): a small model
trained from scratch may want more than Stable Diffusion's 7, which is the default without the
file. The web UI's slider, the bot's /imagine and `statuary generate` all start from it, and the
stored recipe records the value that ran, so reproducing an image does not depend on the file.

Nothing here needs torch, nor any other core module at import time (core.request and
core.hires import this one).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

CONFIG_FILE = "defaults.json"
KEYS = ("guidance", "note")
DEFAULT_GUIDANCE = 7.0  # a model whose folder says nothing; Stable Diffusion's own is 7-7.5


def read_folder_json(path: Path | None, known: set[str] | tuple[str, ...]) -> dict | None:
    """A model folder's settings file (defaults.json, hires.json) as a JSON object with only `known`
    keys; None when there is no such file. What is wrong with it is said as a ValueError sentence
    that names the file."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not readable JSON ({exc}); fix or remove it") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a JSON object; use {{\"key\": value, ...}} with {', '.join(sorted(known))}")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{path}: unknown keys {', '.join(unknown)}; use {', '.join(sorted(known))}")
    return data


@dataclasses.dataclass(frozen=True)
class ModelDefaults:
    guidance: float = DEFAULT_GUIDANCE
    note: str = ""
    source: str = ""  # the file they came from; empty: the built-in defaults

    @classmethod
    def load(cls, folder: str | Path | None) -> "ModelDefaults":
        """The folder's defaults.json, or the built-in defaults when it has none (a single
        .safetensors file, a hub id). A file that is there but wrong stops the load with a sentence."""
        from core.request import GUIDANCE_MAX, _is_float

        path = Path(folder) / CONFIG_FILE if folder else None
        data = read_folder_json(path, KEYS)
        if data is None:
            return cls()
        guidance = data.get("guidance", DEFAULT_GUIDANCE)
        if not _is_float(guidance) or not 0 <= guidance <= GUIDANCE_MAX:   # the request's own test of a number
            raise ValueError(f"{path}: guidance {json.dumps(guidance)} is not allowed; use a number from 0 to {GUIDANCE_MAX:g}")
        return cls(guidance=float(guidance), note=str(data.get("note", "")), source=str(path))
