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
