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

WORD_LIST = "models/default/VOCABULARY.md"   # the list, in the repository (the UI, the bot and the CLI show it too)
HOW_TO_ASK = ("A prompt is a subject, then a style (3d, flat or cartoon) and, if you like, a background colour "
              "(on a blue background), a size (small, large) or a place (in the top left).")
STYLES = ("3d style", "flat style", "cartoon style")
COLOURS = ("blue", "yellow", "pink", "green", "white", "purple", "orange", "gray")


def normalise(text: str) -> str:
    """Lower case, '-' and '_' as spaces, single spaces: the form the model's captions use."""
    return " ".join(re.sub(r"[-_]", " ", text.lower()).split())


@dataclass(frozen=True)
class Subject:
    """One emoji the model was taught: its usual name, the character, its group, every word for it."""

    label: str
    char: str
    category: str
    names: tuple[str, ...]

    def line(self) -> str:
        """'🦊 fox face: fox' -- the usual name, then the other words that mean it."""
        others = [n for n in self.names if n != self.label]
        return f"{self.char} {self.label}".strip() + (f": {', '.join(others)}" if others else "")


@dataclass(frozen=True)
class ModelVocabulary:
    subjects: tuple[str, ...]      # words that draw the right thing in every style (for examples)
    emoji: tuple[Subject, ...]     # every emoji the model was taught, in the word list's order

    @classmethod
    def load(cls, folder: str | Path) -> "ModelVocabulary | None":
        path = Path(folder) / "vocabulary.json"
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: dict) -> "ModelVocabulary":
        """From vocabulary.json's form (or a worker's announcement of it: `to_json`)."""
        return cls(tuple(data["subjects"]), tuple(
            Subject(e["label"], e.get("char", ""), e.get("category", ""), tuple(e["names"])) for e in data["emoji"]))

    def to_json(self) -> dict:
        return {"subjects": list(self.subjects),
                "emoji": [{"label": e.label, "char": e.char, "category": e.category, "names": list(e.names)}
                          for e in self.emoji]}

    @property
    def labels(self) -> tuple[str, ...]:
        """Every emoji's usual name."""
        return tuple(e.label for e in self.emoji)

    def __post_init__(self) -> None:
        names = frozenset(normalise(n) for e in self.emoji for n in e.names)
        object.__setattr__(self, "names", names)   # every word or phrase the model was taught for a subject
        # One pattern, longest names first, whole words (plurals too): "cat" in "two cats, 3d"
        # but not in "catalog".
        alts = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
        object.__setattr__(self, "_pattern", re.compile(rf"(?<![a-z0-9])(?:{alts})(?:e?s)?(?![a-z0-9])"))

    def find(self, text: str) -> list[Subject]:
        """The subjects with a word that starts with `text` ('fo' finds fox face, football, ...)."""
        query = normalise(text)
        if not query:
            return []
        starts = re.compile(rf"(?<![a-z0-9]){re.escape(query)}")
        return [e for e in self.emoji if any(starts.search(normalise(n)) for n in e.names)]

    def by_category(self) -> dict[str, list[Subject]]:
        """The subjects in their groups (Animals & Nature, Food & Drink, ...), in the word list's order."""
        groups: dict[str, list[Subject]] = {}
        for e in self.emoji:
            groups.setdefault(e.category or "Other", []).append(e)
        return groups

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
