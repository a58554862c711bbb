"""What a model knows how to draw, when its folder says so: the default model's `vocabulary.json`.

The embedded default model draws emoji and knows a few hundred subject words; a prompt with none
of them still runs, but a person should be told, in one line, what the model draws and where
the word list is. Models without a `vocabulary.json` (any Stable Diffusion checkpoint) know
everything as far as Statuary can tell: `ModelVocabulary.load` returns None for them.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

WORD_LIST = "models/default/VOCABULARY.md"   # the list, in the repository (linked from the UI and the bot)
STYLES = ("3d style", "flat style", "cartoon style")
COLOURS = ("blue", "yellow", "pink", "green", "white", "purple", "orange", "gray")


def normalise(text: str) -> str:
    """Lower case, '-' and '_' as spaces, single spaces: the form the model's captions use."""
    return " ".join(re.sub(r"[-_]", " ", text.lower()).split())


@dataclass(frozen=True)
class ModelVocabulary:
    subjects: tuple[str, ...]      # words that draw the right thing in every style (for examples)
    labels: tuple[str, ...]        # every emoji's canonical name
    names: frozenset[str]          # every word or phrase the model was taught for a subject

    @classmethod
    def load(cls, folder: str | Path) -> "ModelVocabulary | None":
        path = Path(folder) / "vocabulary.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        names = frozenset(normalise(n) for e in data["emoji"] for n in e["names"])
        return cls(tuple(data["subjects"]), tuple(e["label"] for e in data["emoji"]), names)

    def __post_init__(self) -> None:
        # One pattern, longest names first, whole words (plurals too): "cat" in "two cats, 3d"
        # but not in "catalog".
        alts = "|".join(re.escape(n) for n in sorted(self.names, key=len, reverse=True))
        object.__setattr__(self, "_pattern", re.compile(rf"(?<![a-z0-9])(?:{alts})(?:e?s)?(?![a-z0-9])"))

    def knows(self, prompt: str) -> bool:
        """True when the prompt names at least one subject the model was taught."""
        return bool(self._pattern.search(normalise(prompt)))

    def examples(self, n: int = 8, seed: int = 0) -> list[str]:
        """Prompts that show what the model does: subject, style, now and then a background."""
        rng = random.Random(seed)
        words = rng.sample(self.subjects, min(n, len(self.subjects)))
        out = []
        for k, w in enumerate(words):
            prompt = f"{w}, {STYLES[k % len(STYLES)]}"
            if k % 2:
                prompt = f"{w} on a {COLOURS[k % len(COLOURS)]} background, {STYLES[k % len(STYLES)]}"
            out.append(prompt)
        return out

    def hint(self, where: str = WORD_LIST) -> str:
        """The one line shown when a prompt names nothing the model knows; `where` names the word list."""
        some = ", ".join(self.subjects[:3]) if self.subjects else "cat, pizza, rocket"
        return (f"This model draws emoji and knows none of the words in that prompt; try a subject from its word "
                f"list ({where}), e.g. {some}.")
