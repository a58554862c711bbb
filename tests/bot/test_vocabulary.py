"""A model with a word list (the default model): /imagine's prompt option names a few of its words,
a prompt with none of them still runs, with one line saying what the model draws and pointing at
/words, which lists the subjects and finds every word for one (issue 14)."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.bot.conftest import model_service
from tests.bot.test_bot import final_of

VOCABULARY = {"format": 1, "subjects": ["cat", "pizza", "rocket", "ice cream", "birthday cake", "mushroom", "owl"],
              "emoji": [{"label": "cat face", "names": ["cat face", "cat", "kitten"]},
                        {"label": "pizza", "names": ["pizza"]}, {"label": "rocket", "names": ["rocket"]}]}


@pytest.fixture
def service(service_factory, store, tiny_model_dir, tmp_path):
    folder = tmp_path / "with-words"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "vocabulary.json").write_text(json.dumps(VOCABULARY))
    svc = model_service(folder, store)
    yield svc
    svc.close()


def test_imagine_names_the_models_words_and_hints_when_a_prompt_has_none(discord_run):
    async def scenario(d):
        st = d.standin
        imagine = next(c for c in st.commands if c["name"] == "imagine")
        desc = next(o for o in imagine["options"] if o["name"] == "prompt")["description"]
        assert "cat, pizza, rocket" in desc and len(desc) <= 100

        final = await final_of(st, await st.slash("imagine", prompt="a lighthouse at dusk", steps=2, seed=1))
        assert "This model draws emoji" in final["content"] and "word list (/words)" in final["content"]
        assert final["content"].count("\n💡") == 1 and final.get("attachments")      # still drawn

        final = await final_of(st, await st.slash("imagine", prompt="a kitten, 3d style", steps=2, seed=2))
        assert "This model draws emoji" not in final["content"]

    discord_run(scenario)


def test_words_lists_the_subjects_and_finds_every_word_for_one(discord_run):
    async def scenario(d):
        st = d.standin
        it = await st.slash("words")
        listing = await st.wait_for(lambda: st.original(it))
        assert listing["flags"] & 64 and "**3 subjects**" in listing["content"] and "3d" in listing["content"]
        fields = listing["embeds"][0]["fields"]
        assert [f["value"] for f in fields] == ["cat face, pizza, rocket"]   # no group in this file: "Other"

        it = await st.slash("words", search="KIT")
        found = (await st.wait_for(lambda: st.original(it)))["content"]
        assert found.startswith("**1 subject** with a word starting with “KIT”:\n")
        assert "cat face: cat, kitten" in found and "pizza" not in found

        it = await st.slash("words", search="lighthouse")
        none = (await st.wait_for(lambda: st.original(it)))["content"]
        assert none.startswith("No subject of this model has a word starting with “lighthouse”") and "/words" in none

    discord_run(scenario)


def test_a_word_list_too_long_for_an_embed_comes_as_a_file():
    from bot.cogs.words import word_list
    from core.vocabulary import ModelVocabulary, Subject

    small = ModelVocabulary.from_json(VOCABULARY)
    assert word_list(small)[1] is not None and word_list(small)[2] is None
    big = ModelVocabulary(("cat",), tuple(Subject(f"creature number {i}", "🐾", "Animals", (f"creature number {i}",
                                                                                         f"beast {i}"))
                                          for i in range(600)))
    text, embed, file = word_list(big)
    assert embed is None and file.filename == "words.txt" and "600 subjects" in text
    lines = file.fp.read().decode().splitlines()
    assert len(lines) == 600 and lines[7] == "🐾 creature number 7: beast 7"
