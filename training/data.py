"""The default model's data set: emoji art from npm packages, composed and captioned.

    python -m training.data build --out training/build/data      # npm pack + pack, one command
    python -m training.data preview --data training/build/data --out /tmp/preview.png

Two stages, so the GPU machine (which cannot reach npm) needs only a small pack:

1. `build` (`training.sources`): `npm pack` the packages into a cache outside git ($STATUARY_DATA_DIR or
   ~/.cache/statuary/npm), match every image to its emoji-datasource entry, and write a
   pack: `meta.json` (emoji names, images, sources and licences, match statistics) and
   `images.bin` (every image as WebP: the 64 px flat art lossless, the 3D renders at 128 px).
   Deterministic: same packages in, same bytes out.
2. Training samples from the pack on the fly (`Sampler` + `render`): each sample is one
   emoji or a pair, in one style, at a size and position, on a background colour, with a
   caption a person would type. Whatever the caption leaves open (background, size,
   position, pose, skin tone, even style) is drawn at random, so a prompt has many right
   answers and different seeds have something to choose between.

The held-out split is a pure function of the pack and a seed (`Split`): some
(emoji, style) pairs, some (style, background) and (style, position) combinations and
some emoji pairs are never rendered for training, and `eval_prompts` draws from them.
"""

from __future__ import annotations

import argparse
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.sources import build_pack, cache_dir, fetch

# ---------------------------------------------------------------------------- the vocabulary of a composition

# The words a prompt can use for each style; the first is the canonical one.
STYLE_WORDS: dict[str, tuple[str, ...]] = {
    "3d": ("3d style", "3d render", "3d"),
    "flat": ("flat style", "flat", "twemoji style"),
    "cartoon": ("cartoon style", "cartoon", "noto style"),
}
STYLES: tuple[str, ...] = tuple(STYLE_WORDS)

# Background colours: name -> sRGB. Rendered with a little jitter around the value.
COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245), "black": (22, 22, 22), "gray": (128, 128, 128),
    "red": (215, 40, 40), "orange": (245, 140, 30), "yellow": (245, 215, 60),
    "green": (50, 165, 70), "blue": (40, 90, 220), "purple": (135, 60, 190),
    "pink": (245, 150, 195), "brown": (125, 80, 45),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

SIZES: dict[str, tuple[float, float]] = {   # sprite width as a fraction of the canvas
    "small": (0.30, 0.40), "medium": (0.48, 0.60), "large": (0.80, 0.95),
}
SIZE_NAMES: tuple[str, ...] = tuple(SIZES)
# Position name -> (x, y) direction; 0 = centred on that axis. y = -1 is the top.
POSITIONS: dict[str, tuple[int, int]] = {
    "in the top left": (-1, -1), "in the top right": (1, -1), "in the bottom left": (-1, 1),
    "in the bottom right": (1, 1), "at the top": (0, -1), "at the bottom": (0, 1),
    "on the left": (-1, 0), "on the right": (1, 0), "in the center": (0, 0),
}
POSITION_NAMES: tuple[str, ...] = tuple(POSITIONS)
SKIN_TONES = {"1F3FB": "light", "1F3FC": "medium-light", "1F3FD": "medium", "1F3FE": "medium-dark", "1F3FF": "dark"}

# Compositions never rendered for training; evaluation asks for them.
HELD_OUT_STYLE_COLOUR = frozenset({("3d", "purple"), ("flat", "orange"), ("cartoon", "green")})
HELD_OUT_STYLE_POSITION = frozenset({("3d", "in the bottom left"), ("cartoon", "in the top right")})


# ---------------------------------------------------------------------------- load + split


@dataclass
class Pack:
    emoji: list[dict]
    images: list[dict]
    sources: list[dict]
    stats: dict
    root: Path

    @classmethod
    def load(cls, root: Path) -> "Pack":
        if not (Path(root) / "meta.json").exists():   # every training command starts here: say what to run
            raise SystemExit(f"no data pack at {root}: run `python -m training.data build --out {root}`")
        meta = json.loads((Path(root) / "meta.json").read_text())
        return cls(meta["emoji"], meta["images"], meta["sources"], meta["stats"], Path(root))

    def sprites(self, size: int) -> np.ndarray:
        """All images as straight-alpha RGBA uint8, [N, size, size, 4], in `images` order."""
        from PIL import Image

        out = np.zeros((len(self.images), size, size, 4), np.uint8)
        blob = (self.root / "images.bin").read_bytes()
        for i, rec in enumerate(self.images):
            im = Image.open(io.BytesIO(blob[rec["offset"]:rec["offset"] + rec["length"]])).convert("RGBA")
            if im.size != (size, size):
                im = im.resize((size, size), Image.LANCZOS)
            out[i] = np.asarray(im)
        return out


@dataclass
class Split:
    """Which images and combinations training may render. A pure function of pack + seed."""
    train_images: np.ndarray                 # image indices usable for training
    eval_images: np.ndarray                  # held-out (emoji, style) images
    held_pairs: set[tuple[int, int]]         # emoji pairs (sorted) never composed for training
    by_emoji_style: dict[tuple[int, str], list[int]] = field(repr=False, default_factory=dict)

    @property
    def emoji(self) -> frozenset[int]:
        """The emoji this split covers (a vocabulary's learned emoji), in any style."""
        return frozenset(k[0] for k in self.by_emoji_style)

    @classmethod
    def make(cls, pack: Pack, seed: int, held_fraction: float = 0.06, n_held_pairs: int = 200,
             only: set[int] | None = None, keep: set[int] = frozenset()) -> "Split":
        """`only`: the emoji learned (a vocabulary; default all). `keep`: emoji never held out."""
        rng = np.random.default_rng([seed, 1])
        by = {}
        for i, im in enumerate(pack.images):
            if only is None or im["emoji"] in only:
                by.setdefault((im["emoji"], im["style"]), []).append(i)
        # Hold out one style for a fraction of the emoji that exist in all three styles,
        # so each held-out pair's emoji and style are both still seen, just never together.
        full = sorted(e for e in {k[0] for k in by} if all((e, s) in by for s in STYLES) and e not in keep)
        chosen = rng.choice(full, size=int(len(full) * held_fraction), replace=False) if full else []
        held = {(int(e), STYLES[k % len(STYLES)]) for k, e in enumerate(sorted(chosen))}
        eval_idx = sorted(i for key in held for i in by[key])
        train_idx = sorted({i for ids in by.values() for i in ids} - set(eval_idx))
        pool = np.array(sorted({k[0] for k in by}))
        n_emoji = len(pool)
        pairs = set()
        while len(pairs) < min(n_held_pairs, n_emoji * (n_emoji - 1) // 4):
            a, b = pool[rng.choice(n_emoji, 2, replace=False)]
            pairs.add((int(min(a, b)), int(max(a, b))))
        return cls(np.array(train_idx), np.array(eval_idx), pairs, by)


# ---------------------------------------------------------------------------- sampling + captions


@dataclass
class Batch:
    """What to draw (per sample, numpy) and what it is called."""
    image: np.ndarray        # [B, 2] image indices; -1 = empty second slot
    scale: np.ndarray        # [B, 2] sprite width / canvas width
    centre: np.ndarray       # [B, 2, 2] (x, y) in [-1, 1], y = -1 at the top
    angle: np.ndarray        # [B, 2] radians
    background: np.ndarray   # [B, 3] sRGB 0..255
    emoji: np.ndarray        # [B, 2] emoji ids (labels), -1 = none
    style: np.ndarray        # [B] index into STYLES
    colour: np.ndarray       # [B] index into COLOUR_NAMES
    said_style: np.ndarray   # [B] bool: the caption names the style (else the style was drawn at random)
    said_colour: np.ndarray  # [B] bool: the caption names the background colour (else it was drawn at random)
    place: np.ndarray        # [B] index into POSITION_NAMES of the place the caption names; -1: it names none
    captions: list[str]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou8" else "a"


class Sampler:
    """Draws training or evaluation batches. Deterministic in (seed, step)."""

    def __init__(self, pack: Pack, split: Split, seed: int, pair_prob: float = 0.25, drop_caption: float = 0.1,
                 names: dict[int, list[str]] | None = None, canonical: float = 0.0, hold_out: bool = True,
                 joined_colour: float = 0.0):
        """`names`: emoji id -> the words for it, first the canonical one (a vocabulary's);
        default emoji-datasource's names. `canonical`: share of captions that use the first name.
        `hold_out`: never compose the held-out style/colour and style/position combinations
        (False only for the evaluation's judge, which must know every combination).
        `joined_colour`: share of training captions naming the background whose colour phrase joins
        the subject without a comma ("rocket on a blue background, cartoon style", as people type
        it, beside "rocket, cartoon style, on a blue background"). It is drawn from a generator of
        its own, so the pictures, and every other word, stay what they were: a latent pool made
        before keeps its latents and only its captions are drawn again (`pool.LatentPool`)."""
        self.pack, self.split, self.seed = pack, split, seed
        self.pair_prob, self.drop_caption = pair_prob, drop_caption
        self.names = names or {i: e["names"] for i, e in enumerate(pack.emoji)}
        self.canonical, self.hold_out, self.joined_colour = canonical, hold_out, joined_colour
        self.images = pack.images
        # For training: which images may stand for each emoji in each style.
        self.train_by: dict[tuple[int, str], list[int]] = {}
        for i in split.train_images:
            im = pack.images[int(i)]
            self.train_by.setdefault((im["emoji"], im["style"]), []).append(int(i))
        self.train_keys = sorted(self.train_by)

    # -- one sample ---------------------------------------------------------------------
    def _one(self, rng: np.random.Generator, key: tuple[int, str] | None, b: dict, i: int,
             spec: dict | None = None, phrasing: np.random.Generator | None = None) -> str:
        """Fill row i of `b` and return its caption. `spec` fixes words for evaluation; `phrasing`
        (training only) draws how the words are joined, apart from `rng`."""
        spec = spec or {}
        train = not spec
        pair = spec.get("pair") if not train else rng.random() < self.pair_prob
        emoji_a, style = key
        pool = self.train_by if train else self.split.by_emoji_style
        while True:
            colour = spec.get("colour") or COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
            if not train or not self.hold_out or (style, colour) not in HELD_OUT_STYLE_COLOUR:
                break
        # Which words the caption will carry; the rest is left open (and random).
        say_style = "style" in spec if not train else rng.random() < 0.8
        say_colour = "colour" in spec if not train else rng.random() < 0.7
        tone_words = ""
        img_a = pool[(emoji_a, style)][rng.integers(len(pool[(emoji_a, style)]))] if "image" not in spec else spec["image"]
        tone = self.images[img_a]["tone"]
        if tone and (not train or rng.random() < 0.7):
            tone_words = " with " + " and ".join(SKIN_TONES[t] for t in tone.split("-")) + " skin tone"
        name_a = self._name(rng, emoji_a, train)
        b["image"][i, 0], b["emoji"][i, 0] = img_a, emoji_a
        b["angle"][i] = rng.uniform(-0.14, 0.14, 2)   # ~8 degrees of pose either way
        if pair:
            emoji_b = spec.get("emoji_b")
            while emoji_b is None:
                cand = self.train_keys[rng.integers(len(self.train_keys))]
                if cand[1] == style and (min(emoji_a, cand[0]), max(emoji_a, cand[0])) not in self.split.held_pairs \
                        and cand[0] != emoji_a:
                    emoji_b = cand[0]
            imgs_b = pool.get((emoji_b, style)) or self.split.by_emoji_style[(emoji_b, style)]
            b["image"][i, 1], b["emoji"][i, 1] = imgs_b[rng.integers(len(imgs_b))], emoji_b
            s = rng.uniform(0.38, 0.47, 2)
            b["scale"][i] = s
            b["centre"][i, 0] = (-0.5 + rng.uniform(-0.04, 0.04), rng.uniform(-0.15, 0.15))
            b["centre"][i, 1] = (0.5 + rng.uniform(-0.04, 0.04), rng.uniform(-0.15, 0.15))
            subject = f"{_article(name_a)} {name_a}{tone_words} and {self._with_article(rng, emoji_b, train)}"
            if train and rng.random() < 0.3:
                subject += " side by side"
        else:
            size = spec.get("size") or SIZE_NAMES[rng.integers(len(SIZE_NAMES))]
            say_size = "size" in spec if not train else rng.random() < 0.6
            position = spec.get("position")
            if position is None:
                position = POSITION_NAMES[rng.integers(len(POSITION_NAMES))] if size != "large" else "in the center"
                while train and self.hold_out and (style, position) in HELD_OUT_STYLE_POSITION:
                    position = POSITION_NAMES[rng.integers(len(POSITION_NAMES))]
            say_position = "position" in spec if not train else (size != "large" and rng.random() < 0.6)
            s = rng.uniform(*SIZES[size])
            half = 1.0 - s                       # centre range that keeps the sprite inside
            if say_position:
                dx, dy = POSITIONS[position]
                cx = dx * half * rng.uniform(0.75, 1.0) if dx else rng.uniform(-0.15, 0.15) * half
                cy = dy * half * rng.uniform(0.75, 1.0) if dy else rng.uniform(-0.15, 0.15) * half
            else:                                 # unspecified: anywhere it fits
                cx, cy = rng.uniform(-half, half, 2)
            b["scale"][i, 0], b["centre"][i, 0] = s, (cx, cy)
            words = [w for w, on in ((size, say_size),) if on]
            subject = " ".join(words + [name_a]) + tone_words
            if rng.random() < 0.5 or words:
                subject = f"{_article(subject)} {subject}"
            if say_position:
                subject += " " + position
                b["place"][i] = POSITION_NAMES.index(position)
        jitter = rng.integers(-14, 15, 3)
        b["background"][i] = np.clip(np.array(COLOURS[colour]) + jitter, 0, 255)
        b["style"][i], b["colour"][i] = STYLES.index(style), COLOUR_NAMES.index(colour)
        b["said_style"][i], b["said_colour"][i] = say_style, say_colour
        parts = [subject]
        sw = STYLE_WORDS[style][0 if not train else rng.integers(len(STYLE_WORDS[style]))]
        if say_style:
            parts.append(sw)
        if say_colour:
            parts.append(f"on {_article(colour)} {colour} background")
        if train and rng.random() < 0.5:
            tail = parts[1:]
            rng.shuffle(tail)
            parts = parts[:1] + tail
        if phrasing is not None and phrasing.random() < self.joined_colour and say_colour:   # one draw a sample
            colour_at = next(k for k in range(1, len(parts)) if parts[k].endswith(" background"))
            parts[0] = f"{parts[0]} {parts.pop(colour_at)}"
        caption = ", ".join(parts)
        if train and rng.random() < self.drop_caption:
            caption = ""                          # classifier-free guidance learns from these
        return caption

    def _name(self, rng, emoji_id: int, train: bool) -> str:
        names = self.names[emoji_id]
        if not train or (self.canonical and rng.random() < self.canonical):
            return names[0]
        return names[rng.integers(len(names))]

    def _with_article(self, rng, emoji_id: int, train: bool) -> str:
        n = self._name(rng, emoji_id, train)
        return f"{_article(n)} {n}"

    @staticmethod
    def _empty(n: int) -> dict:
        return {"image": np.full((n, 2), -1, np.int64), "scale": np.zeros((n, 2), np.float32),
                "centre": np.zeros((n, 2, 2), np.float32), "angle": np.zeros((n, 2), np.float32),
                "background": np.zeros((n, 3), np.float32), "emoji": np.full((n, 2), -1, np.int64),
                "style": np.zeros(n, np.int64), "colour": np.zeros(n, np.int64), "said_style": np.zeros(n, bool),
                "said_colour": np.zeros(n, bool), "place": np.full(n, -1, np.int64)}

    def train_batch(self, step: int, n: int) -> Batch:
        rng = np.random.default_rng([self.seed, 2, step])
        phrasing = np.random.default_rng([self.seed, 5, step]) if self.joined_colour else None
        b = self._empty(n)
        keys = [self.train_keys[k] for k in rng.integers(len(self.train_keys), size=n)]
        caps = [self._one(rng, key, b, i, phrasing=phrasing) for i, key in enumerate(keys)]
        return Batch(**b, captions=caps)

    def eval_batch(self, specs: list[dict], seed: int) -> Batch:
        """Real renders for evaluation prompts (the ceiling), one per spec."""
        rng = np.random.default_rng([self.seed, 3, seed])
        b = self._empty(len(specs))
        caps = [self._one(rng, (s["emoji"], s["style"]), b, i, spec=s) for i, s in enumerate(specs)]
        return Batch(**b, captions=caps)


def eval_prompts(pack: Pack, split: Split, seed: int, n_single: int = 600, n_combo: int = 150,
                 n_pairs: int = 100) -> list[dict]:
    """Fixed evaluation prompts: held-out (emoji, style) pairs, held-out compositions, pairs.

    Every spec names the style and background so both can be scored; sizes and positions
    are named for a third of the singles.
    """
    rng = np.random.default_rng([seed, 4])
    held = sorted({(pack.images[i]["emoji"], pack.images[i]["style"]) for i in split.eval_images})
    seen = sorted(k for k in split.by_emoji_style if k not in set(held))
    specs = []

    def colour_for(style):
        while True:
            c = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
            if (style, c) not in HELD_OUT_STYLE_COLOUR:
                return c

    for k in range(n_single):
        e, s = held[k % len(held)] if held else seen[k % len(seen)]
        spec = {"kind": "held_emoji_style", "emoji": e, "style": s, "colour": colour_for(s)}
        if k % 3 == 0:
            spec["size"] = SIZE_NAMES[rng.integers(2)]       # small or medium, so position shows
            spec["position"] = POSITION_NAMES[rng.integers(len(POSITION_NAMES))]
        specs.append(spec)
    combos = [("colour", c) for c in sorted(HELD_OUT_STYLE_COLOUR)] + [("position", c) for c in sorted(HELD_OUT_STYLE_POSITION)]
    for k in range(n_combo):
        what, (style, value) = combos[k % len(combos)]
        e = seen[rng.integers(len(seen))][0]
        while (e, style) not in split.by_emoji_style or (e, style) in set(held):
            e = seen[rng.integers(len(seen))][0]
        spec = {"kind": f"held_style_{what}", "emoji": e, "style": style}
        if what == "colour":
            spec["colour"] = value
        else:
            spec.update(colour=colour_for(style), size="small", position=value)
        specs.append(spec)
    pairs = sorted(split.held_pairs)
    k = 0
    while sum(s["kind"] == "held_pair" for s in specs) < n_pairs and k < 50 * n_pairs:
        a, b = pairs[k % len(pairs)]
        k += 1
        style = STYLES[rng.integers(len(STYLES))]
        if (a, style) in split.by_emoji_style and (b, style) in split.by_emoji_style:
            specs.append({"kind": "held_pair", "emoji": a, "emoji_b": b, "style": style,
                          "colour": colour_for(style), "pair": True})
    return specs


# ---------------------------------------------------------------------------- rendering (torch)


class Renderer:
    """Composes batches on any torch device; the sprites live there as uint8.

    Two mip levels (full and half size) keep small sprites from aliasing: each slot
    samples the level closest above its drawn size.
    """

    def __init__(self, sprites: np.ndarray, canvas: int, device="cpu"):
        import torch
        import torch.nn.functional as F

        t = torch.from_numpy(sprites).permute(0, 3, 1, 2).contiguous()   # [N, 4, S, S] uint8
        self.full = t.to(device)
        half = F.interpolate(t.float(), scale_factor=0.5, mode="bilinear", antialias=True)
        self.half = half.round().clamp(0, 255).to(torch.uint8).to(device)
        self.canvas, self.device, self.sprite_px = canvas, device, sprites.shape[1]

    def __call__(self, b: Batch):
        """-> images in [-1, 1], [B, 3, canvas, canvas], float32. Always composed in float32, also
        inside a caller's autocast (the pool is encoded under bf16 on a GPU): there the sprites'
        sampling grid would come out of affine_grid in bf16 and land up to half a pixel off."""
        import torch

        with torch.autocast(torch.device(self.device).type, enabled=False):
            return self._compose(b)

    def _compose(self, b: Batch):
        import torch
        import torch.nn.functional as F

        dev, n, c = self.device, len(b.captions), self.canvas
        bg = torch.as_tensor(b.background, device=dev).float().div(255)
        out = bg[:, :, None, None].expand(n, 3, c, c).clone()
        for slot in range(2):
            idx = torch.as_tensor(b.image[:, slot], device=dev)
            on = idx >= 0
            if not bool(on.any()):
                continue
            s = torch.as_tensor(b.scale[:, slot], device=dev).clamp_min(1e-3)
            cx, cy = (torch.as_tensor(b.centre[:, slot, k], device=dev) for k in range(2))
            a = torch.as_tensor(b.angle[:, slot], device=dev)
            cos, sin = torch.cos(a), torch.sin(a)
            # canvas coords -> sprite coords: rotate by -angle about the centre, divide by scale
            theta = torch.stack([
                torch.stack([cos / s, sin / s, -(cos * cx + sin * cy) / s], -1),
                torch.stack([-sin / s, cos / s, (sin * cx - cos * cy) / s], -1),
            ], 1)
            grid = F.affine_grid(theta, (n, 4, c, c), align_corners=False)
            safe = idx.clamp_min(0)
            use_half = (s * c) <= (self.sprite_px / 2)
            # Small sprites read a prefiltered copy (half size, upsampled back) so they do not alias.
            src = torch.where(use_half[:, None, None, None], self._prefiltered(safe), self.full[safe].float())
            src = src / 255
            rgb, alpha = src[:, :3] * src[:, 3:], src[:, 3:]                # premultiply
            drawn = F.grid_sample(torch.cat([rgb, alpha], 1), grid, mode="bilinear",
                                  padding_mode="zeros", align_corners=False)
            alpha = drawn[:, 3:] * on[:, None, None, None]
            out = out * (1 - alpha) + drawn[:, :3] * on[:, None, None, None]
        return out.clamp(0, 1) * 2 - 1

    def _prefiltered(self, idx):
        import torch.nn.functional as F
        return F.interpolate(self.half[idx].float(), size=self.sprite_px, mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.data", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="npm pack the sources and write the data pack")
    b.add_argument("--out", type=Path, default=Path("training/build/data"))
    b.add_argument("--cache", type=Path, default=None, help="npm tarball cache (default $STATUARY_DATA_DIR/npm or ~/.cache/statuary/npm)")
    v = sub.add_parser("preview", help="render a grid of training samples with their captions")
    v.add_argument("--data", type=Path, default=Path("training/build/data"))
    v.add_argument("--out", type=Path, required=True)
    v.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    if args.cmd == "build":
        stats = build_pack(fetch(args.cache or cache_dir()), args.out)
        print(json.dumps(stats, indent=1))
        return 0
    if args.cmd == "preview":
        from PIL import Image

        pack = Pack.load(args.data)
        split = Split.make(pack, args.seed)
        batch = Sampler(pack, split, args.seed).train_batch(0, 16)
        imgs = Renderer(pack.sprites(128), 128)(batch)
        arr = ((imgs.permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
        grid = np.concatenate([np.concatenate(list(arr[r * 4:(r + 1) * 4]), 1) for r in range(4)], 0)
        Image.fromarray(grid).save(args.out)
        for i, c in enumerate(batch.captions):
            print(i, repr(c))
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
