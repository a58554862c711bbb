"""The Gradio web UI: Generate, Variations, Inpaint, History, Timeline and PNG info tabs.

    statuary webui --host 127.0.0.1 --port 7860     # or `statuary serve` (with the bot)

It holds a JobService and a Store and nothing else of the back end: no torch, no model.
Each browser is its own Owner("web", login name or session), so the service's fair queue
gives every browser its own place in line. Every handler turns errors into a message in the
tab's status box. Scripts drive the same operations through named endpoints
(see API_NAMES) with gradio_client.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from core.jobs import (Cancelled, Done, Failed, JobCancelled, JobFailed, JobHandle, JobResult, JobService, Owner,
                       Progress, Queued, Started)
from core.request import COUNT_MAX, SAMPLERS, SEED_MAX, STEPS_MAX, GenerationRequest
from core.samplers import LABELS
from webui.recipes import (UserError, error_html, error_message, mask_from_layers, png_bytes, png_fields,
                           record_markdown, recipe_rows, rows_markdown, status_html)

log = logging.getLogger(__name__)

API_NAMES = ("generate", "reproduce", "vary", "inpaint", "verify", "history", "recipe")
HISTORY_PER_PAGE = 20
PROGRESS_EVERY_S = 0.12  # at most this often a progress update goes to the browser

# System fonts only: a self-hosted tool should not fetch fonts from Google on every page load.
SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica", "Arial", "sans-serif"]
MONO_FONTS = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]

CSS = """
.gradio-container { width: 100% !important; max-width: 1240px !important; margin: 0 auto !important; }
#st-header h1 { margin: 0; font-size: 1.6rem; }
#st-header p { margin: 0.1rem 0 0; opacity: 0.75; font-size: 0.9rem; }
.st-status { padding: 0.55rem 0.75rem; border-radius: 8px; background: var(--block-background-fill);
             border: 1px solid var(--border-color-primary); min-height: 2.6rem; }
.st-status .st-msg { display: block; font-size: 0.95rem; }
.st-error { border-color: #d64545; background: rgba(214, 69, 69, 0.08); color: #b42318; }
.st-ok { border-color: #2e9e5b; background: rgba(46, 158, 91, 0.08); }
.st-bar { height: 8px; margin-top: 0.4rem; border-radius: 4px; background: var(--border-color-primary); overflow: hidden; }
.st-bar > div { height: 100%; background: var(--color-accent); transition: width 0.12s linear; }
.st-pixelated img { image-rendering: pixelated; }
.st-fit img { width: 100% !important; height: 100% !important; object-fit: contain; }
table.st-recipe, table.st-recipe tr, table.st-recipe th, table.st-recipe td { border: 0 !important; background: none !important; }
table.st-recipe tr + tr > * { border-top: 1px solid var(--border-color-primary) !important; }
.st-seed-row { align-items: end !important; }
.st-icon-btn { flex-grow: 0 !important; white-space: nowrap; }
table.st-recipe { border-collapse: collapse; width: 100%; font-size: 0.9rem; margin-top: 0.4rem; }
table.st-recipe th { text-align: left; font-weight: 600; width: 9.5rem; padding: 0.25rem 0.6rem 0.25rem 0; vertical-align: top; opacity: 0.8; }
table.st-recipe td { padding: 0.25rem 0; word-break: break-word; }
.st-count-row { align-items: center !important; flex-wrap: nowrap !important; }
.st-count-row > #h-count { flex: 1 1 auto !important; }
.st-count-row > #h-mine { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important;
                          background: none !important; border: 0 !important; box-shadow: none !important; }
button.st-danger { color: #b42318 !important; border-color: rgba(214, 69, 69, 0.45) !important; }
footer { display: none !important; }
"""


def owner_of(request: gr.Request | None) -> Owner:
    """The person behind a browser: their login name, or else their Gradio session."""
    name = getattr(request, "username", None) if request is not None else None
    if name:
        return Owner("web", str(name), str(name))
    session = (getattr(request, "session_hash", None) if request is not None else None) or "anonymous"
    return Owner("web", session, f"web-{session[:6]}")


def _seed(value: Any) -> int | None:
    """The seed box: empty or negative means 'random'."""
    if value is None or value == "":
        return None
    value = int(value) if float(value).is_integer() else value
    return None if isinstance(value, int) and value < 0 else value


def _int(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


class WebUI:
    """The app's state shared by all browsers: the service, the store and who runs what."""

    def __init__(self, service: JobService, store: Any, settings: Any = None):
        self.service = service
        self.store = store
        self.settings = settings
        self.limits = service.limits
        self._jobs: dict[tuple[str, str], JobHandle] = {}  # (session, tab) -> its running job
        self._downloads = Path(tempfile.mkdtemp(prefix="statuary-webui-"))

    # ---- jobs ------------------------------------------------------------------------------------

    async def follow(self, submit, request: gr.Request | None, tab: str, status: gr.HTML,
                     preview: gr.Image | None = None):
        """Submit a job and yield ({component: value}, result-or-None) while it runs: queue
        position, progress bar, live preview. Errors become the status box's message."""
        key = (getattr(request, "session_hash", None) or "anonymous", tab)
        try:
            handle = await asyncio.to_thread(submit)
        except Exception as exc:  # noqa: BLE001 -- shown, never raised to the browser
            yield {status: error_html(exc)}, None
            return
        self._jobs[key] = handle
        count = handle.request.count
        last = 0.0
        try:
            async for ev in handle.events():
                if isinstance(ev, Queued):
                    yield {status: status_html(f"Waiting in the queue: position {ev.position}", 0.0)}, None
                elif isinstance(ev, Started):
                    yield {status: status_html("Starting…", 0.0)}, None
                elif isinstance(ev, Progress):
                    now = time.monotonic()
                    if now - last < PROGRESS_EVERY_S and ev.step < ev.total:
                        continue
                    last = now
                    text = f"Step {ev.step} of {ev.total}" + (
                        f" · image {ev.image_index + 1} of {count}" if count > 1 else "")
                    update = {status: status_html(text, ev.step / ev.total)}
                    if preview is not None:
                        update[preview] = ev.preview
                    yield update, None
                elif isinstance(ev, Done):
                    r = ev.result
                    yield {status: status_html(
                        f"Done in {r.seconds:.1f} s: " + ", ".join(i.id or "?" for i in r.images), None, "ok")}, r
                elif isinstance(ev, Failed):
                    raise JobFailed(ev.reason, ev.error_type)
                elif isinstance(ev, Cancelled):
                    raise JobCancelled()
        except Exception as exc:  # noqa: BLE001
            yield {status: error_html(exc)}, None
        finally:
            if self._jobs.get(key) is handle:
                del self._jobs[key]

    def cancel_generate(self, request: gr.Request) -> str:
        return self.cancel("generate", request)

    def cancel_vary(self, request: gr.Request) -> str:
        return self.cancel("vary", request)

    def cancel_inpaint(self, request: gr.Request) -> str:
        return self.cancel("inpaint", request)

    def cancel(self, tab: str, request: gr.Request | None) -> Any:
        handle = self._jobs.get((getattr(request, "session_hash", None) or "anonymous", tab))
        if handle is None or handle.done:
            return status_html("Nothing is running here.")
        handle.cancel()
        return gr.skip()  # the job's own stream says "Cancelled." (a message here could land after it)

    # ---- helpers ---------------------------------------------------------------------------------

    def download_path(self, image_id: str) -> str:
        """A copy of the image's PNG named after its id (the store names files by content hash)."""
        rec = self.store.get(image_id)
        target = self._downloads / rec.id / f"statuary-{rec.id}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(rec.path, target)
        return str(target)

    def timeline_path(self, image_id: str, fmt: str) -> str:
        src = Path(self.store.timeline_file(image_id, fmt))
        rec_id = image_id.strip().lower()
        target = self._downloads / rec_id / f"statuary-{rec_id}-timeline.{fmt}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        return str(target)

    def gallery(self, result: JobResult) -> list[tuple[str, str]]:
        return [(img.path, f"{img.id} · seed {img.seed}") for img in result.images]

    def request_from_upload(self, data: bytes, prompt: str, strength: float, seed: int | None,
                            count: int) -> tuple[GenerationRequest, str]:
        """Variations of an uploaded file: its embedded recipe when it has one, else img2img of it."""
        try:
            source, fields, _ = png_fields(data)
        except Exception:  # no readable recipe: vary the picture itself
            source = None
        if source is not None:
            fields = {k: v for k, v in fields.items() if v is not None}
            fields.update(variation_strength=strength, variation_seed=seed, count=count)
            return GenerationRequest(**fields), f"the upload's embedded {source} recipe"
        if strength <= 0:
            raise UserError("An upload without a recipe is varied by repainting it: "
                            "set the variation strength above 0.")
        return (GenerationRequest(prompt=prompt, init_image=data, strength=strength, seed=seed, count=count),
                "img2img of the upload (it has no recipe)")

    # ---- the page -------------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        lim = self.limits
        info = self.service.model_info
        model_name = str(info.get("model_id", "model")).rstrip("/").split("/")[-1]
        sampler_choices = [(LABELS[s], s) for s in SAMPLERS]

        with gr.Blocks(title="Statuary", analytics_enabled=False, fill_width=True) as demo:
            self._api(demo)  # first, so the named endpoints get their plain names
            with gr.Row(elem_id="st-header"):
                gr.Markdown(f"# Statuary\n{model_name} · {lim.native_size} px · {info.get('device', '')}")
            with gr.Tabs(selected="generate") as tabs:
                # ---------------------------------------------------------------- Generate
                with gr.Tab("Generate", id="generate"):
                    with gr.Row(equal_height=False):
                        with gr.Column(scale=5, min_width=320):
                            g_prompt = gr.Textbox(label="Prompt", lines=3, max_lines=8, elem_id="g-prompt",
                                                  placeholder="cat face, 3d style")
                            g_negative = gr.Textbox(label="Negative prompt", lines=1, max_lines=4,
                                                    elem_id="g-negative", placeholder="what the image should not show")
                            with gr.Row():
                                g_go = gr.Button("Generate", variant="primary", elem_id="g-go", scale=3)
                                g_cancel = gr.Button("Cancel", variant="stop", elem_id="g-cancel", scale=1)
                            with gr.Row(elem_classes="st-seed-row"):
                                g_seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="g-seed", scale=4)
                                g_dice = gr.Button("Random", elem_classes="st-icon-btn", scale=0, min_width=100,
                                                   elem_id="g-dice")
                                g_reuse = gr.Button("♻ Reuse", elem_classes="st-icon-btn", scale=0, min_width=100,
                                                    elem_id="g-reuse")
                            with gr.Row():
                                g_steps = gr.Slider(1, STEPS_MAX, value=20, step=1, label="Steps", elem_id="g-steps")
                                g_guidance = gr.Slider(0, 20, value=7.0, step=0.5, label="Guidance",
                                                       elem_id="g-guidance")
                            with gr.Row():
                                g_width = gr.Slider(64, lim.max_side, value=lim.native_size, step=lim.multiple,
                                                    label="Width", elem_id="g-width")
                                g_height = gr.Slider(64, lim.max_side, value=lim.native_size, step=lim.multiple,
                                                     label="Height", elem_id="g-height")
                            with gr.Row():
                                g_sampler = gr.Dropdown(sampler_choices, value=SAMPLERS[0], label="Sampler",
                                                        elem_id="g-sampler")
                                g_count = gr.Slider(1, COUNT_MAX, value=1, step=1, label="Images", elem_id="g-count")
                        with gr.Column(scale=6, min_width=320):
                            g_status = gr.HTML(status_html("Ready."), elem_id="g-status")
                            with gr.Row(equal_height=False):
                                g_preview = gr.Image(label="Live preview", type="pil", interactive=False,
                                                     height=160, width=160, elem_id="g-preview",
                                                     elem_classes=["st-pixelated", "st-fit"], buttons=[], scale=1,
                                                     min_width=160)
                                g_gallery = gr.Gallery(label="Result", columns=2, height=320, elem_id="g-gallery",
                                                       elem_classes="st-pixelated", allow_preview=False,
                                                       object_fit="contain", scale=3, interactive=False)
                            g_recipe = gr.Markdown(elem_id="g-recipe")
                            with gr.Row():
                                g_vary = gr.Button("Vary", size="sm", elem_id="g-vary")
                                g_inpaint = gr.Button("Inpaint", size="sm", elem_id="g-inpaint")
                                g_repro = gr.Button("Reproduce", size="sm", elem_id="g-reproduce")
                                g_download = gr.DownloadButton("Download", size="sm", elem_id="g-download",
                                                               interactive=False)
                    g_ids = gr.State([])
                    g_selected = gr.State(None)
                    g_last_seed = gr.State(None)

                # ---------------------------------------------------------------- Variations
                with gr.Tab("Variations", id="vary"):
                    with gr.Row(equal_height=False):
                        with gr.Column(scale=4, min_width=300):
                            with gr.Row(elem_classes="st-seed-row"):
                                v_id = gr.Textbox(label="Source image id", placeholder="e.g. k7x2m9qa", scale=3,
                                                  elem_id="v-id")
                                v_load = gr.Button("Load", scale=1, min_width=70, elem_id="v-load")
                            with gr.Row(equal_height=True):
                                v_source = gr.Image(label="Source", type="filepath", interactive=False, height=170,
                                                    elem_classes=["st-pixelated", "st-fit"], elem_id="v-source",
                                                    buttons=[], min_width=140)
                                v_upload = gr.File(label="…or upload a PNG", file_types=["image"], type="binary",
                                                   elem_id="v-upload", height=170, min_width=140)
                            v_prompt = gr.Textbox(label="Prompt (only for an upload without a recipe)", lines=1,
                                                  elem_id="v-prompt")
                            v_strength = gr.Slider(0, 1, value=0.25, step=0.01, label="Variation strength",
                                                   info="0 = the source again, 1 = a new picture", elem_id="v-strength")
                            with gr.Row():
                                v_seed = gr.Number(label="Variation seed (-1 = random)", value=-1, precision=0, elem_id="v-seed")
                                v_count = gr.Slider(1, COUNT_MAX, value=4, step=1, label="How many", elem_id="v-count")
                            with gr.Row():
                                v_go = gr.Button("Make variations", variant="primary", elem_id="v-go", scale=3)
                                v_cancel = gr.Button("Cancel", variant="stop", elem_id="v-cancel", scale=1)
                        with gr.Column(scale=6, min_width=300):
                            v_status = gr.HTML(status_html("Choose a source: an id, an image from History, or an upload."),
                                               elem_id="v-status")
                            v_gallery = gr.Gallery(label="Variations", columns=4, height=300, elem_id="v-gallery",
                                                   elem_classes="st-pixelated", allow_preview=False,
                                                   object_fit="contain", interactive=False)
                            v_recipe = gr.Markdown(elem_id="v-recipe")
                            with gr.Row():
                                v_walk = gr.Button("Use this one as the new source", elem_id="v-walk")
                                v_download = gr.DownloadButton("Download", elem_id="v-download", interactive=False)
                    v_ids = gr.State([])
                    v_selected = gr.State(None)
                    v_source_id = gr.State(None)  # the id the source came from (None: an upload)

                # ---------------------------------------------------------------- Inpaint
                with gr.Tab("Inpaint", id="inpaint"):
                    with gr.Row(equal_height=False):
                        with gr.Column(scale=5, min_width=300):
                            with gr.Row(elem_classes="st-seed-row"):
                                i_id = gr.Textbox(label="Source image id", placeholder="or upload into the editor",
                                                  scale=3, elem_id="i-id")
                                i_load = gr.Button("Load", scale=1, min_width=70, elem_id="i-load")
                            i_editor = gr.ImageEditor(
                                label="Paint over what should change", type="pil", image_mode="RGBA",
                                sources=["upload", "clipboard"], layers=False, transforms=(),
                                brush=gr.Brush(default_size=12, colors=["#ffffff", "#ff3b30"], color_mode="fixed"),
                                eraser=gr.Eraser(default_size=12), height=420, elem_id="i-editor",
                                canvas_size=(512, 512), fixed_canvas=False)
                        with gr.Column(scale=4, min_width=300):
                            i_prompt = gr.Textbox(label="What goes there", lines=2, elem_id="i-prompt")
                            i_negative = gr.Textbox(label="Negative prompt", lines=1, elem_id="i-negative")
                            i_strength = gr.Slider(0.05, 1, value=0.75, step=0.05, label="Strength",
                                                   info="how much of the painted area is repainted", elem_id="i-strength")
                            with gr.Row():
                                i_seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0,
                                                   elem_id="i-seed")
                                i_steps = gr.Slider(1, STEPS_MAX, value=20, step=1, label="Steps", elem_id="i-steps")
                            with gr.Row():
                                i_go = gr.Button("Inpaint", variant="primary", elem_id="i-go", scale=3)
                                i_cancel = gr.Button("Cancel", variant="stop", elem_id="i-cancel", scale=1)
                            i_status = gr.HTML(status_html("Load an image, paint a mask, say what goes there."),
                                               elem_id="i-status")
                    with gr.Row():
                        i_before = gr.Image(label="Source", interactive=False, height=280, elem_id="i-before",
                                            elem_classes=["st-pixelated", "st-fit"], type="filepath")
                        i_after = gr.Image(label="Inpainted", interactive=False, height=280, elem_id="i-after",
                                           elem_classes=["st-pixelated", "st-fit"], type="filepath")
                    with gr.Row():
                        i_result_md = gr.Markdown(elem_id="i-result")
                        i_download = gr.DownloadButton("Download", elem_id="i-download", interactive=False)
                    i_source_id = gr.State(None)

                # ---------------------------------------------------------------- History
                with gr.Tab("History", id="history") as history_tab:
                    with gr.Row(elem_classes="st-seed-row"):
                        with gr.Column(scale=3, min_width=300), gr.Row(elem_classes="st-seed-row"):
                            h_query = gr.Textbox(label="Search prompts", placeholder="words in the prompt", scale=4,
                                                 elem_id="h-query", min_width=180)
                            h_search = gr.Button("Search", scale=1, min_width=90, elem_id="h-search")
                        with gr.Column(scale=1, min_width=240), gr.Row(elem_classes="st-seed-row"):
                            h_prev = gr.Button("◀", scale=0, min_width=56, elem_id="h-prev")
                            h_page = gr.Number(value=1, precision=0, minimum=1, label="Page", scale=1, min_width=80,
                                               elem_id="h-page")
                            h_next = gr.Button("▶", scale=0, min_width=56, elem_id="h-next")
                    with gr.Row(elem_classes="st-count-row"):
                        h_count = gr.Markdown(elem_id="h-count")
                        h_mine = gr.Checkbox(label="Only mine", value=False, container=False, scale=0,
                                             min_width=130, elem_id="h-mine")
                    h_gallery = gr.Gallery(label="Newest first", columns=6, height=300, elem_id="h-gallery",
                                           elem_classes="st-pixelated", allow_preview=False, object_fit="contain",
                                           interactive=False)
                    with gr.Row(equal_height=False):
                        h_image = gr.Image(label="Selected", interactive=False, height=260, type="filepath",
                                           elem_id="h-image", elem_classes=["st-pixelated", "st-fit"])
                        with gr.Column(scale=2):
                            h_details = gr.Markdown("Select an image to see its recipe.", elem_id="h-details")
                            with gr.Row():
                                h_repro = gr.Button("Reproduce", size="sm", elem_id="h-reproduce")
                                h_verify = gr.Button("Verify", size="sm", elem_id="h-verify")
                                h_vary = gr.Button("Vary", size="sm", elem_id="h-vary")
                                h_inpaint = gr.Button("Inpaint", size="sm", elem_id="h-inpaint")
                                h_timeline = gr.Button("Timeline", size="sm", elem_id="h-timeline")
                                h_send = gr.Button("Send to Generate", size="sm", elem_id="h-send")
                                h_download = gr.DownloadButton("Download", size="sm", elem_id="h-download",
                                                               interactive=False)
                                h_delete = gr.Button("Delete", size="sm", variant="stop", elem_id="h-delete",
                                                     elem_classes="st-danger")
                            h_status = gr.HTML(status_html(""), elem_id="h-status")
                            h_result = gr.Image(label="Reproduction", interactive=False, height=160, visible=False,
                                                type="filepath", elem_id="h-result", elem_classes=["st-pixelated", "st-fit"])
                    h_ids = gr.State([])
                    h_selected = gr.State(None)

                # ---------------------------------------------------------------- Timeline
                with gr.Tab("Timeline", id="timeline"):
                    with gr.Row(elem_classes="st-seed-row"):
                        t_id = gr.Textbox(label="Image id", scale=3, elem_id="t-id")
                        t_load = gr.Button("Load", scale=1, min_width=70, elem_id="t-load")
                    t_status = gr.HTML(status_html("Every stored image keeps a few frames of its denoising, "
                                                   "from static to the finished picture."), elem_id="t-status")
                    t_frame_img = gr.Image(label="Frame", interactive=False, height=320, type="pil",
                                           elem_id="t-frame", elem_classes=["st-pixelated", "st-fit"])
                    # A fixed 0-100 range: Gradio checks a slider's value against its first range,
                    # so a range that changed with each image would refuse the later frames.
                    t_slider = gr.Slider(0, 100, value=0, step=1, label="Denoising: 0 = pure noise, 100 = the picture",
                                         elem_id="t-slider")
                    with gr.Row():
                        t_webp = gr.DownloadButton("Download WebP", interactive=False, elem_id="t-webp")
                        t_gif = gr.DownloadButton("Download GIF", interactive=False, elem_id="t-gif")
                    t_frames = gr.State([])

                # ---------------------------------------------------------------- PNG info
                with gr.Tab("PNG info", id="pnginfo"):
                    with gr.Row(equal_height=False):
                        with gr.Column(scale=4, min_width=280):
                            p_file = gr.File(label="Drop a PNG (ours or AUTOMATIC1111's)", file_types=[".png", "image"],
                                             type="binary", elem_id="p-file", height=160)
                            p_send = gr.Button("Send to Generate", variant="primary", elem_id="p-send",
                                               interactive=False)
                        with gr.Column(scale=6, min_width=280):
                            p_status = gr.HTML(status_html("The recipe of a PNG appears here."), elem_id="p-status")
                            p_info = gr.Markdown(elem_id="p-info")
                    p_fields = gr.State(None)

            # ======================================================================= wiring
            gen_fields = [g_prompt, g_negative, g_seed, g_steps, g_guidance, g_width, g_height, g_sampler, g_count]

            def show_selected(rec_id: str | None):
                """Recipe markdown and download button for one stored image."""
                if not rec_id:
                    return "", gr.DownloadButton(value=None, interactive=False)
                rec = self.store.get(rec_id)
                return record_markdown(rec), gr.DownloadButton(value=self.download_path(rec.id), interactive=True)

            def result_updates(result: JobResult, gallery, ids_state, selected_state, recipe_md, download):
                ids = [img.id for img in result.images]
                md, dl = show_selected(ids[0])
                return {gallery: self.gallery(result), ids_state: ids, selected_state: ids[0], recipe_md: md,
                        download: dl}

            # ---- Generate
            async def generate(prompt, negative, seed, steps, guidance, width, height, sampler, count,
                               request: gr.Request):
                try:
                    req = GenerationRequest(prompt=prompt or "", negative_prompt=negative or "", seed=_seed(seed),
                                            steps=_int(steps), guidance=float(guidance), width=_int(width),
                                            height=_int(height), sampler=sampler or "", count=_int(count))
                except Exception as exc:  # noqa: BLE001
                    yield {g_status: error_html(exc)}
                    return
                owner = owner_of(request)
                async for update, result in self.follow(lambda: self.service.submit(req, owner), request,
                                                        "generate", g_status, g_preview):
                    if result is not None:
                        update.update(result_updates(result, g_gallery, g_ids, g_selected, g_recipe, g_download))
                        update[g_last_seed] = result.images[0].seed
                    yield update

            gen_outputs = [g_status, g_preview, g_gallery, g_ids, g_selected, g_recipe, g_download, g_last_seed]
            g_go.click(generate, gen_fields, gen_outputs, api_visibility="private", concurrency_limit=None,
                       show_progress="hidden")
            g_prompt.submit(generate, gen_fields, gen_outputs, api_visibility="private", concurrency_limit=None,
                            show_progress="hidden")
            g_cancel.click(self.cancel_generate, None, g_status, api_visibility="private",
                           concurrency_limit=None, queue=False)
            g_dice.click(lambda: -1, None, g_seed, api_visibility="private", queue=False)

            def reuse_seed(last):
                return (last, status_html(f"Seed {last} from the last image.")) if last is not None else (
                    gr.Number(), status_html("No image yet: generate one first."))

            g_reuse.click(reuse_seed, g_last_seed, [g_seed, g_status], api_visibility="private", queue=False)

            def select_in(ids_state, selected_state, recipe_md, download):
                def on_select(ids, evt: gr.SelectData):
                    rec_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
                    md, dl = show_selected(rec_id)
                    return {selected_state: rec_id, recipe_md: md, download: dl}
                return on_select

            g_gallery.select(select_in(g_ids, g_selected, g_recipe, g_download), g_ids,
                             [g_selected, g_recipe, g_download], api_visibility="private")

            async def reproduce_here(rec_id, request: gr.Request):
                if not rec_id:
                    yield {g_status: status_html("Generate an image first.", None, "error")}
                    return
                owner = owner_of(request)
                async for update, result in self.follow(lambda: self.store.reproduce(rec_id, self.service, owner),
                                                        request, "generate", g_status, g_preview):
                    if result is not None:
                        update.update(result_updates(result, g_gallery, g_ids, g_selected, g_recipe, g_download))
                        same = result.images[0].sha256 == self.store.get(rec_id).sha256
                        update[g_status] = status_html(
                            f"Reproduced {rec_id} as {result.images[0].id}: "
                            + ("identical bytes." if same else "the file differs."), None, "ok" if same else "info")
                    yield update

            g_repro.click(reproduce_here, g_selected, gen_outputs, api_visibility="private", concurrency_limit=None,
                          show_progress="hidden")

            # ---- Variations: sources
            def load_vary_source(rec_id):
                try:
                    rec = self.store.get(rec_id or "")
                except Exception as exc:  # noqa: BLE001
                    return {v_status: error_html(exc)}
                return {v_id: rec.id, v_source: str(rec.path), v_source_id: rec.id, v_upload: None,
                        v_status: status_html(f"Source: image {rec.id}. Choose a strength and make variations.")}

            v_load_outputs = [v_id, v_source, v_source_id, v_upload, v_status]
            v_load.click(load_vary_source, v_id, v_load_outputs, api_visibility="private")
            v_id.submit(load_vary_source, v_id, v_load_outputs, api_visibility="private")

            def upload_vary_source(data):
                if data is None:
                    return {}
                try:
                    source, _, _ = png_fields(data)
                    text = f"Source: the upload. It carries a {source} recipe, so variations follow that recipe."
                except Exception:  # noqa: BLE001 -- no recipe: img2img variations
                    text = "Source: the upload. It has no recipe, so it is varied by repainting it (img2img)."
                path = self._downloads / "uploads" / f"{abs(hash(data))}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
                return {v_source: str(path), v_source_id: None, v_id: "", v_status: status_html(text)}

            v_upload.upload(upload_vary_source, v_upload, [v_source, v_source_id, v_id, v_status],
                            api_visibility="private")

            async def vary(source_id, upload, prompt, strength, seed, count, request: gr.Request):
                owner = owner_of(request)
                strength, seed, count = float(strength), _seed(seed), _int(count)
                if source_id:
                    def submit():
                        return self.store.vary(source_id, self.service, owner, strength, seed, count)
                elif upload is not None:
                    def submit():
                        req, _how = self.request_from_upload(upload, prompt or "", strength, seed, count)
                        return self.service.submit(req, owner, kind="vary")
                else:
                    yield {v_status: status_html("Choose a source first: type an id and press Load, pick one in "
                                                 "History, or upload a PNG.", None, "error")}
                    return
                async for update, result in self.follow(submit, request, "vary", v_status):
                    if result is not None:
                        update.update(result_updates(result, v_gallery, v_ids, v_selected, v_recipe, v_download))
                    yield update

            v_outputs = [v_status, v_gallery, v_ids, v_selected, v_recipe, v_download]
            v_go.click(vary, [v_source_id, v_upload, v_prompt, v_strength, v_seed, v_count], v_outputs,
                       api_visibility="private", concurrency_limit=None, show_progress="hidden")
            v_cancel.click(self.cancel_vary, None, v_status, api_visibility="private",
                           queue=False)
            v_gallery.select(select_in(v_ids, v_selected, v_recipe, v_download), v_ids,
                             [v_selected, v_recipe, v_download], api_visibility="private")
            v_walk.click(lambda sel: load_vary_source(sel) if sel else {v_status: status_html(
                "Make variations and pick one first.", None, "error")}, v_selected, v_load_outputs,
                api_visibility="private")

            # ---- Inpaint
            def load_inpaint_source(rec_id):
                try:
                    rec = self.store.get(rec_id or "")
                except Exception as exc:  # noqa: BLE001
                    return {i_status: error_html(exc)}
                req = rec.image_request
                return {i_id: rec.id, i_source_id: rec.id,
                        i_editor: {"background": str(rec.path), "layers": [], "composite": str(rec.path)},
                        i_prompt: req.get("prompt", ""), i_negative: req.get("negative_prompt", ""),
                        i_steps: req.get("steps", 20), i_before: str(rec.path), i_after: None,
                        i_status: status_html(f"Source: image {rec.id}. Paint over what should change.")}

            i_load_outputs = [i_id, i_source_id, i_editor, i_prompt, i_negative, i_steps, i_before, i_after, i_status]
            i_load.click(load_inpaint_source, i_id, i_load_outputs, api_visibility="private")
            i_id.submit(load_inpaint_source, i_id, i_load_outputs, api_visibility="private")

            def inpaint_request(source_id, editor, prompt, negative, strength, seed, steps) -> tuple[GenerationRequest, str | None]:
                import numpy as np

                background = (editor or {}).get("background")
                if background is None:
                    raise UserError("Load an image by its id or upload one into the editor first.")
                base = None
                if source_id:  # the stored file itself, when the editor still shows it
                    rec = self.store.get(source_id)
                    from PIL import Image

                    with Image.open(rec.path) as im:
                        same = im.size == background.size and np.array_equal(
                            np.asarray(im.convert("RGB")), np.asarray(background.convert("RGB")))
                    if same:
                        base = dataclasses.replace(self.store.request_for(rec.id), variation_strength=0.0,
                                                   variation_seed=None)
                        init = rec.path.read_bytes()
                    else:
                        source_id = None
                if base is None:
                    init = png_bytes(background.convert("RGB"))
                    base = GenerationRequest(prompt=prompt or "")
                mask = mask_from_layers((editor or {}).get("layers"), background.size)
                if mask is None:
                    raise UserError("Paint over the part of the image that should change (the brush tool), "
                                    "then press Inpaint.")
                req = dataclasses.replace(base, prompt=prompt or "", negative_prompt=negative or "", count=1,
                                          seed=_seed(seed), steps=_int(steps), strength=float(strength),
                                          init_image=init, mask=mask, width=None if source_id is None else base.width,
                                          height=None if source_id is None else base.height)
                return req, source_id

            async def inpaint(source_id, editor, prompt, negative, strength, seed, steps, request: gr.Request):
                owner = owner_of(request)
                try:
                    req, parent = inpaint_request(source_id, editor, prompt, negative, strength, seed, steps)
                except Exception as exc:  # noqa: BLE001
                    yield {i_status: error_html(exc)}
                    return
                before = {}
                if parent is None:
                    path = self._downloads / "uploads" / f"{abs(hash(req.init_image))}.png"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(req.init_image)
                    before = {i_before: str(path)}
                yield {**before, i_after: None}
                async for update, result in self.follow(
                        lambda: self.service.submit(req, owner, parent_id=parent, kind="inpaint"),
                        request, "inpaint", i_status):
                    if result is not None:
                        img = result.images[0]
                        update.update({i_after: img.path, i_result_md: record_markdown(self.store.get(img.id)),
                                       i_download: gr.DownloadButton(value=self.download_path(img.id), interactive=True)})
                    yield update

            i_go.click(inpaint, [i_source_id, i_editor, i_prompt, i_negative, i_strength, i_seed, i_steps],
                       [i_status, i_before, i_after, i_result_md, i_download], api_visibility="private",
                       concurrency_limit=None, show_progress="hidden")
            i_cancel.click(self.cancel_inpaint, None, i_status, api_visibility="private",
                           queue=False)

            # ---- History
            def history(query, page, mine=False, request: gr.Request | None = None):
                page = max(1, _int(page) or 1)
                owner = owner_of(request) if mine else None
                result = self.store.history(owner=owner, query=query or None, page=page, per_page=HISTORY_PER_PAGE)
                if page > result.pages and result.total:
                    page = result.pages
                    result = self.store.history(owner=owner, query=query or None, page=page,
                                                per_page=HISTORY_PER_PAGE)
                items = [(str(r.path), f"{r.id} · {r.image_request.get('prompt', '')[:40]}") for r in result.items]
                found = f"{result.total} image{'s' if result.total != 1 else ''}" + (" of yours" if mine else "") + (
                    f" matching “{query}”" if query else "") + f" · page {page} of {result.pages}"
                return {h_gallery: items, h_ids: [r.id for r in result.items], h_page: page, h_count: found}

            def history_first(query, mine, request: gr.Request):
                return history(query, 1, mine, request)

            def history_prev(query, page, mine, request: gr.Request):
                return history(query, (_int(page) or 1) - 1, mine, request)

            def history_next(query, page, mine, request: gr.Request):
                return history(query, (_int(page) or 1) + 1, mine, request)

            def history_here(query, page, mine, request: gr.Request):
                return history(query, page, mine, request)

            h_outputs = [h_gallery, h_ids, h_page, h_count]
            h_search.click(history_first, [h_query, h_mine], h_outputs, api_visibility="private")
            h_query.submit(history_first, [h_query, h_mine], h_outputs, api_visibility="private")
            h_mine.input(history_first, [h_query, h_mine], h_outputs, api_visibility="private")
            h_prev.click(history_prev, [h_query, h_page, h_mine], h_outputs, api_visibility="private")
            h_next.click(history_next, [h_query, h_page, h_mine], h_outputs, api_visibility="private")
            h_page.submit(history_here, [h_query, h_page, h_mine], h_outputs, api_visibility="private")
            history_tab.select(history_here, [h_query, h_page, h_mine], h_outputs, api_visibility="private")

            def history_select(ids, evt: gr.SelectData):
                rec_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
                if rec_id is None:
                    return {}
                try:
                    rec = self.store.get(rec_id)
                except Exception as exc:  # noqa: BLE001
                    return {h_status: error_html(exc)}
                return {h_selected: rec.id, h_image: str(rec.path), h_details: record_markdown(rec),
                        h_download: gr.DownloadButton(value=self.download_path(rec.id), interactive=True),
                        h_status: status_html(""), h_result: gr.Image(value=None, visible=False)}

            h_gallery.select(history_select, h_ids, [h_selected, h_image, h_details, h_download, h_status, h_result],
                             api_visibility="private")

            def history_delete(sel, query, page, mine, request: gr.Request):
                """Delete the selected image if it is the viewer's own; then show the list without it."""
                try:
                    need_selection(sel)
                    self.store.delete(sel, owner_of(request))
                except Exception as exc:  # noqa: BLE001 -- someone else's image: NotYours says whose
                    return {h_status: error_html(exc)}
                return {**history(query, page, mine, request), h_selected: None, h_image: None,
                        h_details: "Select an image to see its recipe.",
                        h_download: gr.DownloadButton(value=None, interactive=False),
                        h_result: gr.Image(value=None, visible=False),
                        h_status: status_html(f"Deleted image {sel}.", None, "ok")}

            h_delete.click(history_delete, [h_selected, h_query, h_page, h_mine],
                           [*h_outputs, h_selected, h_image, h_details, h_download, h_result, h_status],
                           api_visibility="private")

            def need_selection(sel):
                if not sel:
                    raise UserError("Select an image in the list first.")

            async def history_reproduce(sel, request: gr.Request):
                try:
                    need_selection(sel)
                except UserError as exc:
                    yield {h_status: error_html(exc)}
                    return
                owner = owner_of(request)
                async for update, result in self.follow(lambda: self.store.reproduce(sel, self.service, owner),
                                                        request, "history", h_status):
                    if result is not None:
                        img = result.images[0]
                        same = img.sha256 == self.store.get(sel).sha256
                        update[h_status] = status_html(
                            f"Reproduced {sel} as {img.id}: " + ("identical bytes." if same else
                                                                 "the file differs (see Verify)."),
                            None, "ok" if same else "info")
                        update[h_result] = gr.Image(value=img.path, visible=True, label=f"Reproduction {img.id}")
                    yield update

            h_repro.click(history_reproduce, h_selected, [h_status, h_result], api_visibility="private",
                          concurrency_limit=None, show_progress="hidden")

            async def history_verify(sel, request: gr.Request):
                try:
                    need_selection(sel)
                    yield {h_status: status_html(f"Making {sel} again to compare…", 0.0)}
                    v = await asyncio.to_thread(self.store.verify, sel, self.service, owner_of(request))
                except Exception as exc:  # noqa: BLE001
                    yield {h_status: error_html(exc)}
                    return
                if v.exact:
                    text = f"Exact: image {sel} was made again pixel for pixel" + (
                        " (byte-identical file)." if v.same_file else ".")
                else:
                    changed = ", ".join(v.fingerprint_diff) or "nothing recorded"
                    text = (f"Drifted: the largest pixel difference is {v.max_pixel_diff}/255. "
                            f"Changed since: {changed}.")
                yield {h_status: status_html(text, None, "ok" if v.exact else "info")}

            h_verify.click(history_verify, h_selected, [h_status], api_visibility="private", concurrency_limit=None,
                           show_progress="hidden")

            def goto(tab_id):
                return gr.Tabs(selected=tab_id)

            def send_vary(sel):
                if not sel:
                    return {h_status: status_html("Select an image first.", None, "error"),
                            g_status: status_html("Generate an image first.", None, "error")}
                return {**load_vary_source(sel), tabs: goto("vary")}

            def send_inpaint(sel):
                if not sel:
                    return {h_status: status_html("Select an image first.", None, "error"),
                            g_status: status_html("Generate an image first.", None, "error")}
                return {**load_inpaint_source(sel), tabs: goto("inpaint")}

            to_vary = [*v_load_outputs, tabs, h_status, g_status]
            to_inpaint = [*i_load_outputs, tabs, h_status, g_status]
            g_vary.click(send_vary, g_selected, to_vary, api_visibility="private")
            h_vary.click(send_vary, h_selected, to_vary, api_visibility="private")
            g_inpaint.click(send_inpaint, g_selected, to_inpaint, api_visibility="private")
            h_inpaint.click(send_inpaint, h_selected, to_inpaint, api_visibility="private")

            # ---- Timeline
            def load_timeline(rec_id):
                try:
                    rec = self.store.get(rec_id or "")
                    frames = self.store.frames(rec.id)
                    if not frames:
                        raise UserError(f"Image {rec.id} has no stored denoising frames "
                                        "(STATUARY_PREVIEW_FRAMES was 0 when it was made).")
                    webp, gif = self.timeline_path(rec.id, "webp"), self.timeline_path(rec.id, "gif")
                except Exception as exc:  # noqa: BLE001
                    return {t_status: error_html(exc)}
                n = len(frames)
                return {t_id: rec.id, t_frames: frames, t_frame_img: frames[0],
                        t_slider: 0,
                        t_webp: gr.DownloadButton(value=webp, interactive=True),
                        t_gif: gr.DownloadButton(value=gif, interactive=True),
                        t_status: status_html(f"Image {rec.id}: {n} frames. Drag the slider from noise to picture.")}

            t_outputs = [t_id, t_frames, t_frame_img, t_slider, t_webp, t_gif, t_status]
            t_load.click(load_timeline, t_id, t_outputs, api_visibility="private")
            t_id.submit(load_timeline, t_id, t_outputs, api_visibility="private")
            def frame_at(frames, percent):
                return frames[round(float(percent) / 100 * (len(frames) - 1))] if frames else None

            t_slider.change(frame_at, [t_frames, t_slider], t_frame_img, api_visibility="private",
                            show_progress="hidden")
            h_timeline.click(lambda sel: {**load_timeline(sel), tabs: goto("timeline")} if sel else {
                h_status: status_html("Select an image first.", None, "error")}, h_selected,
                [*t_outputs, tabs, h_status], api_visibility="private")

            # ---- PNG info
            def png_info(data):
                if data is None:
                    return {p_info: "", p_fields: None, p_send: gr.Button(interactive=False),
                            p_status: status_html("The recipe of a PNG appears here.")}
                try:
                    source, fields, md = png_fields(data)
                except Exception as exc:  # noqa: BLE001
                    return {p_info: "", p_fields: None, p_send: gr.Button(interactive=False), p_status: error_html(exc)}
                return {p_info: md, p_fields: fields, p_send: gr.Button(interactive=True),
                        p_status: status_html("A Statuary recipe." if source == "statuary" else
                                              "An AUTOMATIC1111 recipe.", None, "ok")}

            p_file.change(png_info, p_file, [p_info, p_fields, p_send, p_status], api_visibility="private")

            def fill_generate(fields: dict[str, Any] | None, note_to):
                """The Generate tab's fields from a recipe; sizes outside this model's range are clamped."""
                if not fields:
                    return {note_to: status_html("Nothing to send yet.", None, "error")}
                out = {tabs: goto("generate"), g_prompt: fields.get("prompt", ""),
                       g_negative: fields.get("negative_prompt", ""), g_count: 1}
                notes = []
                if fields.get("seed") is not None:
                    out[g_seed] = fields["seed"]
                for key, comp in (("steps", g_steps), ("guidance", g_guidance)):
                    if fields.get(key) is not None:
                        out[comp] = fields[key]
                for key, comp in (("width", g_width), ("height", g_height)):
                    if fields.get(key) is not None:
                        v = int(fields[key])
                        clamped = max(64, min(lim.max_side, v // lim.multiple * lim.multiple))
                        if clamped != v:
                            notes.append(f"{key} {v} → {clamped}")
                        out[comp] = clamped
                if fields.get("sampler") in SAMPLERS:
                    out[g_sampler] = fields["sampler"]
                if (fields.get("variation_strength") or 0) > 0:
                    notes.append("the variation seed and strength are left out (use Variations)")
                out[g_status] = status_html("Recipe loaded" + (f" ({'; '.join(notes)})" if notes else "") +
                                            ". Press Generate.", None, "ok")
                return out

            send_outputs = [tabs, *gen_fields, g_status]
            p_send.click(lambda f: fill_generate(f, p_status), p_fields, [*send_outputs, p_status],
                         api_visibility="private")

            def send_history(sel):
                if not sel:
                    return {h_status: status_html("Select an image first.", None, "error")}
                return fill_generate(self.store.get(sel).image_request, h_status)

            h_send.click(send_history, h_selected, [*send_outputs, h_status], api_visibility="private")

        return demo

    # ---- scripts: gradio_client endpoints ---------------------------------------------------------

    def _images_json(self, result: JobResult) -> list[dict]:
        return [{"id": img.id, "seed": img.seed, "variation_seed": img.variation_seed, "sha256": img.sha256,
                 "width": img.image.width, "height": img.image.height, "file": f"/gradio_api/file={img.path}"}
                for img in result.images]

    async def _wait(self, submit) -> list[dict]:
        try:
            handle = await asyncio.to_thread(submit)
            return self._images_json(await handle.wait())
        except Exception as exc:  # noqa: BLE001
            raise gr.Error(error_message(exc), print_exception=False) from None

    def _api(self, demo: gr.Blocks) -> None:
        ui = self

        async def generate(prompt: str, negative_prompt: str = "", seed: int = -1, steps: int = 20,
                           guidance: float = 7.0, width: int = 0, height: int = 0, sampler: str = SAMPLERS[0],
                           count: int = 1, request: gr.Request = None) -> list[dict]:
            """Make images from a prompt. Returns each image's id, seed, sha256 and file URL.
            seed -1 is random; width/height 0 is the model's native size."""
            req = GenerationRequest(prompt=prompt, negative_prompt=negative_prompt, seed=_seed(seed), steps=steps,
                                    guidance=guidance, width=width or None, height=height or None,
                                    sampler=sampler, count=count)
            return await ui._wait(lambda: ui.service.submit(req, owner_of(request)))

        async def reproduce(image_id: str, request: gr.Request = None) -> list[dict]:
            """Make a stored image again from its recipe."""
            return await ui._wait(lambda: ui.store.reproduce(image_id, ui.service, owner_of(request)))

        async def vary(image_id: str, strength: float = 0.25, variation_seed: int = -1, count: int = 1,
                       request: gr.Request = None) -> list[dict]:
            """Variations of a stored image: strength 0 is the image again, 1 a new picture."""
            return await ui._wait(lambda: ui.store.vary(image_id, ui.service, owner_of(request), strength,
                                                        _seed(variation_seed), count))

        async def inpaint(image_id: str, mask_png_base64: str, prompt: str, negative_prompt: str = "",
                          strength: float = 0.75, seed: int = -1, request: gr.Request = None) -> list[dict]:
            """Repaint the white part of a mask (a base64 PNG the image's size) on a stored image."""
            import base64

            def submit():
                base = ui.store.request_for(image_id)
                rec = ui.store.get(image_id)
                req = dataclasses.replace(base, prompt=prompt, negative_prompt=negative_prompt, seed=_seed(seed),
                                          strength=strength, init_image=rec.path.read_bytes(),
                                          mask=base64.b64decode(mask_png_base64), variation_strength=0.0,
                                          variation_seed=None, count=1)
                return ui.service.submit(req, owner_of(request), parent_id=rec.id, kind="inpaint")

            return await ui._wait(submit)

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
            try:
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

        for fn in (generate, reproduce, vary, inpaint, verify, history, recipe):
            gr.api(fn, api_name=fn.__name__, concurrency_limit=None)


# ---- launching -----------------------------------------------------------------------------------


def _auth(text: str) -> list[tuple[str, str]] | None:
    pairs = [p.split(":", 1) for p in (text or "").split(",") if p.strip()]
    return [(u.strip(), pw) for u, pw in pairs] or None


def _sqlite_file(url: str) -> Path | None:
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///")).expanduser().resolve()
    return None


def launch_options(store: Any, settings: Any, host: str | None = None, port: int | None = None) -> dict[str, Any]:
    """Everything security-related that goes to Blocks.launch, in one place (and testable).

    Only the store's image folder is served as files; the database, uploaded inputs, the
    settings file and the rest of the disk are refused (Gradio also serves its own upload
    cache, which holds only what this app or its users put there)."""
    from core.settings import REPO_ROOT

    images = (Path(store.data_dir) / "images").resolve()
    blocked = [Path(store.data_dir).resolve() / "inputs", Path.cwd() / ".env", REPO_ROOT / ".env"]
    db = _sqlite_file(getattr(settings, "database_url", ""))
    if db is not None:
        blocked += [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"),
                    db.with_name(db.name + "-journal")]
    return dict(
        server_name=host or settings.host,
        server_port=port or settings.port,
        auth=_auth(settings.auth),
        auth_message="Statuary: log in with the name and password your host gave you." if settings.auth else None,
        share=bool(settings.share),
        allowed_paths=[str(images)],
        blocked_paths=[str(p) for p in blocked],
        max_file_size=f"{settings.upload_max_mb}mb",
        show_error=False,
        enable_monitoring=False,
        mcp_server=False,
        pwa=False,
        ssr_mode=False,
        run_history=False,
        footer_links=["api"],
        css=CSS,
        theme=gr.themes.Soft(primary_hue="indigo", neutral_hue="slate", font=SYSTEM_FONTS, font_mono=MONO_FONTS),
    )


def build(service: JobService, store: Any, settings: Any = None) -> gr.Blocks:
    demo = WebUI(service, store, settings).build()
    # The service is the real queue (fair per owner); Gradio's only keeps handlers from piling up.
    demo.queue(default_concurrency_limit=8, max_size=256)
    return demo


def launch(service: JobService, store: Any, settings: Any, host: str | None = None, port: int | None = None,
           *, prevent_thread_lock: bool = False, quiet: bool = False) -> tuple[gr.Blocks, str]:
    """Serve the UI (blocks unless prevent_thread_lock). Returns the Blocks and its local URL."""
    demo = build(service, store, settings)
    _app, url, _share = demo.launch(prevent_thread_lock=prevent_thread_lock, quiet=quiet,
                                    **launch_options(store, settings, host, port))
    return demo, url
