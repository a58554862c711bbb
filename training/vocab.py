"""The default model's vocabulary: which emoji it learns, and the words a person types for each.

emoji-datasource's names are old Unicode names ("heavy black heart", "white medium star");
people type "heart" and "star". So every emoji is called by its CLDR label (emojibase-data,
first, and the word evaluation prompts use), its emoji-datasource names, and those
emojibase tags / emojilib keywords that name few enough emoji to mean something
("kitten" names the cat, "animal" names a hundred things and is dropped).

Which emoji: a CPU learns a few hundred well sooner than two thousand badly, so the first
model learns common subjects (animals, plants, food, weather and sky, vehicles, a few faces,
hearts and everyday objects) and leaves flags, keycaps, symbols and person/gender/skin-tone
variants for later. `SUBJECTS` are the words that must draw the right thing in every style:
none of them is ever held out of training.

    python -m training.vocab --data training/build/data            # print the vocabulary
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path

from core.vocabulary import normalise as words  # the captions' form of any name

# Learned whole (emoji-datasource subcategories).
SUBGROUPS: tuple[str, ...] = (
    "animal-mammal", "animal-bird", "animal-amphibian", "animal-reptile", "animal-marine", "animal-bug",
    "plant-flower", "plant-other",
    "food-fruit", "food-vegetable", "food-prepared", "food-sweet",
    "transport-air", "transport-water", "face-costume",
)
# Picked by CLDR label from other subcategories: what people ask a picture tool for.
PICKS: tuple[str, ...] = (
    # vehicles
    "automobile", "taxi", "bus", "police car", "fire engine", "ambulance", "racing car", "bicycle",
    "motorcycle", "tractor", "delivery truck", "locomotive", "kick scooter", "skateboard",
    # faces
    "grinning face", "face with tears of joy", "winking face", "smiling face with heart-eyes",
    "smiling face with sunglasses", "star-struck", "thinking face", "face with open mouth",
    "enraged face", "sleeping face", "nerd face", "partying face",
    # hearts
    "red heart", "orange heart", "yellow heart", "green heart", "blue heart", "purple heart",
    "broken heart", "sparkling heart",
    # sky and weather (the moon's phases and clock faces can wait)
    "sun", "sun with face", "star", "glowing star", "shooting star", "cloud", "cloud with rain",
    "cloud with lightning", "sun behind cloud", "snowflake", "snowman", "snowman without snow",
    "rainbow", "umbrella with rain drops", "high voltage", "fire", "droplet", "water wave",
    "crescent moon", "full moon", "comet", "tornado", "ringed planet", "milky way",
    # places and things
    "house", "house with garden", "castle", "hut", "tent", "volcano", "mountain", "desert island",
    "crown", "gem stone", "ring", "top hat", "t-shirt", "glasses", "sunglasses",
    "guitar", "violin", "trumpet", "drum", "soccer ball", "basketball", "baseball", "trophy",
    "video game", "game die", "puzzle piece", "teddy bear", "crystal ball",
    "christmas tree", "jack-o-lantern", "fireworks", "balloon", "wrapped gift", "party popper",
    "light bulb", "candle", "books", "pencil", "scissors", "key", "hammer",
    "alarm clock", "camera", "television", "laptop", "umbrella", "teapot", "hot beverage",
    "globe showing europe-africa",
)

# The words the issue requires, exactly as typed -> the CLDR labels of the emoji they name.
SUBJECTS: dict[str, tuple[str, ...]] = {
    "cat": ("cat face", "cat"), "dog": ("dog face", "dog"), "pizza": ("pizza",), "apple": ("red apple",),
    "banana": ("banana",), "rocket": ("rocket",), "ghost": ("ghost",), "house": ("house",),
    "tree": ("deciduous tree", "evergreen tree"), "sun": ("sun", "sun with face"),
    "snowman": ("snowman without snow", "snowman"), "car": ("automobile",), "heart": ("red heart",),
    "star": ("star", "glowing star"), "birthday cake": ("birthday cake",), "robot": ("robot",),
    "unicorn": ("unicorn",), "penguin": ("penguin",), "frog": ("frog",),
    "flower": ("blossom", "tulip", "hibiscus", "cherry blossom"), "rainbow": ("rainbow",),
    "cloud": ("cloud",), "moon": ("crescent moon",), "fire": ("fire",), "guitar": ("guitar",),
    "ice cream": ("soft ice cream", "ice cream"), "hamburger": ("hamburger",), "taco": ("taco",),
    "strawberry": ("strawberry",), "turtle": ("turtle",), "fish": ("fish", "tropical fish"),
    "octopus": ("octopus",), "butterfly": ("butterfly",), "owl": ("owl",), "panda": ("panda",),
    "fox": ("fox",), "lion": ("lion",), "dragon": ("dragon", "dragon face"), "crown": ("crown",),
    "mushroom": ("mushroom",),
}

# A CLDR tag becomes an alias only if it names at most this many learned emoji...
MAX_SHARED = 3
MAX_TAGS = 4          # ...and only the first few (alphabetical) of those, so names stay focused...
# ...and is not one of these words that say what kind of thing it is rather than which, or
# a word the captions use for something else (size, position, style, colour).
STOP = frozenset("""
small medium large top bottom left right center centre side flat cartoon render style background
noto twemoji skin tone light dark""".split() + """
animal animals nature face food fruit vegetable drink sweet dessert plant weather sky space
object objects thing travel place places vehicle transport transportation sport sports game
symbol emotion love like happy smile funny cute small big large little red orange yellow green
blue purple pink brown black white gray grey dark light new old hot cold wild pet pets farm
zoo sea ocean water land air ground bird birds fish bug insect flower flowers tree trees
good morning eye eyes feels bae bestest dinner behind burn cardiac romantic kisses day night
""".split())
ALIAS_RE = re.compile(r"[a-z][a-z' ]*[a-z]")



@dataclass
class Vocabulary:
    emoji: list[int]                   # pack emoji ids learned, ascending
    names: dict[int, list[str]]        # emoji id -> names; the first is its CLDR label
    subjects: dict[str, list[int]]     # SUBJECTS word -> emoji ids

    @classmethod
    def build(cls, pack) -> "Vocabulary":
        """A pure function of the pack (its metadata: emoji-datasource + emojibase + emojilib)."""
        by_label = {}
        for i, e in enumerate(pack.emoji):
            if e.get("label"):
                by_label.setdefault(words(e["label"]), i)
        with_art = _emoji_with_all_styles(pack)
        chosen = {i for i, e in enumerate(pack.emoji) if e["subcategory"] in SUBGROUPS and i in with_art}
        missing = [p for p in PICKS if words(p) not in by_label]
        subjects = {}
        for word, labels in SUBJECTS.items():
            ids = [by_label.get(words(lab)) for lab in labels]
            missing += [lab for lab, i in zip(labels, ids) if i is None]
            subjects[word] = [i for i in ids if i is not None]
        if missing:
            raise ValueError(f"labels not in the pack's emojibase data: {missing}")
        chosen |= {by_label[words(p)] for p in PICKS} | {i for ids in subjects.values() for i in ids}
        chosen = {i for i in chosen if i in with_art}
        # Person-like entries that slip in through subcategories (e.g. "mrs. claus" is not here,
        # but zwj gender variants of animals such as "black cat" are fine and stay).
        emoji = sorted(chosen)

        # Aliases: CLDR tags, counted across the learned emoji only. emojilib's keywords are
        # too loose to caption with ("dinner" for a fish, band names for hearts); only its
        # first entry, the emoji's own short code ("cat_face"), is used.
        cand = {i: set() for i in emoji}
        for i in emoji:
            e = pack.emoji[i]
            for w in list(e.get("tags") or []) + list(e.get("keywords") or [])[:1]:
                w = words(w)
                if ALIAS_RE.fullmatch(w) and w not in STOP and len(w) > 2:
                    cand[i].add(w)
        count: dict[str, int] = {}
        for ws in cand.values():
            for w in ws:
                count[w] = count.get(w, 0) + 1
        names = {}
        for i in emoji:
            e = pack.emoji[i]
            first = [words(e["label"])] if e.get("label") else []
            tags = sorted(w for w in cand[i] if count[w] <= MAX_SHARED)[:MAX_TAGS]
            own = first + [words(n) for n in e["names"]] + tags
            names[i] = list(dict.fromkeys(n for n in own if n))
        for word, ids in subjects.items():      # the required words always name their emoji
            for i in ids:
                if word not in names[i]:
                    names[i].append(word)
        return cls(emoji, names, subjects)

    def to_json(self, pack) -> dict:
        """What ships beside the weights (`vocabulary.json`): the UI's examples and word list."""
        return {
            "format": 1,
            "subjects": sorted(self.subjects),
            "emoji": [{"label": self.names[i][0], "names": self.names[i], "char": _char(pack.emoji[i]["unified"]),
                       "category": pack.emoji[i]["category"]} for i in self.emoji],
        }


def learned_split(pack, seed: int, vocabulary: str):
    """(Split, names) for a run's `vocabulary` setting: "common" learns `Vocabulary`'s emoji by
    its names, never holding out a required subject; "all" learns every emoji by
    emoji-datasource's names (names None). Training and evaluation both use this."""
    from training import data as D

    if vocabulary == "all":
        return D.Split.make(pack, seed), None
    if vocabulary != "common":
        raise ValueError(f"vocabulary must be 'common' or 'all', not {vocabulary!r}")
    v = Vocabulary.build(pack)
    keep = {i for ids in v.subjects.values() for i in ids}
    return D.Split.make(pack, seed, only=set(v.emoji), keep=keep), v.names


def markdown(v: Vocabulary, pack) -> str:
    """The word list a person reads: every subject the model learned, with every word for it."""
    from training import data as D

    out = ["# The default model's words", "",
           "Generated by `python -m training.vocab --markdown models/default/VOCABULARY.md` from the data pack;",
           "the same list ships as `vocabulary.json` beside the weights.", "",
           "A prompt is a subject, then any of: a style, a background colour, a size, a position.",
           "For example `cat, 3d style`, `pizza, flat style`, `a small rocket in the top left, cartoon style, "
           "on a blue background`, `a fox and a mushroom side by side`.", "",
           f"- **Styles**: {'; '.join(', '.join(f'`{w}`' for w in ws) for ws in D.STYLE_WORDS.values())}",
           f"- **Backgrounds**: `on a ... background` with {', '.join(D.COLOUR_NAMES)}",
           f"- **Sizes**: {', '.join(D.SIZE_NAMES)}",
           f"- **Positions**: {', '.join(D.POSITION_NAMES)}", "",
           f"## Subjects ({len(v.emoji)})", "",
           "The first word is the subject's usual name; the others mean the same thing to the model.", ""]
    by_cat: dict[str, list[int]] = {}
    for i in v.emoji:
        by_cat.setdefault(pack.emoji[i]["category"], []).append(i)
    for cat in sorted(by_cat):
        out += [f"### {cat}", "", "| | words |", "|---|---|"]
        for i in by_cat[cat]:
            out.append(f"| {_char(pack.emoji[i]['unified'])} | {', '.join(v.names[i])} |")
        out.append("")
    return "\n".join(out)


def _emoji_with_all_styles(pack) -> set[int]:
    """Emoji drawn in every style without a skin tone (the model learns each in all three)."""
    styles: dict[int, set] = {}
    for im in pack.images:
        if im["tone"] is None:
            styles.setdefault(im["emoji"], set()).add(im["style"])
    n = len({im["style"] for im in pack.images})
    return {i for i, s in styles.items() if len(s) == n}


def _char(unified: str) -> str:
    return "".join(chr(int(h, 16)) for h in unified.split("-"))


def main(argv: list[str] | None = None) -> int:
    from training import data as D

    p = argparse.ArgumentParser(prog="python -m training.vocab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("training/build/data"))
    p.add_argument("--json", action="store_true", help="print vocabulary.json instead of a table")
    p.add_argument("--markdown", type=Path, default=None, help="write the word list for people (models/default/VOCABULARY.md)")
    args = p.parse_args(argv)
    pack = D.Pack.load(args.data)
    v = Vocabulary.build(pack)
    if args.json:
        print(json.dumps(v.to_json(pack), indent=1, ensure_ascii=False))
        return 0
    if args.markdown:
        args.markdown.write_text(markdown(v, pack), encoding="utf-8")
        return 0
    for i in v.emoji:
        print(f"{pack.emoji[i]['subcategory']:18s} {' | '.join(v.names[i])}")
    print(f"{len(v.emoji)} emoji, {sum(len(n) for n in v.names.values())} names; "
          f"subjects: {', '.join(f'{w}={len(ids)}' for w, ids in v.subjects.items())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
