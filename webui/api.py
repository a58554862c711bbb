"""The web UI's named endpoints for scripts (gradio_client): the same operations as the tabs.

    from gradio_client import Client
    Client("http://127.0.0.1:7860").predict(prompt="cat face", seed=42, api_name="/generate")
"""

from __future__ import annotations

import asyncio
import dataclasses

import gradio as gr

from core.hires import Hires
from core.jobs import JobResult
from core.request import FieldError, GenerationRequest, InvalidRequest
from webui.recipes import UserError, error_message
from webui.shared import WebUI, owner_of, parse_seed

HISTORY_PER_PAGE_MAX = 100
NAMES = ("generate", "reproduce", "vary", "inpaint", "upscale", "verify", "history", "recipe")


def _images_json(result: JobResult) -> list[dict]:
    return [{"id": img.id, "seed": img.seed, "variation_seed": img.variation_seed, "sha256": img.sha256,
             "width": img.image.width, "height": img.image.height, "file": f"/gradio_api/file={img.path}"}
            for img in result.images]


async def _wait(submit) -> list[dict]:
    try:
        handle = await asyncio.to_thread(submit)
        return _images_json(await handle.wait())
    except Exception as exc:  # noqa: BLE001
        raise gr.Error(error_message(exc), print_exception=False) from None


def register(ui: WebUI) -> None:
    """Add the named endpoints to the Blocks being built (call it first, so they keep their plain names)."""

    async def generate(prompt: str, negative_prompt: str = "", seed: int = -1, steps: int = 20,
                       guidance: float = -1, width: int = 0, height: int = 0, sampler: str = "",
                       count: int = 1, hires_scale: float = 0, hires_steps: int = 0, hires_strength: float = 0.5,
                       hires_upscaler: str = "lanczos", request: gr.Request = None) -> list[dict]:
        """Make images from a prompt. Returns each image's id, seed, sha256 and file URL.
        seed -1 is random; guidance -1 is the model's default; width/height 0 is the model's native
        size; sampler "" is the model's default; hires_scale 0 is no hires fix (1 to 2 turns it on;
        hires_steps 0 is the same as steps)."""
        def submit():   # built inside _wait, so a value it cannot even read is said as a sentence too
            hires = Hires(scale=hires_scale, steps=hires_steps or None, strength=hires_strength,
                          upscaler=hires_upscaler) if hires_scale else None
            req = GenerationRequest(prompt=prompt, negative_prompt=negative_prompt, seed=parse_seed(seed),
                                    steps=steps, guidance=None if guidance == -1 else guidance,
                                    width=width or None, height=height or None,
                                    sampler=sampler or None, count=count, hires=hires)
            return ui.service.submit(req, owner_of(request))

        return await _wait(submit)

    async def reproduce(image_id: str, request: gr.Request = None) -> list[dict]:
        """Make a stored image again from its recipe."""
        return await _wait(lambda: ui.store.reproduce(image_id, ui.service, owner_of(request)))

    async def vary(image_id: str, strength: float = 0.25, variation_seed: int = -1, count: int = 1,
                   request: gr.Request = None) -> list[dict]:
        """Variations of a stored image: strength 0 is the image again, 1 a new picture."""
        return await _wait(lambda: ui.store.vary(image_id, ui.service, owner_of(request), strength,
                                                    parse_seed(variation_seed), count))

    async def inpaint(image_id: str, mask_png_base64: str, prompt: str, negative_prompt: str = "",
                      strength: float = 0.75, seed: int = -1, request: gr.Request = None) -> list[dict]:
        """Repaint the white part of a mask (a base64 PNG the image's size) on a stored image."""
        import base64

        def submit():
            base = ui.store.request_for(image_id)
            rec = ui.store.get(image_id)
            try:
                mask = base64.b64decode(mask_png_base64 or "", validate=True)
            except ValueError:
                raise UserError("mask_png_base64 is not base64; give the mask PNG's bytes in base64.") from None
            req = dataclasses.replace(base, prompt=prompt, negative_prompt=negative_prompt, seed=parse_seed(seed),
                                      strength=strength, init_image=rec.path.read_bytes(), mask=mask,
                                      variation_strength=0.0, variation_seed=None, count=1)
            return ui.service.submit(req, owner_of(request), parent_id=rec.id, kind="inpaint")

        return await _wait(submit)

    async def upscale(image_id: str, scale: float = 0, steps: int = 0, strength: float = 0, upscaler: str = "",
                      request: gr.Request = None) -> list[dict]:
        """A stored image through the hires fix: its recipe, repainted larger. 0 or empty takes the
        model's own setting (its folder's hires.json, else scale 2, the same steps, strength 0.5, lanczos)."""
        def submit():
            base = ui.service.hires_defaults.hires
            hires = Hires(scale=scale or base.scale, steps=steps or base.steps, strength=strength or base.strength,
                          upscaler=upscaler or base.upscaler)
            return ui.store.upscale(image_id, ui.service, owner_of(request), hires)

        return await _wait(submit)

    async def verify(image_id: str, request: gr.Request = None) -> dict:
        """Make a stored image again and compare: verdict exact or drifted, with the largest pixel difference."""
        try:
            v = await asyncio.to_thread(ui.store.verify, image_id, ui.service, owner_of(request))
        except Exception as exc:  # noqa: BLE001
            raise gr.Error(error_message(exc), print_exception=False) from None
        return {"image_id": v.image_id, "verdict": v.verdict, "max_pixel_diff": v.max_pixel_diff,
                "new_image_id": v.new_image_id, "same_file": v.same_file,
                "fingerprint_diff": {k: list(map(str, pair)) for k, pair in v.fingerprint_diff.items()}}

    def history(query: str = "", page: int = 1, per_page: int = 20) -> dict:
        """Stored images, newest first, optionally those whose prompt has every word of query."""
        bad = [FieldError(name, value, allowed) for name, value, ok, allowed in (
            ("page", page, isinstance(page, int) and page >= 1, "use a whole number from 1 up"),
            ("per_page", per_page, isinstance(per_page, int) and 1 <= per_page <= HISTORY_PER_PAGE_MAX,
             f"use a whole number from 1 to {HISTORY_PER_PAGE_MAX}")) if not ok]
        try:
            if bad:
                raise InvalidRequest(bad)
            p = ui.store.history(query=query or None, page=page, per_page=per_page)
        except Exception as exc:  # noqa: BLE001
            raise gr.Error(error_message(exc), print_exception=False) from None
        return {"total": p.total, "page": p.page, "pages": p.pages,
                "items": [{"id": r.id, "prompt": r.image_request.get("prompt"), "seed": r.seed,
                           "owner": r.owner.display_name or r.owner.user_id, "source": r.owner.source,
                           "created": r.created.isoformat()} for r in p.items]}

    def recipe(image_id: str) -> dict:
        """Everything stored about one image: its own request, owner, parents and model."""
        try:
            r = ui.store.get(image_id)
        except Exception as exc:  # noqa: BLE001
            raise gr.Error(error_message(exc), print_exception=False) from None
        return {"id": r.id, "request": r.image_request, "owner": r.owner.display_name or r.owner.user_id,
                "source": r.owner.source, "kind": r.kind, "parent_chain": list(r.parent_chain),
                "fingerprint": r.fingerprint, "sha256": r.sha256, "created": r.created.isoformat(),
                "file": f"/gradio_api/file={r.path}"}

    for fn in (generate, reproduce, vary, inpaint, upscale, verify, history, recipe):
        gr.api(fn, api_name=fn.__name__, concurrency_limit=None)
