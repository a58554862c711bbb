"""What the store hands out: the records of images and generations, the errors its callers
catch, and the one canonical form of a request (the same request, the same bytes)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

from core.hires import from_value as hires_from_value
from core.hires import to_value as hires_to_value
from core.jobs import Owner
from core.request import GenerationRequest

# The request's fields, as to_dict() names them (images by sha256): one column each.
REQUEST_FIELDS = tuple(f.name for f in dataclasses.fields(GenerationRequest) if f.name not in ("init_image", "mask")) + (
    "init_image_sha256", "mask_sha256")
_FLOAT_FIELDS = ("guidance", "variation_strength", "strength")

class NotFound(LookupError):
    """No such image (a malformed id, an unknown one, or one that was deleted). `.id` names it."""

    def __init__(self, message: str, id: str | None = None):
        super().__init__(message)
        self.id = id


class NotYours(PermissionError):
    """The image belongs to someone else."""


class Superseded(RuntimeError):
    """A worker's claim on a job was taken over (its lease ran out): its result is not recorded."""


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One stored image and everything known about how it was made."""

    id: str
    index: int  # within its generation
    seed: int
    variation_seed: int | None
    path: Path  # the PNG file
    sha256: str
    bytes: int
    width: int
    height: int
    request: dict[str, Any]  # the request of the whole generation, to_dict() form (images by sha256)
    image_request: dict[str, Any]  # the request that makes exactly this image: what reproduce runs
    owner: Owner
    kind: str  # generate | reproduce | vary | verify | ...
    status: str
    parent_id: str | None
    parent_chain: tuple[str, ...]  # parent, grandparent, ...; a deleted ancestor ends it
    fingerprint: dict[str, Any]
    generation_id: str
    image_ids: tuple[str, ...]  # all images of the generation, in order
    image_paths: tuple[Path, ...]
    has_timeline: bool
    created: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class GenerationRecord:
    id: str
    job_id: str
    kind: str
    status: str
    reason: str | None
    error_type: str | None
    request: dict[str, Any]
    owner: Owner
    parent_id: str | None
    fingerprint: dict[str, Any]
    image_ids: tuple[str, ...]
    created: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    seconds: float | None


@dataclasses.dataclass(frozen=True)
class Page:
    items: list[ImageRecord]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclasses.dataclass(frozen=True)
class VerifyResult:
    image_id: str
    verdict: str  # "exact": the same pixels again; "drifted": not
    max_pixel_diff: int  # largest difference in any channel of any pixel, 0-255
    fingerprint_diff: dict[str, tuple[Any, Any]]  # field -> (then, now), for fields that differ
    new_image_id: str | None  # the verify run's own image
    same_file: bool  # byte-identical PNG too (needs the same metadata setting)

    @property
    def exact(self) -> bool:
        return self.verdict == "exact"


def canonical_request(d: dict[str, Any]) -> dict[str, Any]:
    """to_dict() with numbers in one form (7 and 7.0 are the same guidance), so the same
    request always serialises to the same bytes."""
    out = {k: d.get(k) for k in REQUEST_FIELDS}
    for k in _FLOAT_FIELDS:
        if out[k] is not None:
            out[k] = float(out[k])
    chain = out.pop("variation_chain") or []
    if chain:  # absent when empty, as in to_dict(): older recipes keep their exact bytes
        out["variation_chain"] = [[int(seed), float(strength)] for seed, strength in chain]
    loras = out.pop("loras") or []
    if loras:  # absent when none, and the syntax absent when "plain", as in to_dict()
        out["loras"] = [[str(e[0]), float(e[1]), *e[2:]] for e in loras]
    if out.get("prompt_syntax") in (None, "plain"):
        out.pop("prompt_syntax", None)
    hires = out.pop("hires")
    if hires:  # absent when off, likewise
        out["hires"] = hires_to_value(hires_from_value(hires))
    return out


def model_name(model_id: str) -> str:
    name = str(model_id or "").rstrip("/\\").replace("\\", "/").split("/")[-1]
    return name.removesuffix(".safetensors")
