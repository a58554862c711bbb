"""A model with a word list (the default model): /imagine's prompt option names a few of its words,
and a prompt with none of them still runs, with one line saying what the model draws (issue 14)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.bot.test_bot import final_of

VOCABULARY = {"format": 1, "subjects": ["cat", "pizza", "rocket", "ice cream", "birthday cake", "mushroom", "owl"],
              "emoji": [{"label": "cat face", "names": ["cat face", "cat", "kitten"]},
                        {"label": "pizza", "names": ["pizza"]}, {"label": "rocket", "names": ["rocket"]}]}


@pytest.fixture
def service(service_factory, store, tiny_model_dir, tmp_path):
    from core.generator import Generator
    from core.loader import load_model
    from core.service import InProcessJobService

    folder = tmp_path / "with-words"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "vocabulary.json").write_text(json.dumps(VOCABULARY))
    svc = InProcessJobService(Generator(load_model(str(folder), device="cpu")), store, preview_frames=2)
    yield svc
    svc.close()


def test_imagine_names_the_models_words_and_hints_when_a_prompt_has_none(discord_run):
    async def scenario(d):
        st = d.standin
        imagine = next(c for c in st.commands if c["name"] == "imagine")
        desc = next(o for o in imagine["options"] if o["name"] == "prompt")["description"]
        assert "cat, pizza, rocket" in desc and len(desc) <= 100

        final = await final_of(st, await st.slash("imagine", prompt="a lighthouse at dusk", steps=2, seed=1))
        assert "This model draws emoji" in final["content"] and "models/default/VOCABULARY.md" in final["content"]
        assert final["content"].count("\n💡") == 1 and final.get("attachments")      # still drawn

        final = await final_of(st, await st.slash("imagine", prompt="a kitten, 3d style", steps=2, seed=2))
        assert "This model draws emoji" not in final["content"]

    discord_run(scenario)
