"""The Timeline tab: scrub through a stored image's denoising, from static to the picture; download it."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from webui.recipes import UserError, error_html, status_html
from webui.shared import WebUI


def build(ui: WebUI) -> SimpleNamespace:
    with gr.Tab("Timeline", id="timeline"):
        with gr.Row(elem_classes="st-seed-row"):
            id_box = gr.Textbox(label="Image id", scale=3, elem_id="t-id")
            load = gr.Button("Load", scale=1, min_width=70, elem_id="t-load")
        status = gr.HTML(status_html("Every stored image keeps a few frames of its denoising, "
                                     "from static to the finished picture."), elem_id="t-status")
        frame = gr.Image(label="Frame", interactive=False, height=320, type="pil",
                         elem_id="t-frame", elem_classes=["st-pixelated", "st-fit"])
        # A fixed 0-100 range: Gradio checks a slider's value against its first range,
        # so a range that changed with each image would refuse the later frames.
        slider = gr.Slider(0, 100, value=0, step=1, label="Denoising: 0 = pure noise, 100 = the picture",
                           elem_id="t-slider")
        with gr.Row():
            webp = gr.DownloadButton("Download WebP", interactive=False, elem_id="t-webp")
            gif = gr.DownloadButton("Download GIF", interactive=False, elem_id="t-gif")
        frames = gr.State([])

    def load_timeline(rec_id):
        try:
            rec = ui.store.get(rec_id or "")
            found = ui.store.frames(rec.id)
            if not found:
                raise UserError(f"Image {rec.id} has no stored denoising frames "
                                "(STATUARY_PREVIEW_FRAMES was 0 when it was made).")
            webp_path, gif_path = ui.timeline_path(rec.id, "webp"), ui.timeline_path(rec.id, "gif")
        except Exception as exc:  # noqa: BLE001
            return {status: error_html(exc)}
        return {id_box: rec.id, frames: found, frame: found[0], slider: 0,
                webp: gr.DownloadButton(value=webp_path, interactive=True),
                gif: gr.DownloadButton(value=gif_path, interactive=True),
                status: status_html(f"Image {rec.id}: {len(found)} frames. Drag the slider from noise to picture.")}

    outputs = [id_box, frames, frame, slider, webp, gif, status]
    load.click(load_timeline, id_box, outputs, api_visibility="private")
    id_box.submit(load_timeline, id_box, outputs, api_visibility="private")

    def frame_at(frames_, percent):
        return frames_[round(float(percent) / 100 * (len(frames_) - 1))] if frames_ else None

    slider.change(frame_at, [frames, slider], frame, api_visibility="private", show_progress="hidden")

    return SimpleNamespace(load_timeline=load_timeline, outputs=outputs)
