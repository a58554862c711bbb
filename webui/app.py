"""The Gradio web UI: the page that holds the tabs (webui/tabs/), the links between them, and launching it.

    statuary webui --host 127.0.0.1 --port 7860     # or `statuary serve` (with the bot)

It holds a JobService and a Store and nothing else of the back end: no torch, no model.
Each browser is its own Owner("web", login name or session), so the service's fair queue
gives every browser its own place in line. Every handler turns errors into a message in the
tab's status box. Scripts drive the same operations through named endpoints
(see API_NAMES, webui/api.py) with gradio_client.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from core.jobs import JobService
from webui import api
from webui.recipes import FIELD_LABELS, allowed_text, status_html
from webui.shared import BrowserIdMiddleware, WebUI
from webui.tabs import generate, history, inpaint, pnginfo, timeline, vary

API_NAMES = api.NAMES

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
.st-note { color: #b54708; font-size: 0.85rem; margin-top: 0.3rem; }
.st-note:empty { display: none; }
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
.st-search-row { align-items: center !important; gap: 0.5rem !important; }
.st-search-row > * { align-self: center !important; }
.st-count-row { align-items: center !important; flex-wrap: nowrap !important; }
.st-count-row > #h-count { flex: 1 1 auto !important; }
.st-count-row > #h-mine { flex: 0 0 auto !important; width: auto !important; min-width: 0 !important;
                          background: none !important; border: 0 !important; box-shadow: none !important; }
button.st-danger { color: #b42318 !important; border-color: rgba(214, 69, 69, 0.45) !important; }
footer { display: none !important; }
/* the picture first: the result is the largest thing on the page; a click shows it full size */
.st-result .thumbnails { justify-content: center; }
.st-actions { flex-wrap: wrap !important; gap: 0.4rem !important; }
.st-actions > button { flex: 1 1 auto !important; min-width: 84px !important; }
.st-chips .wrap { gap: 0.3rem !important; }
.st-chips label { padding: 0.15rem 0.55rem !important; font-size: 0.85rem !important; }
#g-recent .table-wrap, #g-recent table { font-size: 0.85rem; }
#g-sampler input { text-overflow: clip; }
/* a phone, one-handed: every tab in reach, the picture right under Generate, settings after it */
@media (max-width: 700px) {
  #st-header h1 { font-size: 1.3rem; }
  .tab-wrapper button { padding: 0 7px !important; font-size: 0.82rem !important; }
  #g-main { flex-direction: column !important; flex-wrap: nowrap !important; }
  #g-left { display: contents !important; }
  #g-ask { order: 1; }
  #g-right { order: 2; }
  #g-settings { order: 3; }
  #g-gallery, #g-preview { height: min(62vh, 420px) !important; }
  .st-seed-row { flex-wrap: nowrap !important; }
  .st-seed-row .st-icon-btn { min-width: 0 !important; padding: 0 0.6rem !important; }
  #h-gallery .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important; }
  .st-search-row { flex-wrap: wrap !important; }
  .st-search-row #h-query { flex: 1 1 100% !important; }
  .st-go-row { position: sticky; bottom: 0; z-index: 5; background: var(--background-fill-primary); padding: 4px 0; }
}
"""


def field_notes_head(limits: Any) -> str:
    """A script for the page head: when a number typed into a slider's box is out of range,
    Gradio moves it to the nearest end without a word; this says so under the slider, in the
    core's words ('Steps: 0 is not allowed; use a whole number from 1 to 150. It is set to 1.')."""
    rule = {name: (FIELD_LABELS[name], allowed_text(name, limits))
            for name in ("steps", "guidance", "width", "height", "count", "variation_strength", "strength")}
    fields = {"g-steps": rule["steps"], "i-steps": rule["steps"], "g-guidance": rule["guidance"],
              "g-width": rule["width"], "g-height": rule["height"], "g-count": rule["count"],
              "v-count": rule["count"], "v-strength": rule["variation_strength"], "i-strength": rule["strength"]}
    return """<style>
/* outside the app's own box, so not in CSS (Gradio scopes that to the inside): narrow margins on a phone */
@media (max-width: 700px) { .gradio-container > .main.app { padding-left: 8px !important; padding-right: 8px !important; } }
</style>
<script>
(() => {
  const fields = %s;
  const show = (n) => Number.isInteger(n) ? String(n) : String(Number(n.toFixed(4)));
  document.addEventListener("change", (ev) => {
    const box = ev.target;
    if (!(box instanceof HTMLInputElement) || box.type !== "number") return;
    let block = box;
    while (block && !(block.id in fields)) block = block.parentElement;
    const range = block && block.querySelector("input[type=range]");
    if (!range) return;
    const [label, allowed] = fields[block.id];
    const v = Number(box.value), lo = Number(range.min), hi = Number(range.max);
    let note = block.querySelector(".st-note");
    if (!note) {
      note = document.createElement("div");
      note.className = "st-note";
      note.setAttribute("role", "status");
      block.appendChild(note);
    }
    note.textContent = box.value !== "" && Number.isFinite(v) && (v < lo || v > hi)
      ? `${label}: ${box.value} is not allowed; ${allowed}. It is set to ${show(Math.min(hi, Math.max(lo, v)))}.`
      : "";
  }, true);  // capture: before the slider replaces the typed value with the nearest allowed one
})();
</script>""" % json.dumps(fields)


def build_page(ui: WebUI) -> gr.Blocks:
    """The page: a header, the six tabs, and the buttons that carry an image from one tab to another."""
    info = ui.service.model_info
    model_name = str(info.get("model_id", "model")).rstrip("/").split("/")[-1]

    with gr.Blocks(title="Statuary", analytics_enabled=False, fill_width=True) as demo:
        api.register(ui)  # first, so the named endpoints get their plain names
        with gr.Row(elem_id="st-header"):
            gr.Markdown(f"# Statuary\n{model_name} · {ui.limits.native_size} px · {info.get('device', '')}")
        with gr.Tabs(selected="generate", overflow_behavior="wrap") as tabs:  # every tab in reach on a phone
            g = generate.build(ui)
            v = vary.build(ui)
            i = inpaint.build(ui)
            h = history.build(ui)
            t = timeline.build(ui)
            p = pnginfo.build(ui)
        _link(tabs, g, v, i, h, t, p, ui)
        demo.load(*g.load, api_visibility="private", queue=False)
        _open_from_link(demo, tabs, i)
    return demo


def _link(tabs, g, v, i, h, t, p, ui: WebUI) -> None:
    """Vary / Inpaint / Timeline / Send to Generate: open another tab with the selected image in it."""
    def goto(tab_id):
        return gr.Tabs(selected=tab_id)

    def send_vary(sel):
        if not sel:
            return {h.status: status_html("Select an image first.", None, "error"),
                    g.status: status_html("Generate an image first.", None, "error")}
        return {**v.load_source(sel), tabs: goto("vary")}

    def send_inpaint(sel):
        if not sel:
            return {h.status: status_html("Select an image first.", None, "error"),
                    g.status: status_html("Generate an image first.", None, "error")}
        return {**i.load_source(sel), tabs: goto("inpaint")}

    to_vary = [*v.load_outputs, tabs, h.status, g.status]
    to_inpaint = [*i.load_outputs, tabs, h.status, g.status]
    g.vary_btn.click(send_vary, g.selected, to_vary, api_visibility="private")
    h.vary_btn.click(send_vary, h.selected, to_vary, api_visibility="private")
    g.inpaint_btn.click(send_inpaint, g.selected, to_inpaint, api_visibility="private")
    h.inpaint_btn.click(send_inpaint, h.selected, to_inpaint, api_visibility="private")

    h.timeline_btn.click(lambda sel: {**t.load_timeline(sel), tabs: goto("timeline")} if sel else {
        h.status: status_html("Select an image first.", None, "error")}, h.selected,
        [*t.outputs, tabs, h.status], api_visibility="private")

    def fill_generate(fields, note_to):
        out = g.fill_from(fields, note_to)
        return {**out, tabs: goto("generate")} if fields else out

    send_outputs = [tabs, *g.fields, g.status]
    p.send.click(lambda f: fill_generate(f, p.status), p.fields, [*send_outputs, p.status], api_visibility="private")

    def send_history(sel):
        if not sel:
            return {h.status: status_html("Select an image first.", None, "error")}
        return fill_generate(ui.store.get(sel).image_request, h.status)

    h.send_btn.click(send_history, h.selected, [*send_outputs, h.status], api_visibility="private")


def _open_from_link(demo: gr.Blocks, tabs, i) -> None:
    """`/?inpaint=ID` (the bot's Vary region button, STATUARY_PUBLIC_URL) opens the Inpaint tab on that image."""
    def on_load(request: gr.Request):
        params = getattr(request, "query_params", None) or {}
        image_id = str(params.get("inpaint", "") or "").strip()[:32]
        if not image_id:
            return {i.status: gr.skip()}
        return {**i.load_source(image_id), tabs: gr.Tabs(selected="inpaint")}

    demo.load(on_load, None, [*i.load_outputs, tabs], api_visibility="private", queue=False)


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
        app_kwargs={"middleware": [Middleware(BrowserIdMiddleware)]},  # each browser's lasting identity
        theme=gr.themes.Soft(primary_hue="indigo", neutral_hue="slate", font=SYSTEM_FONTS, font_mono=MONO_FONTS),
    )


def build(service: JobService, store: Any, settings: Any = None) -> gr.Blocks:
    demo = build_page(WebUI(service, store, settings))
    # The service is the real queue (fair per owner); Gradio's only keeps handlers from piling up.
    demo.queue(default_concurrency_limit=8, max_size=256)
    return demo


def launch(service: JobService, store: Any, settings: Any, host: str | None = None, port: int | None = None,
           *, prevent_thread_lock: bool = False, quiet: bool = False) -> tuple[gr.Blocks, str]:
    """Serve the UI (blocks unless prevent_thread_lock). Returns the Blocks and its local URL."""
    demo = build(service, store, settings)
    _app, url, _share = demo.launch(prevent_thread_lock=prevent_thread_lock, quiet=quiet,
                                    head=field_notes_head(service.limits),
                                    **launch_options(store, settings, host, port))
    return demo, url
