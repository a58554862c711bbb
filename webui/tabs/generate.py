"""The Generate tab: a prompt and its settings on the left, the live preview and result on the right."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from core.request import COUNT_MAX, GUIDANCE_MAX, SAMPLERS, STEPS_MAX, GenerationRequest
from core.samplers import LABELS
from webui.recipes import error_html, fit_recipe, status_html
from webui.shared import WebUI, owner_of, parse_seed, whole


def build(ui: WebUI) -> SimpleNamespace:
    lim = ui.limits
    sampler_choices = [(LABELS[s], s) for s in SAMPLERS]

    with gr.Tab("Generate", id="generate"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=320):
                prompt = gr.Textbox(label="Prompt", lines=3, max_lines=8, elem_id="g-prompt",
                                    placeholder="cat face, 3d style")
                negative = gr.Textbox(label="Negative prompt", lines=1, max_lines=4,
                                      elem_id="g-negative", placeholder="what the image should not show")
                with gr.Row():
                    go = gr.Button("Generate", variant="primary", elem_id="g-go", scale=3)
                    cancel = gr.Button("Cancel", variant="stop", elem_id="g-cancel", scale=1)
                with gr.Row(elem_classes="st-seed-row"):
                    seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="g-seed", scale=4)
                    dice = gr.Button("Random", elem_classes="st-icon-btn", scale=0, min_width=100, elem_id="g-dice")
                    reuse = gr.Button("♻ Reuse", elem_classes="st-icon-btn", scale=0, min_width=100,
                                      elem_id="g-reuse")
                with gr.Row():
                    steps = gr.Slider(1, STEPS_MAX, value=20, step=1, label="Steps", elem_id="g-steps")
                    guidance = gr.Slider(0, GUIDANCE_MAX, value=7.0, step=0.5, label="Guidance", elem_id="g-guidance")
                with gr.Row():
                    width = gr.Slider(lim.min_side, lim.max_side, value=lim.native_size, step=lim.multiple,
                                      label="Width", elem_id="g-width")
                    height = gr.Slider(lim.min_side, lim.max_side, value=lim.native_size, step=lim.multiple,
                                       label="Height", elem_id="g-height")
                with gr.Row():
                    sampler = gr.Dropdown(sampler_choices, value=SAMPLERS[0], label="Sampler", elem_id="g-sampler")
                    count = gr.Slider(1, COUNT_MAX, value=1, step=1, label="Images", elem_id="g-count")
            with gr.Column(scale=6, min_width=320):
                status = gr.HTML(status_html("Ready."), elem_id="g-status")
                with gr.Row(equal_height=False):
                    preview = gr.Image(label="Live preview", type="pil", interactive=False,
                                       height=160, width=160, elem_id="g-preview",
                                       elem_classes=["st-pixelated", "st-fit"], buttons=[], scale=1, min_width=160)
                    gallery = gr.Gallery(label="Result", columns=2, height=320, elem_id="g-gallery",
                                         elem_classes="st-pixelated", allow_preview=False,
                                         object_fit="contain", scale=3, interactive=False)
                recipe = gr.Markdown(elem_id="g-recipe")
                with gr.Row():
                    vary_btn = gr.Button("Vary", size="sm", elem_id="g-vary")
                    inpaint_btn = gr.Button("Inpaint", size="sm", elem_id="g-inpaint")
                    repro = gr.Button("Reproduce", size="sm", elem_id="g-reproduce")
                    download = gr.DownloadButton("Download", size="sm", elem_id="g-download", interactive=False)
        ids = gr.State([])
        selected = gr.State(None)
        last_seed = gr.State(None)

    fields = [prompt, negative, seed, steps, guidance, width, height, sampler, count]
    outputs = [status, preview, gallery, ids, selected, recipe, download, last_seed]

    async def generate(prompt_, negative_, seed_, steps_, guidance_, width_, height_, sampler_, count_,
                       request: gr.Request):
        try:
            req = GenerationRequest(prompt=prompt_ or "", negative_prompt=negative_ or "", seed=parse_seed(seed_),
                                    steps=whole(steps_), guidance=float(guidance_), width=whole(width_),
                                    height=whole(height_), sampler=sampler_ or "", count=whole(count_))
        except Exception as exc:  # noqa: BLE001
            yield {status: error_html(exc)}
            return
        owner = owner_of(request)
        async for update, result in ui.follow(lambda: ui.service.submit(req, owner), request,
                                              "generate", status, preview):
            if result is not None:
                update.update(ui.result_updates(result, gallery, ids, selected, recipe, download))
                update[last_seed] = result.images[0].seed
            yield update

    go.click(generate, fields, outputs, api_visibility="private", concurrency_limit=None, show_progress="hidden")
    prompt.submit(generate, fields, outputs, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")

    def cancel_job(request: gr.Request):
        return ui.cancel("generate", request)

    cancel.click(cancel_job, None, status, api_visibility="private", concurrency_limit=None, queue=False)
    dice.click(lambda: -1, None, seed, api_visibility="private", queue=False)

    def reuse_seed(last):
        return (last, status_html(f"Seed {last} from the last image.")) if last is not None else (
            gr.Number(), status_html("No image yet: generate one first."))

    reuse.click(reuse_seed, last_seed, [seed, status], api_visibility="private", queue=False)
    gallery.select(ui.select_in(ids, selected, recipe, download), ids, [selected, recipe, download],
                   api_visibility="private")

    async def reproduce_here(rec_id, request: gr.Request):
        if not rec_id:
            yield {status: status_html("Generate an image first.", None, "error")}
            return
        owner = owner_of(request)
        async for update, result in ui.follow(lambda: ui.store.reproduce(rec_id, ui.service, owner),
                                              request, "generate", status, preview):
            if result is not None:
                update.update(ui.result_updates(result, gallery, ids, selected, recipe, download))
                same = result.images[0].sha256 == ui.store.get(rec_id).sha256
                update[status] = status_html(
                    f"Reproduced {rec_id} as {result.images[0].id}: "
                    + ("identical bytes." if same else "the file differs."), None, "ok" if same else "info")
            yield update

    repro.click(reproduce_here, selected, outputs, api_visibility="private", concurrency_limit=None,
                show_progress="hidden")

    def fill_from(fields_: dict[str, Any] | None, note_to) -> dict:
        """This tab's fields from a recipe (PNG info, History); sizes outside this model's range are clamped."""
        if not fields_:
            return {note_to: status_html("Nothing to send yet.", None, "error")}
        fields_, notes = fit_recipe(fields_, lim)
        out = {prompt: fields_.get("prompt", ""), negative: fields_.get("negative_prompt", ""), count: 1}
        if fields_.get("seed") is not None:
            out[seed] = fields_["seed"]
        for key, comp in (("steps", steps), ("guidance", guidance), ("width", width), ("height", height)):
            if fields_.get(key) is not None:
                out[comp] = fields_[key]
        if fields_.get("sampler") in SAMPLERS:
            out[sampler] = fields_["sampler"]
        if (fields_.get("variation_strength") or 0) > 0 or fields_.get("variation_chain"):
            notes.append("The variation seeds and strengths are left out (use Variations for them).")
        out[status] = status_html(" ".join(["Recipe loaded. Press Generate.", *notes]), None, "ok")
        return out

    return SimpleNamespace(status=status, selected=selected, vary_btn=vary_btn, inpaint_btn=inpaint_btn,
                           fields=fields, fill_from=fill_from)
