"""The Variations tab: a source (an id, an image from History, or an upload) and pictures near it."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from core.request import COUNT_MAX, GenerationRequest, ModelLimits
from webui.recipes import RECIPE_KINDS, UserError, error_html, fit_recipe, png_fields, status_html, upload_problem
from webui.shared import WebUI, owner_of, parse_seed, whole


def request_from_upload(data: bytes, prompt: str, strength: float, seed: int | None, count: int,
                        limits: ModelLimits) -> tuple[GenerationRequest, str]:
    """Variations of an uploaded file: its embedded recipe when it has one (its numbers moved
    into this model's range, as the upload's status line said), else img2img of it."""
    try:
        source, fields, _ = png_fields(data)
    except Exception:  # no readable recipe: vary the picture itself
        source = None
    if source is not None:
        fields, _notes = fit_recipe({k: v for k, v in fields.items() if v is not None}, limits)
        return GenerationRequest(**fields).varied(strength, seed, count), f"the upload's embedded {source} recipe"
    if strength <= 0:
        raise UserError("An upload without a recipe is varied by repainting it: "
                        "set the variation strength above 0.")
    return (GenerationRequest(prompt=prompt, init_image=data, strength=strength, seed=seed, count=count),
            "img2img of the upload (it has no recipe)")


def build(ui: WebUI) -> SimpleNamespace:
    with gr.Tab("Variations", id="vary"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=300):
                with gr.Row(elem_classes="st-seed-row"):
                    source_box = gr.Textbox(label="Source image id", placeholder="e.g. k7x2m9qa", scale=3,
                                            elem_id="v-id")
                    load = gr.Button("Load", scale=1, min_width=70, elem_id="v-load")
                with gr.Row(equal_height=True):
                    source = gr.Image(label="Source", type="filepath", interactive=False, height=170,
                                      elem_classes=["st-pixelated", "st-fit"], elem_id="v-source",
                                      buttons=[], min_width=140)
                    upload = gr.File(label="…or upload a PNG", file_types=["image"], type="binary",
                                     elem_id="v-upload", height=170, min_width=140)
                strength = gr.Slider(0, 1, value=0.25, step=0.01, label="Variation strength",
                                     info="0 = the source again, 1 = a new picture", elem_id="v-strength")
                with gr.Row():
                    go = gr.Button("Make variations", variant="primary", elem_id="v-go", scale=3)
                    cancel = gr.Button("Cancel", variant="stop", elem_id="v-cancel", scale=1, min_width=90)
                with gr.Row():
                    seed = gr.Number(label="Variation seed (-1 = random)", value=-1, precision=0, elem_id="v-seed",
                                     min_width=140)
                    count = gr.Slider(1, COUNT_MAX, value=4, step=1, label="How many", elem_id="v-count",
                                      min_width=140)
                prompt = gr.Textbox(label="Prompt (only for an upload without a recipe)", lines=1, elem_id="v-prompt")
            with gr.Column(scale=6, min_width=300):
                status = gr.HTML(status_html("Choose a source: an id, an image from History, or an upload."),
                                 elem_id="v-status")
                gallery = gr.Gallery(label="Variations (click one to see it large)", columns=2, height=460,
                                     elem_id="v-gallery", elem_classes="st-pixelated", allow_preview=True,
                                     object_fit="contain", interactive=False, buttons=["fullscreen", "download"])
                recipe = gr.Markdown(elem_id="v-recipe")
                with gr.Row():
                    walk = gr.Button("Use this one as the new source", elem_id="v-walk")
                    download = gr.DownloadButton("Download", elem_id="v-download", interactive=False)
        ids = gr.State([])
        selected = gr.State(None)
        source_id = gr.State(None)  # the id the source came from (None: an upload)

    # ---- the source
    def load_source(rec_id):
        try:
            rec = ui.store.get(rec_id or "")
        except Exception as exc:  # noqa: BLE001
            return {status: error_html(exc)}
        return {source_box: rec.id, source: str(rec.path), source_id: rec.id, upload: None,
                status: status_html(f"Source: image {rec.id}. Choose a strength and make variations.")}

    load_outputs = [source_box, source, source_id, upload, status]
    load.click(load_source, source_box, load_outputs, api_visibility="private")
    source_box.submit(load_source, source_box, load_outputs, api_visibility="private")

    def upload_source(data):
        if data is None:
            return {}
        problem = upload_problem(data)
        if problem:  # judged on arrival: nothing is kept of it
            return {source: None, source_id: None, upload: None, status: status_html(problem, None, "error")}
        try:
            kind, fields, _ = png_fields(data)
            _fields, notes = fit_recipe({k: v for k, v in fields.items() if v is not None}, ui.limits)
            text = " ".join([f"Source: the upload. It carries {RECIPE_KINDS[kind]} recipe, so variations follow "
                             "that recipe.", *notes])
        except Exception:  # noqa: BLE001 -- no recipe: img2img variations
            text = "Source: the upload. It has no recipe, so it is varied by repainting it (img2img)."
        return {source: ui.upload_path(data), source_id: None, source_box: "", status: status_html(text)}

    upload.upload(upload_source, upload, [source, source_id, source_box, upload, status], api_visibility="private")

    # ---- making variations
    async def vary(source_id_, upload_, prompt_, strength_, seed_, count_, request: gr.Request):
        owner = owner_of(request)
        strength_, seed_, count_ = float(strength_), parse_seed(seed_), whole(count_)
        if source_id_:
            def submit():
                return ui.store.vary(source_id_, ui.service, owner, strength_, seed_, count_)
        elif upload_ is not None:
            def submit():
                req, _how = request_from_upload(upload_, prompt_ or "", strength_, seed_, count_, ui.limits)
                return ui.service.submit(req, owner, kind="vary")
        else:
            yield {status: status_html("Choose a source first: type an id and press Load, pick one in "
                                       "History, or upload a PNG.", None, "error")}
            return
        async for update, result in ui.follow(submit, request, "vary", status):
            if result is not None:
                update.update(ui.result_updates(result, gallery, ids, selected, recipe, download))
            yield update

    outputs = [status, gallery, ids, selected, recipe, download]
    go.click(vary, [source_id, upload, prompt, strength, seed, count], outputs,
             api_visibility="private", concurrency_limit=None, show_progress="hidden")

    def cancel_job(request: gr.Request):
        return ui.cancel("vary", request)

    cancel.click(cancel_job, None, status, api_visibility="private", queue=False)
    gallery.select(ui.select_in(ids, selected, recipe, download), ids, [selected, recipe, download],
                   api_visibility="private")
    walk.click(lambda sel: load_source(sel) if sel else {status: status_html(
        "Make variations and pick one first.", None, "error")}, selected, load_outputs, api_visibility="private")

    return SimpleNamespace(status=status, load_source=load_source, load_outputs=load_outputs)
