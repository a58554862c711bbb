"""The default model's sources and data pack: `npm pack` the emoji packages into a cache
outside git, match every image to its emoji-datasource entry, and write the pack that training
reads (`meta.json` + `images.bin`). Deterministic: same packages in, same bytes out.

`training.data` loads the pack, splits it and composes training samples from it; its
`build` command runs `fetch` and `build_pack` from here."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

from core.vocabulary import normalise

# ---------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    style: str | None          # None for the metadata package
    prefix: str                # where the images sit inside the tarball
    licence: str
    credit: str


SOURCES: tuple[Source, ...] = (
    Source("emoji-datasource", "16.0.0", None, "package/",
           "MIT", "emoji-data by Cal Henderson (iamcal/emoji-data): names, short names, categories"),
    Source("emoji-datasource-google", "16.0.0", "cartoon", "package/img/google/64/",
           "Apache-2.0 (Noto Emoji images)", "Noto Emoji by Google, 64 px PNGs via emoji-datasource-google"),
    Source("emoji-datasource-twitter", "16.0.0", "flat", "package/img/twitter/64/",
           "CC-BY-4.0 (Twemoji graphics)", "Twemoji by Twitter, Inc. and other contributors (jdecked/twemoji), "
           "64 px PNGs via emoji-datasource-twitter"),
    Source("@lobehub/fluent-emoji-3d", "1.1.0", "3d", "package/assets/",
           "MIT", "Fluent Emoji by Microsoft, 3D renders packaged by LobeHub (@lobehub/fluent-emoji-3d)"),
    Source("emojibase-data", "17.0.0", None, "package/en/data.json",
           "MIT", "Emojibase by Miles Johnson: CLDR labels and tags (English)"),
    Source("emojilib", "4.0.3", None, "package/dist/emoji-en-US.json",
           "MIT", "emojilib by Mu-An Chiou: keywords"),
)


def cache_dir() -> Path:
    root = os.environ.get("STATUARY_DATA_DIR")
    return Path(root) / "npm" if root else Path.home() / ".cache" / "statuary" / "npm"


def tarball_name(src: Source) -> str:
    return f"{src.package.lstrip('@').replace('/', '-')}-{src.version}.tgz"


def fetch(cache: Path) -> dict[str, Path]:
    """`npm pack` each source into `cache` unless it is already there. Returns package -> tarball."""
    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for src in SOURCES:
        path = cache / tarball_name(src)
        if not path.exists():
            print(f"npm pack {src.package}@{src.version} -> {cache}", file=sys.stderr)
            subprocess.run(["npm", "pack", f"{src.package}@{src.version}", "--pack-destination", str(cache)],
                           check=True, stdout=subprocess.DEVNULL)
        if not path.exists():
            raise FileNotFoundError(f"npm pack did not write {path}")
        out[src.package] = path
    return out


# ---------------------------------------------------------------------------- build the pack


def _codepoints(stem: str) -> tuple[int, ...]:
    """'1f3f4-e0067_e0062' or '0023-FE0F-20E3' -> code points without variation selectors.

    Fluent names drop leading zeros ('23-fe0f-20e3'), join tag sequences with '_' and
    drop U+FE0F and the tag-sequence terminator U+E007F, so compare on integers without them.
    """
    cps = [int(p, 16) for p in stem.replace("_", "-").split("-") if p]
    return tuple(c for c in cps if c not in (0xFE0F, 0xE007F))


# The captions' normal form of a name: the one core.vocabulary matches prompts in.
_words = normalise


def _read_members(tgz: Path, prefix: str, exts: tuple[str, ...]) -> dict[str, bytes]:
    found = {}
    with tarfile.open(tgz, "r:gz") as tf:
        for m in tf:
            if m.isfile() and m.name.startswith(prefix) and m.name.endswith(exts) and "/" not in m.name[len(prefix):]:
                found[m.name[len(prefix):]] = tf.extractfile(m).read()
    return found


def _add_names(tarballs: dict[str, Path], emoji: list[dict], by_cps: dict) -> dict:
    """Join CLDR labels + tags (emojibase-data) and keywords (emojilib) onto the emoji, by code points."""
    def read(package: str):
        src = next(s for s in SOURCES if s.package == package)
        with tarfile.open(tarballs[package], "r:gz") as tf:
            return json.load(tf.extractfile(src.prefix))

    labelled = keyed = 0
    for rec in read("emojibase-data"):
        hit = by_cps.get(_codepoints(rec["hexcode"]))
        if hit and hit[1] is None and "label" not in emoji[hit[0]]:
            emoji[hit[0]]["label"] = rec["label"]
            emoji[hit[0]]["tags"] = rec.get("tags") or []
            labelled += 1
    for char, keywords in read("emojilib").items():
        hit = by_cps.get(tuple(c for c in map(ord, char) if c not in (0xFE0F, 0xE007F)))
        if hit and hit[1] is None and "keywords" not in emoji[hit[0]]:
            emoji[hit[0]]["keywords"] = keywords
            keyed += 1
    return {"cldr_labels": labelled, "emojilib_keywords": keyed}


def build_pack(tarballs: dict[str, Path], out: Path, fluent_px: int = 128) -> dict:
    """Match images to emoji and write `meta.json` + `images.tar` into `out`. Returns stats."""
    from PIL import Image

    with tarfile.open(tarballs["emoji-datasource"], "r:gz") as tf:
        entries = json.load(tf.extractfile("package/emoji.json"))
    entries.sort(key=lambda e: (e["sort_order"], e["unified"]))

    emoji, by_cps = [], {}   # by_cps: code points -> (emoji index, skin tone or None)
    for e in entries:
        i = len(emoji)
        names = [_words(e["name"] or e["short_name"])] + [_words(s) for s in e["short_names"]]
        emoji.append({
            "name": names[0],
            "names": list(dict.fromkeys(n for n in names if n)),
            "category": e["category"], "subcategory": e["subcategory"], "unified": e["unified"],
        })
        for key in (e["unified"], e.get("non_qualified")):
            if key:
                by_cps.setdefault(_codepoints(key), (i, None))
        for tone, v in sorted((e.get("skin_variations") or {}).items()):
            for key in (v["unified"], v.get("non_qualified")):
                if key:
                    by_cps.setdefault(_codepoints(key), (i, tone))

    stats = {"emoji": len(emoji), "styles": {}, "names": _add_names(tarballs, emoji, by_cps)}
    images, files = [], {}
    for src in SOURCES:
        if src.style is None:
            continue
        exts = (".webp",) if src.style == "3d" else (".png",)
        members = _read_members(tarballs[src.package], src.prefix, exts)
        matched, unmatched, seen = 0, [], set()
        for fname in sorted(members):
            stem = fname.rsplit(".", 1)[0]
            hit = by_cps.get(_codepoints(stem))
            if hit is None:
                unmatched.append(fname)
                continue
            if hit in seen:   # fluent ships some files twice ('23-fe0f-20e3' and '0023-fe0f-20e3')
                continue
            seen.add(hit)
            matched += 1
            # Re-encode as WebP: lossless for the flat 64 px art (exact pixels), lossy q85 for
            # the 3D renders, downsized to 128 px. Keeps the pack small enough to carry to
            # the device machine with the wheels (64 MiB in all).
            im = Image.open(io.BytesIO(members[fname])).convert("RGBA")
            buf = io.BytesIO()
            if src.style == "3d":
                im.resize((fluent_px, fluent_px), Image.LANCZOS).save(buf, "WEBP", quality=85, method=4)
            else:
                im.save(buf, "WEBP", lossless=True, method=4, quality=50)
            member = f"{src.style}/{stem.lower()}.webp"
            files[member] = buf.getvalue()
            images.append({"file": member, "emoji": hit[0], "style": src.style, "tone": hit[1]})
        stats["styles"][src.style] = {
            "package": f"{src.package}@{src.version}", "files": len(members), "matched": matched,
            "duplicates": len(members) - matched - len(unmatched), "unmatched": unmatched,
            "match_rate": round((len(members) - len(unmatched)) / max(1, len(members)), 4),
            "emoji_covered": len({h[0] for h in seen}),
        }

    out.mkdir(parents=True, exist_ok=True)
    offset = 0
    with open(out / "images.bin", "wb") as f:   # one blob + offsets: no per-file overhead
        for im in images:
            data = files[im["file"]]
            im["offset"], im["length"] = offset, len(data)
            f.write(data)
            offset += len(data)
    sources = []
    for src in SOURCES:
        sha = hashlib.sha256(Path(tarballs[src.package]).read_bytes()).hexdigest()
        sources.append({"package": src.package, "version": src.version, "style": src.style,
                        "licence": src.licence, "credit": src.credit, "tarball_sha256": sha})
    meta = {"format": 1, "sources": sources, "emoji": emoji, "images": images, "stats": stats}
    (out / "meta.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return stats
