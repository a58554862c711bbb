"""The hires fix in the web UI (core/hires.py): the Generate tab's "Hires fix" settings and the
Upscale button under its result, which runs the selected image through the hires fix at the
model's own settings (a child of that image, kind "upscale").

When the model's folder says the hires fix does not help it (hires.json, "helps": false), both
are replaced by one line saying so.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from core.hires import SCALE_MAX, SCALE_MIN, UPSCALERS, Hires
from core.hires import text as hires_text
from core.request import STEPS_MAX
from webui.recipes import status_html
from webui.shared import WebUI, owner_of, whole


def controls(ui: WebUI) -> SimpleNamespace:
    """The settings, in a closed accordion (off until ticked), prefilled with the model's defaults."""
    defaults = ui.service.hires_defaults
    h = defaults.hires
    with gr.Accordion("Hires fix", open=False, elem_id="g-hires", visible=defaults.helps) as accordion:
        on = gr.Checkbox(False, label="Make it larger: generate, upscale, then repaint at the larger size",
                         elem_id="g-hires-on")
        with gr.Row():
            scale = gr.Slider(SCALE_MIN, SCALE_MAX, value=h.scale, step=0.05, label="Hires scale",
                              elem_id="g-hires-scale", min_width=140)
            strength = gr.Slider(0.05, 1.0, value=h.strength, step=0.05, label="Hires strength",
                                 elem_id="g-hires-strength", min_width=140)
        with gr.Row():
            steps = gr.Slider(0, STEPS_MAX, value=h.steps or 0, step=1, label="Hires steps (0 = as Steps)",
                              elem_id="g-hires-steps", min_width=140)
            upscaler = gr.Radio(list(UPSCALERS), value=h.upscaler, label="Upscaler", elem_id="g-hires-upscaler",
                                elem_classes="st-chips")
    gr.Markdown(defaults.refusal, visible=not defaults.helps, elem_id="g-hires-note")
    return SimpleNamespace(inputs=[on, scale, steps, strength, upscaler], accordion=accordion)


def value(on: Any, scale: Any, steps: Any, strength: Any, upscaler: Any) -> Hires | None:
    """The request's `hires` from the controls (None when off); the request validates the values."""
    if not on:
        return None
    n = whole(steps)
    return Hires(scale=float(scale), steps=None if n in (0, None) else n, strength=float(strength),
                 upscaler=str(upscaler or ""))


def fill(ui: WebUI, controls_: SimpleNamespace, hires: dict[str, Any] | None, notes: list[str]) -> dict:
    """The controls set from a recipe's `hires` (PNG info, History's Send to Generate): on with its
    values, or off when the recipe has none, so an earlier setting does not stay on unseen."""
    on, scale, steps, strength, upscaler = controls_.inputs
    if hires and not ui.service.hires_defaults.helps:
        notes.append("The recipe's hires fix is left out: " + ui.service.hires_defaults.refusal)
        return {on: False}
    if not hires:
        return {on: False}
    notes.append(f"With the hires fix: {hires_text(hires)}.")
    return {controls_.accordion: gr.Accordion(open=True), on: True, scale: hires.get("scale", 2.0),
            steps: hires.get("steps") or 0,
            strength: hires.get("strength", 0.5), upscaler: hires.get("upscaler", "lanczos")}


def upscale_button(ui: WebUI, elem_id: str = "g-upscale") -> gr.Button:
    """Upscale: hidden when the model says the hires fix does not help (the note above says why)."""
    return gr.Button("Upscale", size="sm", elem_id=elem_id, visible=ui.service.hires_defaults.helps)


def history_upscale(ui: WebUI, status: gr.HTML, result: gr.Image):
    """History's Upscale handler: the selected image through the hires fix, shown beside it."""
    async def upscale(sel, request: gr.Request):
        if not sel:
            yield {status: status_html("Select an image in the list first.", None, "error")}
            return
        owner = owner_of(request)
        async for update, done in ui.follow(lambda: ui.store.upscale(sel, ui.service, owner), request, "history",
                                            status):
            if done is not None:
                img = done.images[0]
                update[status] = status_html(f"Upscaled {sel} as {img.id} ({img.image.width}×{img.image.height}).",
                                             None, "ok")
                update[result] = gr.Image(value=img.path, visible=True, label=f"Upscaled {img.id}")
            yield update

    return upscale
