"""LoRA and prompt weights on Discord, through the real discord.py client and the stand-in:
/imagine's lora option (autocompleted from the LoRA folder, trigger words in the label), the
recipe line that names it, a refusal in one sentence, and the note when a prompt was cut."""

from __future__ import annotations

import asyncio

import pytest

from core.jobs import Owner
from core.request import GenerationRequest

from tests.bot.test_bot import EPHEMERAL, answer, final_of, ids_in, imagine
from tests.lora_fixture import lora_dir, lora_generator  # noqa: F401 -- fixtures

LONG = ", ".join(["red cat on the blue background"] * 12)


@pytest.fixture
def service(lora_generator, lora_dir, store):  # noqa: F811 -- the LoRA folder's service replaces the default
    from core.lora import LoraLibrary
    from core.service import InProcessJobService

    svc = InProcessJobService(lora_generator, store, preview_frames=4,
                              loras=LoraLibrary(lora_dir, lora_generator.model))
    yield svc
    svc.close()


def test_lora_option_autocompletes_from_the_folder_and_reaches_the_recipe(discord_run):
    async def scenario(d):
        choices = await d.standin.autocomplete("imagine", "lora", "pi", prompt="red cat")
        assert [c["value"] for c in choices] == ["pix", "pixk"]
        kept = await d.standin.autocomplete("imagine", "lora", "tag:0.6", prompt="red cat")
        assert kept == [{"name": "tagged:0.6 — pixelart, outline, cat", "value": "tagged:0.6"}]

        _, final = await imagine(d.standin, prompt="red (cat:1.3)", lora="pix:0.7", seed=4)
        rec = d.store.get(ids_in(final)[0])
        (name, weight, sha), = rec.request["loras"]
        assert (name, weight, len(sha)) == ("pix", 0.7, 64) and rec.request["prompt_syntax"] == "a1111"
        assert "LoRA: pix 0.7" in final["content"]
        info = await answer(d.standin, await d.standin.click(final, "Info"), "LoRA:")
        assert f"**LoRA:** pix at 0.7 (sha256 {sha[:12]})" in info["content"]

        for lora, sentence in (("nothing-here", "there is no nothing-here.safetensors in the LoRA folder"),
                               ("pix:7", "'pix:7' is not allowed; use a LoRA weight from -2 to 2")):
            await d.standin.slash("imagine", prompt="red cat", lora=lora, steps=2)
            refused = await d.standin.wait_message(lambda m: sentence in m["content"])
            assert refused["flags"] & EPHEMERAL and "Traceback" not in refused["content"]

    discord_run(scenario)


def test_reproducing_an_old_recipe_with_a_cut_prompt_says_so_under_the_result(discord_run):
    async def scenario(d):
        old = GenerationRequest(LONG, seed=2, steps=2, prompt_syntax="plain")  # as made before prompt weights
        made = await asyncio.to_thread(lambda: d.service.submit(old, Owner("discord", "1001", "alice")).result(60))
        it = await d.standin.slash("reproduce", id=made.images[0].id)
        final = await final_of(d.standin, it)
        assert "✂️ The prompt was cut: the text encoder used 75 of its" in final["content"]
        _, whole = await imagine(d.standin, prompt=LONG, seed=2, steps=2)
        assert "✂" not in whole["content"]  # read with A1111 syntax: encoded whole, in chunks

    discord_run(scenario)
