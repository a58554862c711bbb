"""The Inpaint tab: load or upload a picture, brush over what should change, say what goes there."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import gradio as gr

from core.request import STEPS_MAX, GenerationRequest
from webui.recipes import (UserError, error_html, mask_from_layers, png_bytes, record_markdown, status_html,
                           upload_problem)
from webui.shared import WebUI, owner_of, parse_seed, whole


def build(ui: WebUI) -> SimpleNamespace:
    with gr.Tab("Inpaint", id="inpaint"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=300):
                with gr.Row(elem_classes="st-seed-row"):
                    id_box = gr.Textbox(label="Source image id", placeholder="e.g. k7x2m9qa", scale=3, elem_id="i-id")
                    load = gr.Button("Load", scale=1, min_width=70, elem_id="i-load")
                    # Uploads come through this button, not the editor, so each file is checked
                    # with the core's rules the moment it arrives.
                    upload = gr.UploadButton("Upload…", file_types=["image"], type="binary", scale=1,
                                             min_width=90, elem_id="i-upload")
                editor = gr.ImageEditor(
                    label="Paint over what should change", type="pil", image_mode="RGBA",
                    sources=["clipboard"], layers=False, transforms=(),
                    brush=gr.Brush(default_size=12, colors=["#ffffff", "#ff3b30"], color_mode="fixed"),
                    eraser=gr.Eraser(default_size=12), height=420, elem_id="i-editor",
                    canvas_size=(512, 512), fixed_canvas=False)
            with gr.Column(scale=4, min_width=300):
                prompt = gr.Textbox(label="What goes there", lines=2, elem_id="i-prompt")
                negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="i-negative")
                strength = gr.Slider(0.05, 1, value=0.75, step=0.05, label="Strength",
                                     info="how much of the painted area is repainted", elem_id="i-strength")
                with gr.Row():
                    seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="i-seed")
                    steps = gr.Slider(1, STEPS_MAX, value=20, step=1, label="Steps", elem_id="i-steps")
                with gr.Row():
                    go = gr.Button("Inpaint", variant="primary", elem_id="i-go", scale=3)
                    cancel = gr.Button("Cancel", variant="stop", elem_id="i-cancel", scale=1)
                status = gr.HTML(status_html("Load an image, paint a mask, say what goes there."), elem_id="i-status")
        with gr.Row():
            before = gr.Image(label="Source", interactive=False, height=280, elem_id="i-before",
                              elem_classes=["st-pixelated", "st-fit"], type="filepath")
            after = gr.Image(label="Inpainted", interactive=False, height=280, elem_id="i-after",
                             elem_classes=["st-pixelated", "st-fit"], type="filepath")
        with gr.Row():
            result_md = gr.Markdown(elem_id="i-result")
            download = gr.DownloadButton("Download", elem_id="i-download", interactive=False)
        source_id = gr.State(None)

    # ---- the source
    def load_source(rec_id):
        try:
            rec = ui.store.get(rec_id or "")
        except Exception as exc:  # noqa: BLE001
            return {status: error_html(exc)}
        req = rec.image_request
        return {id_box: rec.id, source_id: rec.id,
                editor: {"background": str(rec.path), "layers": [], "composite": str(rec.path)},
                prompt: req.get("prompt", ""), negative: req.get("negative_prompt", ""),
                steps: req.get("steps", 20), before: str(rec.path), after: None,
                status: status_html(f"Source: image {rec.id}. Paint over what should change.")}

    load_outputs = [id_box, source_id, editor, prompt, negative, steps, before, after, status]
    load.click(load_source, id_box, load_outputs, api_visibility="private")
    id_box.submit(load_source, id_box, load_outputs, api_visibility="private")

    def upload_source(data):
        if data is None:
            return {}
        problem = upload_problem(data)
        if problem:
            return {status: status_html(problem, None, "error")}
        path = ui.upload_path(data)
        return {id_box: "", source_id: None, before: path, after: None,
                editor: {"background": path, "layers": [], "composite": path},
                status: status_html("Source: the upload. Paint over what should change.")}

    upload.upload(upload_source, upload, [id_box, source_id, before, after, editor, status], api_visibility="private")

    # ---- inpainting
    def inpaint_request(source_id_, editor_, prompt_, negative_, strength_, seed_,
                        steps_) -> tuple[GenerationRequest, str | None]:
        import numpy as np

        background = (editor_ or {}).get("background")
        if background is None:
            raise UserError("Load an image by its id or upload one first.")
        base = None
        if source_id_:  # the stored file itself, when the editor still shows it
            rec = ui.store.get(source_id_)
            from PIL import Image

            with Image.open(rec.path) as im:
                same = im.size == background.size and np.array_equal(
                    np.asarray(im.convert("RGB")), np.asarray(background.convert("RGB")))
            if same:
                base = dataclasses.replace(ui.store.request_for(rec.id), variation_strength=0.0,
                                           variation_seed=None)
                init = rec.path.read_bytes()
            else:
                source_id_ = None
        if base is None:
            init = png_bytes(background.convert("RGB"))
            base = GenerationRequest(prompt=prompt_ or "")
        mask = mask_from_layers((editor_ or {}).get("layers"), background.size)
        if mask is None:
            raise UserError("Paint over the part of the image that should change (the brush tool), "
                            "then press Inpaint.")
        req = dataclasses.replace(base, prompt=prompt_ or "", negative_prompt=negative_ or "", count=1,
                                  seed=parse_seed(seed_), steps=whole(steps_), strength=float(strength_),
                                  init_image=init, mask=mask, width=None if source_id_ is None else base.width,
                                  height=None if source_id_ is None else base.height)
        return req, source_id_

    async def inpaint(source_id_, editor_, prompt_, negative_, strength_, seed_, steps_, request: gr.Request):
        owner = owner_of(request)
        try:
            req, parent = inpaint_request(source_id_, editor_, prompt_, negative_, strength_, seed_, steps_)
        except Exception as exc:  # noqa: BLE001
            yield {status: error_html(exc)}
            return
        shown = {} if parent is not None else {before: ui.upload_path(req.init_image)}
        yield {**shown, after: None}
        async for update, result in ui.follow(
                lambda: ui.service.submit(req, owner, parent_id=parent, kind="inpaint"), request, "inpaint", status):
            if result is not None:
                img = result.images[0]
                update.update({after: img.path, result_md: record_markdown(ui.store.get(img.id)),
                               download: gr.DownloadButton(value=ui.download_path(img.id), interactive=True)})
            yield update

    go.click(inpaint, [source_id, editor, prompt, negative, strength, seed, steps],
             [status, before, after, result_md, download], api_visibility="private",
             concurrency_limit=None, show_progress="hidden")

    def cancel_job(request: gr.Request):
        return ui.cancel("inpaint", request)

    cancel.click(cancel_job, None, status, api_visibility="private", queue=False)

    return SimpleNamespace(status=status, load_source=load_source, load_outputs=load_outputs)
