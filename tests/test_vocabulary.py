"""core.vocabulary: what a model folder says it knows, and the hint for prompts it does not."""

from __future__ import annotations

import json

from core.vocabulary import ModelVocabulary


def _folder(tmp_path):
    (tmp_path / "vocabulary.json").write_text(json.dumps({
        "format": 1, "subjects": ["cat", "ice cream", "rocket"],
        "emoji": [{"label": "cat face", "names": ["cat face", "cat", "kitten"]},
                  {"label": "soft ice cream", "names": ["soft ice cream", "ice cream"]},
                  {"label": "rocket", "names": ["rocket"]},
                  {"label": "jack-o-lantern", "names": ["jack o lantern"]}]}))
    return tmp_path


def test_a_folder_without_vocabulary_knows_everything(tmp_path):
    assert ModelVocabulary.load(tmp_path) is None


def test_knows_whole_words_and_phrases_only(tmp_path):
    v = ModelVocabulary.load(_folder(tmp_path))
    assert v.knows("cat, 3d style") and v.knows("A KITTEN on a blue background") and v.knows("ice-cream, flat")
    assert v.knows("a Jack-O-Lantern") and v.knows("rocket!") and v.knows("two cats") and v.knows("rockets")
    assert not v.knows("a catalog") and not v.knows("ice") and not v.knows("portrait of a woman")
    assert not v.knows("")


def test_examples_and_hint_use_the_subjects(tmp_path):
    v = ModelVocabulary.load(_folder(tmp_path))
    ex = v.examples(3)
    assert len(ex) == 3 and all(v.knows(p) for p in ex) and all("style" in p for p in ex)
    assert ex == v.examples(3)          # stable: the page shows the same examples on every load
    hint = v.hint()
    assert "emoji" in hint and "models/default/VOCABULARY.md" in hint and "cat" in hint and "\n" not in hint


def test_find_matches_the_start_of_any_word_and_groups_keep_the_lists_order(tmp_path):
    v = ModelVocabulary.load(_folder(tmp_path))
    assert [e.label for e in v.find("KIT")] == ["cat face"] and v.find("kit")[0].line() == "cat face: cat, kitten"
    assert [e.label for e in v.find("cream")] == ["soft ice cream"] and v.find("at") == [] and v.find(" ") == []
    assert [e.label for e in v.find("jack-o")] == ["jack-o-lantern"]
    assert {k: [e.label for e in g] for k, g in v.by_category().items()} == {
        "Other": ["cat face", "soft ice cream", "rocket", "jack-o-lantern"]}


def test_the_word_list_travels_to_front_ends_whole(tmp_path):
    # A distributed front-end has no model folder: a worker announces the list through the broker (JSON).
    from core.distributed.service import CeleryJobService

    v = ModelVocabulary.load(_folder(tmp_path))
    front = CeleryJobService.__new__(CeleryJobService)
    front._info = json.loads(json.dumps({"vocabulary": v.to_json()}))
    assert front.vocabulary == v and front.vocabulary.knows("two kittens") and front.vocabulary.find("kit")
