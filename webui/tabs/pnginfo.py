"""The PNG info tab: drop a PNG (ours or AUTOMATIC1111's), read its recipe, send it to Generate."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from webui.recipes import RECIPE_KINDS, error_html, png_fields, status_html, upload_problem
from webui.shared import WebUI


def build(ui: WebUI) -> SimpleNamespace:
    with gr.Tab("PNG info", id="pnginfo"):
        with gr.Row(equal_height=False):
            with gr.Column(scale=4, min_width=280):
                file = gr.File(label="Drop a PNG (ours or AUTOMATIC1111's)", file_types=[".png", "image"],
                               type="binary", elem_id="p-file", height=160)
                send = gr.Button("Send to Generate", variant="primary", elem_id="p-send", interactive=False)
                image = gr.Image(label="The picture", type="filepath", interactive=False, height=320,
                                 elem_id="p-image", elem_classes=["st-pixelated", "st-fit"], buttons=["fullscreen"])
            with gr.Column(scale=6, min_width=280):
                status = gr.HTML(status_html("The recipe of a PNG appears here."), elem_id="p-status")
                info = gr.Markdown(elem_id="p-info")
        fields = gr.State(None)

    def png_info(data):
        if data is None:
            return {info: "", fields: None, send: gr.Button(interactive=False), image: None,
                    status: status_html("The recipe of a PNG appears here.")}
        shown = None if upload_problem(data) else ui.upload_path(data)
        try:
            source, found, md = png_fields(data)
        except Exception as exc:  # noqa: BLE001
            return {info: "", fields: None, send: gr.Button(interactive=False), image: shown, status: error_html(exc)}
        return {info: md, fields: found, send: gr.Button(interactive=True), image: shown,
                status: status_html(f"{RECIPE_KINDS[source][0].upper()}{RECIPE_KINDS[source][1:]} recipe.", None, "ok")}

    file.change(png_info, file, [info, fields, send, image, status], api_visibility="private")

    return SimpleNamespace(status=status, fields=fields, send=send)
