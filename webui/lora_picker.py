"""The Generate tab's LoRA picker: choose a file from the LoRA folder and a weight, and the
tag <lora:name:weight> goes into the prompt (the prompt is where the request reads it, so what
the user sees is what runs). A file whose metadata names trigger words shows them, with a
button that adds them to the prompt too."""

from __future__ import annotations

import html
import re

import gradio as gr

from core.request import LORA_WEIGHT_MAX, LORA_WEIGHT_MIN
from webui.recipes import status_html


def with_tag(prompt: str, name: str, weight: float) -> str:
    """`prompt` with <lora:name:weight>: the weight of a tag for that file replaced, else the tag added."""
    tag = f"<lora:{name}:{weight:g}>"
    pattern = re.compile(r"<lora:" + re.escape(name) + r"(?::[^<>]*)?>", re.IGNORECASE)
    if pattern.search(prompt or ""):
        return pattern.sub(tag, prompt, count=1)
    return f"{(prompt or '').rstrip()} {tag}".strip()


def build(ui, prompt: gr.Textbox, status: gr.HTML) -> None:
    def catalog() -> dict[str, list[str]]:
        return {c["name"]: c["trigger_words"] for c in ui.service.lora_catalog()}

    names = list(catalog())
    folder = getattr(getattr(ui, "settings", None), "lora_folder", None)
    with gr.Accordion("LoRA", open=False, elem_id="g-lora"):
        with gr.Row():
            name = gr.Dropdown(names, value=None, label="LoRA file", elem_id="g-lora-name", min_width=160,
                               info=None if names else f"No LoRA files yet: put .safetensors files in {folder}.")
            weight = gr.Slider(LORA_WEIGHT_MIN, LORA_WEIGHT_MAX, value=0.8, step=0.05, label="Weight",
                               elem_id="g-lora-weight", min_width=160)
        words = gr.HTML(elem_id="g-lora-words")
        with gr.Row():
            add = gr.Button("Add to prompt", size="sm", elem_id="g-lora-add")
            add_words = gr.Button("Add trigger words", size="sm", elem_id="g-lora-add-words", visible=False)

    def refresh(current):  # files added while the page is open show up the next time the list opens
        return gr.Dropdown(choices=list(catalog()), value=current)

    def show_words(chosen):
        found = catalog().get(chosen or "", [])
        if not chosen:
            return "", gr.Button(visible=False)
        text = ("Trigger words: " + ", ".join(html.escape(w) for w in found)) if found else \
            "Its metadata names no trigger words."
        return f'<p class="st-lora-words">{text}</p>', gr.Button(visible=bool(found))

    def insert(prompt_, chosen, weight_):
        if not chosen:
            return prompt_, status_html("Choose a LoRA file first.", None, "error")
        return with_tag(prompt_, chosen, float(weight_)), status_html(
            f"Added <lora:{chosen}:{float(weight_):g}> to the prompt.", None, "ok")

    def insert_words(prompt_, chosen):
        found = [w for w in catalog().get(chosen or "", []) if w.lower() not in (prompt_ or "").lower()]
        return ", ".join([p for p in [(prompt_ or "").strip()] + found if p])

    name.focus(refresh, name, name, api_visibility="private", queue=False)
    name.change(show_words, name, [words, add_words], api_visibility="private", queue=False)
    add.click(insert, [prompt, name, weight], [prompt, status], api_visibility="private", queue=False)
    add_words.click(insert_words, [prompt, name], prompt, api_visibility="private", queue=False)
