"""The History tab: every stored image, newest first, searchable; the selected one's recipe and actions;
and the jobs that ended without images (failed, interrupted, cancelled), with their reasons."""

from __future__ import annotations

import asyncio
import html
from types import SimpleNamespace

import gradio as gr

from storage.store import ENDED_UNDONE, QUERY_MAX_CHARS

from webui import hires as hx
from webui.recipes import UserError, error_html, error_message, record_markdown, status_html
from webui.shared import WebUI, owner_of, whole

PER_PAGE = 20
UNDONE = {"Failed, interrupted or cancelled": ENDED_UNDONE, "Failed": ("failed",),
          "Interrupted": ("interrupted",), "Cancelled": ("cancelled",)}


def build(ui: WebUI) -> SimpleNamespace:
    with gr.Tab("History", id="history") as tab:
        with gr.Row(elem_classes="st-search-row"):
            query = gr.Textbox(show_label=False, container=False, placeholder="Search prompts: words in the prompt",
                               scale=4, elem_id="h-query", min_width=160, max_length=QUERY_MAX_CHARS)
            search = gr.Button("Search", scale=0, min_width=90, elem_id="h-search")
            prev = gr.Button("◀", scale=0, min_width=48, elem_id="h-prev")
            page = gr.Number(value=1, precision=0, minimum=1, show_label=False, container=False, scale=0,
                             min_width=64, elem_id="h-page")
            next_ = gr.Button("▶", scale=0, min_width=48, elem_id="h-next")
        with gr.Row(elem_classes="st-count-row"):
            count = gr.Markdown(elem_id="h-count")
            mine = gr.Checkbox(label="Only mine", value=False, container=False, scale=0, min_width=130,
                               elem_id="h-mine")
        gallery = gr.Gallery(label="Newest first", columns=6, height=None, elem_id="h-gallery",
                             elem_classes="st-pixelated", allow_preview=False, object_fit="contain",
                             interactive=False, fit_columns=False)
        with gr.Row(equal_height=False):
            image = gr.Image(label="Selected", interactive=False, height=320, type="filepath",
                             elem_id="h-image", elem_classes=["st-pixelated", "st-fit"], buttons=["fullscreen", "download"])
            with gr.Column(scale=2):
                details = gr.Markdown("Select an image to see its recipe.", elem_id="h-details")
                with gr.Row():
                    repro = gr.Button("Reproduce", size="sm", elem_id="h-reproduce")
                    verify = gr.Button("Verify", size="sm", elem_id="h-verify")
                    upscale = hx.upscale_button(ui, "h-upscale")
                    vary_btn = gr.Button("Vary", size="sm", elem_id="h-vary")
                    inpaint_btn = gr.Button("Inpaint", size="sm", elem_id="h-inpaint")
                    timeline_btn = gr.Button("Timeline", size="sm", elem_id="h-timeline")
                    send_btn = gr.Button("Send to Generate", size="sm", elem_id="h-send")
                    download = gr.DownloadButton("Download", size="sm", elem_id="h-download", interactive=False)
                    delete = gr.Button("Delete", size="sm", variant="stop", elem_id="h-delete",
                                       elem_classes="st-danger")
                status = gr.HTML(status_html(""), elem_id="h-status")
                result = gr.Image(label="Reproduction", interactive=False, height=160, visible=False,
                                  type="filepath", elem_id="h-result", elem_classes=["st-pixelated", "st-fit"])
        with gr.Accordion("Jobs that ended without images", open=False, elem_id="h-undone"):
            undone_kind = gr.Radio(list(UNDONE), value=next(iter(UNDONE)), show_label=False, container=False,
                                   elem_id="h-undone-kind", elem_classes="st-chips")
            undone = gr.Markdown(elem_id="h-undone-list")
        ids = gr.State([])
        selected = gr.State(None)

    # ---- the list
    def history(query_, page_, mine_=False, request: gr.Request | None = None):
        page_ = max(1, whole(page_) or 1)
        owner = owner_of(request) if mine_ else None
        try:
            found = ui.store.history(owner=owner, query=query_ or None, page=page_, per_page=PER_PAGE)
        except Exception as exc:  # noqa: BLE001 -- said where the count goes (a search too long, the database away)
            return {gallery: [], ids: [], count: error_message(exc)}
        if page_ > found.pages and found.total:
            page_ = found.pages
            found = ui.store.history(owner=owner, query=query_ or None, page=page_, per_page=PER_PAGE)
        items = [(str(r.path), f"{r.id} · {r.image_request.get('prompt', '')[:40]}") for r in found.items]
        text = f"{found.total} image{'s' if found.total != 1 else ''}" + (" of yours" if mine_ else "") + (
            f" matching “{query_}”" if query_ else "") + f" · page {page_} of {found.pages}"
        return {gallery: items, ids: [r.id for r in found.items], page: page_, count: text}

    def history_first(query_, mine_, request: gr.Request):
        return history(query_, 1, mine_, request)

    def history_prev(query_, page_, mine_, request: gr.Request):
        return history(query_, (whole(page_) or 1) - 1, mine_, request)

    def history_next(query_, page_, mine_, request: gr.Request):
        return history(query_, (whole(page_) or 1) + 1, mine_, request)

    def history_here(query_, page_, mine_, request: gr.Request):
        return history(query_, page_, mine_, request)

    def jobs_without_images(query_, mine_, kind, request: gr.Request):
        """The newest jobs that ended without images, with why; the same search and "Only mine"."""
        owner = owner_of(request) if mine_ else None
        try:
            found = ui.store.jobs(UNDONE.get(kind, ENDED_UNDONE), owner=owner, query=query_ or None,
                                  per_page=PER_PAGE)
        except Exception as exc:  # noqa: BLE001
            return error_message(exc)
        if not found.total:
            return "No such jobs" + (" of yours" if mine_ else "") + (f" matching “{html.escape(query_)}”" if query_ else "") + "."
        rows = ["| when (UTC) | status | prompt | why |", "|---|---|---|---|"]
        for job in found.items:
            prompt = html.escape(str(job.request.get("prompt", ""))[:60]).replace("|", "&#124;")
            why = html.escape((job.reason or "no reason was recorded").replace("\n", " ")[:160]).replace("|", "&#124;")
            rows.append(f"| {job.created:%Y-%m-%d %H:%M} | {job.status} | {prompt} | {why} |")
        shown = f"the newest {len(found.items)} of {found.total}" if found.total > len(found.items) else f"{found.total}"
        return f"{shown} job{'s' if found.total != 1 else ''}\n\n" + "\n".join(rows)

    for trigger in (undone_kind.input, search.click, query.submit, mine.input, tab.select):
        trigger(jobs_without_images, [query, mine, undone_kind], undone, api_visibility="private", queue=False)

    list_outputs = [gallery, ids, page, count]
    # One list query at a time, in the order they were asked: otherwise a slow earlier one (the
    # tab's select) can land after a later search and put back the old list.
    in_order = dict(api_visibility="private", concurrency_id="history-list", concurrency_limit=1)
    search.click(history_first, [query, mine], list_outputs, **in_order)
    query.submit(history_first, [query, mine], list_outputs, **in_order)
    mine.input(history_first, [query, mine], list_outputs, **in_order)
    prev.click(history_prev, [query, page, mine], list_outputs, **in_order)
    next_.click(history_next, [query, page, mine], list_outputs, **in_order)
    page.submit(history_here, [query, page, mine], list_outputs, **in_order)
    tab.select(history_here, [query, page, mine], list_outputs, **in_order)

    # ---- the selected image
    def history_select(ids_, evt: gr.SelectData):
        rec_id = ids_[evt.index] if ids_ and evt.index is not None and evt.index < len(ids_) else None
        if rec_id is None:
            return {}
        try:
            rec = ui.store.get(rec_id)
        except Exception as exc:  # noqa: BLE001
            return {status: error_html(exc)}
        return {selected: rec.id, image: str(rec.path), details: record_markdown(rec),
                download: gr.DownloadButton(value=ui.download_path(rec.id), interactive=True),
                status: status_html(""), result: gr.Image(value=None, visible=False)}

    gallery.select(history_select, ids, [selected, image, details, download, status, result],
                   api_visibility="private")

    def need_selection(sel):
        if not sel:
            raise UserError("Select an image in the list first.")

    def history_delete(sel, query_, page_, mine_, request: gr.Request):
        """Delete the selected image if it is the viewer's own; then show the list without it."""
        try:
            need_selection(sel)
            ui.store.delete(sel, owner_of(request))
        except Exception as exc:  # noqa: BLE001 -- someone else's image: NotYours says whose
            return {status: error_html(exc)}
        return {**history(query_, page_, mine_, request), selected: None, image: None,
                details: "Select an image to see its recipe.",
                download: gr.DownloadButton(value=None, interactive=False),
                result: gr.Image(value=None, visible=False),
                status: status_html(f"Deleted image {sel}.", None, "ok")}

    delete.click(history_delete, [selected, query, page, mine],
                 [*list_outputs, selected, image, details, download, result, status], **in_order)

    async def history_reproduce(sel, request: gr.Request):
        try:
            need_selection(sel)
        except UserError as exc:
            yield {status: error_html(exc)}
            return
        owner = owner_of(request)
        async for update, done in ui.follow(lambda: ui.store.reproduce(sel, ui.service, owner),
                                            request, "history", status):
            if done is not None:
                img = done.images[0]
                same = img.sha256 == ui.store.get(sel).sha256
                update[status] = status_html(
                    f"Reproduced {sel} as {img.id}: " + ("identical bytes." if same else
                                                         "the file differs (see Verify)."),
                    None, "ok" if same else "info")
                update[result] = gr.Image(value=img.path, visible=True, label=f"Reproduction {img.id}")
            yield update

    repro.click(history_reproduce, selected, [status, result], api_visibility="private",
                concurrency_limit=None, show_progress="hidden")

    async def history_verify(sel, request: gr.Request):
        try:
            need_selection(sel)
            yield {status: status_html(f"Making {sel} again to compare…", 0.0)}
            v = await asyncio.to_thread(ui.store.verify, sel, ui.service, owner_of(request))
        except Exception as exc:  # noqa: BLE001
            yield {status: error_html(exc)}
            return
        if v.exact:
            text = f"Exact: image {sel} was made again pixel for pixel" + (
                " (byte-identical file)." if v.same_file else ".")
        else:
            changed = ", ".join(v.fingerprint_diff) or "nothing recorded"
            text = (f"Drifted: the largest pixel difference is {v.max_pixel_diff}/255. "
                    f"Changed since: {changed}.")
        yield {status: status_html(text, None, "ok" if v.exact else "info")}

    verify.click(history_verify, selected, [status], api_visibility="private", concurrency_limit=None,
                 show_progress="hidden")
    upscale.click(hx.history_upscale(ui, status, result), selected, [status, result], api_visibility="private",
                  concurrency_limit=None, show_progress="hidden")

    return SimpleNamespace(status=status, selected=selected, vary_btn=vary_btn, inpaint_btn=inpaint_btn,
                           timeline_btn=timeline_btn, send_btn=send_btn)
