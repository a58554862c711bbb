"""The Generate tab: a prompt and its settings on the left, the live preview and result on the right."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import gradio as gr

from core.request import COUNT_MAX, GUIDANCE_MAX, SAMPLERS, STEPS_MAX, GenerationRequest
from core.samplers import LABELS
from core.vocabulary import HOW_TO_ASK, ModelVocabulary
from webui import lora_picker
from webui import hires as hx
from webui.recipes import ASPECTS, aspect_size, error_html, fit_recipe, status_html
from webui.shared import WebUI, owner_of, parse_seed, whole


def found_markdown(vocab: ModelVocabulary, text: str) -> str:
    """The word list's search: each subject with a word starting with `text`, and all its words."""
    if not text.strip():
        return ""
    found = vocab.find(text)
    if not found:
        return f"No subject has a word starting with “{text.strip()[:40]}”."
    return "  \n".join(e.line() for e in found)


RESULT_HEIGHT = 560  # px: the result is the largest thing on the page
RECENT_PROMPTS = 20


def build(ui: WebUI) -> SimpleNamespace:
    lim = ui.limits
    sampler_choices = [(LABELS[s], s) for s in lim.samplers]   # those that suit the model's noise schedule
    vocab = getattr(ui.service, "vocabulary", None)   # the default model says which words it knows

    with gr.Tab("Generate", id="generate"):
        # Desktop: what to make on the left, the picture (the largest thing) on the right. On a
        # phone the CSS puts the picture straight under the Generate button, settings after it.
        with gr.Row(equal_height=False, elem_id="g-main"):
            with gr.Column(scale=4, min_width=300, elem_id="g-left"):
                with gr.Column(elem_id="g-ask"):
                    prompt = gr.Textbox(label="Prompt", lines=3, max_lines=8, elem_id="g-prompt",
                                        placeholder=vocab.examples(1)[0] if vocab else "cat face, 3d style")
                    hint = gr.HTML(visible=False, elem_id="g-hint")
                    negative = gr.Textbox(label="Negative prompt", lines=1, max_lines=4,
                                          elem_id="g-negative", placeholder="what the image should not show")
                    lora_slot = gr.Column(elem_id="g-lora-slot")  # the LoRA picker (webui/lora_picker.py)
                    with gr.Row(elem_classes="st-go-row"):
                        go = gr.Button("Generate", variant="primary", elem_id="g-go", scale=3)
                        cancel = gr.Button("Cancel", variant="stop", elem_id="g-cancel", scale=1, min_width=90)
                    recent = gr.Dataset(components=[prompt], samples=[], label="Recent prompts (this browser)",
                                        elem_id="g-recent", samples_per_page=20, visible=False)
                    if vocab is not None:
                        examples = gr.Dataset(components=[prompt], samples=[[p] for p in vocab.examples(8)],
                                              label="Try one: this model draws emoji", elem_id="g-examples",
                                              samples_per_page=8)
                        with gr.Accordion(f"The {len(vocab.labels)} subjects it knows", open=False,
                                          elem_id="g-words"):
                            find = gr.Textbox(label="Find a subject", max_lines=1, max_length=40,
                                              placeholder="part of a word: fox, ice, heart", elem_id="g-words-find")
                            found = gr.Markdown(elem_id="g-words-found")
                            gr.Markdown(HOW_TO_ASK + "\n\n" + "\n\n".join(
                                f"**{group}** ({len(subjects)}): " + ", ".join(e.label for e in subjects)
                                for group, subjects in vocab.by_category().items()))
                with gr.Column(elem_id="g-settings"):
                    with gr.Row(elem_classes="st-seed-row"):
                        seed = gr.Number(label="Seed (-1 = random)", value=-1, precision=0, elem_id="g-seed",
                                         scale=4, min_width=140)
                        dice = gr.Button("Random", elem_classes="st-icon-btn", scale=0, min_width=90,
                                         elem_id="g-dice")
                        reuse = gr.Button("♻ Reuse", elem_classes="st-icon-btn", scale=0, min_width=90,
                                          elem_id="g-reuse")
                    aspect = gr.Radio([label.split()[0] for label, _, _ in ASPECTS], value="1:1", label="Shape",
                                      elem_id="g-aspect", elem_classes="st-chips")
                    with gr.Row():
                        width = gr.Slider(lim.min_side, lim.max_side, value=lim.native_size, step=lim.multiple,
                                          label="Width", elem_id="g-width", min_width=140)
                        height = gr.Slider(lim.min_side, lim.max_side, value=lim.native_size, step=lim.multiple,
                                           label="Height", elem_id="g-height", min_width=140)
                    with gr.Row():
                        steps = gr.Slider(1, STEPS_MAX, value=20, step=1, label="Steps", elem_id="g-steps",
                                          min_width=140)
                        guidance = gr.Slider(0, GUIDANCE_MAX, value=lim.default_guidance, step=0.5, label="Guidance",
                                             elem_id="g-guidance", min_width=140)
                    with gr.Row():
                        sampler = gr.Dropdown(sampler_choices, value=lim.default_sampler, label="Sampler",
                                              elem_id="g-sampler", min_width=200)
                        count = gr.Slider(1, COUNT_MAX, value=1, step=1, label="Images", elem_id="g-count",
                                          min_width=140)
                    hires = hx.controls(ui)
            with gr.Column(scale=7, min_width=300, elem_id="g-right"):
                status = gr.HTML(status_html("Ready."), elem_id="g-status")
                # While a job runs the live preview fills the picture's place; when it is done the
                # finished picture replaces it.
                preview = gr.Image(label="Live preview", type="pil", interactive=False, height=RESULT_HEIGHT,
                                   elem_id="g-preview", elem_classes=["st-pixelated", "st-fit"], buttons=[],
                                   visible=False)
                gallery = gr.Gallery(label="Result", columns=2, height=RESULT_HEIGHT, elem_id="g-gallery",
                                     elem_classes=["st-pixelated", "st-result"], allow_preview=True, preview=True,
                                     object_fit="contain", interactive=False, buttons=["fullscreen", "download"])
                with gr.Row(elem_classes="st-actions"):
                    vary_btn = gr.Button("Vary", size="sm", elem_id="g-vary")
                    inpaint_btn = gr.Button("Inpaint", size="sm", elem_id="g-inpaint")
                    repro = gr.Button("Reproduce", size="sm", elem_id="g-reproduce")
                    upscale = hx.upscale_button(ui)
                    download = gr.DownloadButton("Download", size="sm", elem_id="g-download", interactive=False)
                recipe = gr.Markdown(elem_id="g-recipe")
        with lora_slot:
            lora_picker.build(ui, prompt, status)
        ids = gr.State([])
        selected = gr.State(None)
        last_seed = gr.State(None)
        prompts = gr.BrowserState([], storage_key="statuary-prompts")  # the last 20, newest first

    fields = [prompt, negative, seed, steps, guidance, width, height, sampler, count]
    outputs = [status, preview, gallery, ids, selected, recipe, download, last_seed]

    async def run(submit, request, done_text=None):
        """Follow a job: the live preview takes the picture's place, then the result replaces it."""
        showing_preview = False
        async for update, result in ui.follow(submit, request, "generate", status, preview):
            if preview in update:
                update[preview] = gr.Image(value=update[preview], visible=True)
                if not showing_preview:
                    update[gallery] = gr.Gallery(visible=False)
                    showing_preview = True
            if result is not None:
                update.update(ui.result_updates(result, gallery, ids, selected, recipe, download))
                update[gallery] = gr.Gallery(value=update[gallery], visible=True, selected_index=0)
                update[preview] = gr.Image(value=None, visible=False)
                update[last_seed] = result.images[0].seed
                if done_text is not None:
                    update[status] = done_text(result)
                showing_preview = False
            yield update, result
        if showing_preview:  # failed or cancelled after it began: back to the last result
            yield {preview: gr.Image(value=None, visible=False), gallery: gr.Gallery(visible=True)}, None

    async def generate(prompt_, negative_, seed_, steps_, guidance_, width_, height_, sampler_, count_, prompts_,
                       hires_on, hires_scale, hires_steps, hires_strength, hires_upscaler, request: gr.Request):
        try:
            req = GenerationRequest(prompt=prompt_ or "", negative_prompt=negative_ or "", seed=parse_seed(seed_),
                                    steps=whole(steps_), guidance=float(guidance_), width=whole(width_),
                                    height=whole(height_), sampler=sampler_ or None, count=whole(count_),
                                    hires=hx.value(hires_on, hires_scale, hires_steps, hires_strength,
                                                   hires_upscaler))
        except Exception as exc:  # noqa: BLE001
            yield {status: error_html(exc)}
            return
        owner = owner_of(request)
        unknown = vocab is not None and bool(req.prompt.strip()) and not vocab.knows(req.prompt)
        # The job still runs; the hint says once what this model draws and where its words are.
        yield {hint: gr.HTML(status_html(vocab.hint("below")) if unknown else "",
                             visible=unknown)}
        async for update, result in run(lambda: ui.service.submit(req, owner), request):
            if result is not None:
                kept = [req.prompt, *[p for p in (prompts_ or []) if p != req.prompt]][:RECENT_PROMPTS]
                update[prompts] = kept
                update[recent] = recent_prompts(kept)
            yield update

    def recent_prompts(kept):
        return gr.Dataset(samples=[[p] for p in kept or []], visible=bool(kept))

    gen_inputs, gen_outputs = [*fields, prompts, *hires.inputs], [*outputs, prompts, recent, hint]
    go.click(generate, gen_inputs, gen_outputs, api_visibility="private", concurrency_limit=None,
             show_progress="hidden")
    prompt.submit(generate, gen_inputs, gen_outputs, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")
    # On a phone, bring the status and the picture into view as the job starts.
    go.click(None, js="() => { if (window.innerWidth < 700) document.getElementById('g-status')"
                      "?.scrollIntoView({behavior: 'smooth', block: 'start'}); }")
    recent.click(lambda sample: sample[0], recent, prompt, api_visibility="private", queue=False)
    if vocab is not None:
        examples.click(lambda sample: sample[0], examples, prompt, api_visibility="private", queue=False)
        find.change(lambda text: found_markdown(vocab, text), find, found, api_visibility="private", queue=False)

    def pick_aspect(choice):
        a, b = (int(x) for x in str(choice).split(":"))
        return aspect_size(a, b, lim)

    aspect.input(pick_aspect, aspect, [width, height], api_visibility="private", queue=False)

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

        def said(result):
            same = result.images[0].sha256 == ui.store.get(rec_id).sha256
            return status_html(f"Reproduced {rec_id} as {result.images[0].id}: "
                               + ("identical bytes." if same else "the file differs."), None, "ok" if same else "info")

        async for update, _result in run(lambda: ui.store.reproduce(rec_id, ui.service, owner), request, said):
            yield update

    repro.click(reproduce_here, selected, outputs, api_visibility="private", concurrency_limit=None,
                show_progress="hidden")

    async def upscale_here(rec_id, request: gr.Request):
        if not rec_id:
            yield {status: status_html("Generate an image first.", None, "error")}
            return
        owner = owner_of(request)
        async for update, _result in run(lambda: ui.store.upscale(rec_id, ui.service, owner), request):
            yield update

    upscale.click(upscale_here, selected, outputs, api_visibility="private", concurrency_limit=None,
                  show_progress="hidden")

    def fill_from(fields_: dict[str, Any] | None, note_to) -> dict:
        """This tab's fields from a recipe (PNG info, History); sizes outside this model's range are clamped."""
        if not fields_:
            return {note_to: status_html("Nothing to send yet.", None, "error")}
        fields_, notes = fit_recipe(fields_, lim)
        tags = "".join(f" <lora:{e[0]}:{float(e[1]):g}>" for e in fields_.get("loras") or [])  # its LoRAs
        out = {prompt: fields_.get("prompt", "") + tags, negative: fields_.get("negative_prompt", ""), count: 1}
        if fields_.get("seed") is not None:
            out[seed] = fields_["seed"]
        for key, comp in (("steps", steps), ("guidance", guidance), ("width", width), ("height", height)):
            if fields_.get(key) is not None:
                out[comp] = fields_[key]
        if fields_.get("sampler") in lim.samplers:
            out[sampler] = fields_["sampler"]
        elif fields_.get("sampler") in SAMPLERS:   # made on a model whose schedule suits it, e.g. Karras on SD
            out[sampler] = lim.default_sampler
            notes.append(f"Its sampler, {LABELS[fields_['sampler']]}, does not suit this model: "
                         f"{LABELS[lim.default_sampler]} instead.")
        if (fields_.get("variation_strength") or 0) > 0 or fields_.get("variation_chain"):
            notes.append("The variation seeds and strengths are left out (use Variations for them).")
        out.update(hx.fill(ui, hires, fields_.get("hires"), notes))
        out[status] = status_html(" ".join(["Recipe loaded. Press Generate.", *notes]), None, "ok")
        return out

    def on_load(kept):
        return recent_prompts(kept)

    return SimpleNamespace(status=status, selected=selected, vary_btn=vary_btn, inpaint_btn=inpaint_btn,
                           fields=[*fields, *hires.inputs, hires.accordion], fill_from=fill_from,
                           load=(on_load, prompts, recent))
