"""Fixtures of the default model's training tests: a tiny synthetic stand-in of the npm packages
(same tarball layouts, a dozen emoji) replaces the network, its data pack, and one "smoke"-size
run trained and exported once for the package.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from training import sources as S
from training import train as T


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """Training tests run on one thread, and give the others back their thread count afterwards:
    set at import, it changed the float sums of every test collected after these (a CLI
    reproduction on 2 threads then differed from the session's generator on 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# CLDR label and tags as emojibase-data writes them (hexcode without FE0F for most)
FAKE_CLDR = {
    "1F600": ("grinning face", ["face", "grin", "grinning face"]), "1F431": ("cat face", ["cat", "face", "kitten", "pet"]),
    "1F355": ("pizza", ["cheese", "slice"]), "0023-FE0F-20E3": ("keycap: #", ["keycap"]),
    "1F385": ("Santa Claus", ["celebration", "christmas", "claus", "father", "santa"]),
    "1F34E": ("red apple", ["apple", "fruit", "red"]), "1F436": ("dog face", ["dog", "face", "pet"]),
    "1F680": ("rocket", ["space"]), "1F31E": ("sun with face", ["bright", "face", "sun"]),
    "1F44B": ("waving hand", ["hand", "wave"]), "2764": ("red heart", ["heart", "love"]),
}


# name, short names, unified, non_qualified, skin tones
FAKE_EMOJI = [
    ("GRINNING FACE", ["grinning"], "1F600", None, []),
    ("CAT FACE", ["cat"], "1F431", None, []),
    ("SLICE OF PIZZA", ["pizza"], "1F355", None, []),
    ("HASH KEY", ["hash"], "0023-FE0F-20E3", "0023-20E3", []),
    ("FATHER CHRISTMAS", ["santa"], "1F385", None, ["1F3FB", "1F3FF"]),
    ("RED APPLE", ["apple"], "1F34E", None, []),
    ("DOG FACE", ["dog"], "1F436", None, []),
    ("ROCKET", ["rocket"], "1F680", None, []),
    ("SUN WITH FACE", ["sun_with_face"], "1F31E", None, []),
    ("WAVING HAND SIGN", ["wave"], "1F44B", None, ["1F3FD"]),
    ("Flag: England", ["flag-england"], "1F3F4-E0067-E0062-E0065-E006E-E0067-E007F", None, []),
    ("HEAVY BLACK HEART", ["heart"], "2764-FE0F", "2764", []),
]


def _png(rgb, size, fmt):
    im = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    for y in range(size // 4, 3 * size // 4):
        for x in range(size // 4, 3 * size // 4):
            im.putpixel((x, y), (*rgb, 255))
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _tgz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="package")
def fake_npm(tmp_path_factory) -> dict[str, Path]:
    """Tarballs laid out like the real packages (checked against npm pack, Nov 2026)."""
    root = tmp_path_factory.mktemp("npm")
    entries, google, twitter, fluent = [], {}, {}, {}
    for k, (name, shorts, uni, nq, tones) in enumerate(FAKE_EMOJI):
        img = uni.lower() + ".png"
        e = {"name": name, "short_name": shorts[0], "short_names": shorts, "unified": uni, "non_qualified": nq,
             "image": img, "category": "Test", "subcategory": "test", "sort_order": k,
             "has_img_google": True, "has_img_twitter": True}
        if tones:
            e["skin_variations"] = {t: {"unified": f"{uni}-{t}", "non_qualified": None, "image": f"{uni}-{t}".lower() + ".png"}
                                    for t in tones}
        entries.append(e)
        colour = ((k * 40) % 256, (k * 90) % 256, (k * 150) % 256)
        for u in [uni] + [f"{uni}-{t}" for t in tones]:
            google[f"package/img/google/64/{u.lower()}.png"] = _png(colour, 64, "PNG")
            twitter[f"package/img/twitter/64/{u.lower()}.png"] = _png(colour[::-1], 64, "PNG")
            if name != "ROCKET":   # Fluent lacks a few emoji
                # Fluent drops leading zeros and the tag terminator, and joins tags with '_'
                stem = "-".join(p.lstrip("0") or "0" for p in u.lower().split("-") if p != "e007f")
                stem = stem.replace("-e0067-e0062-e0065-e006e-e0067", "-e0067_e0062_e0065_e006e_e0067")
                fluent[f"package/assets/{stem}.webp"] = _png(colour, 256, "WEBP")
    fluent["package/assets/0023-fe0f-20e3.webp"] = _png((1, 2, 3), 256, "WEBP")   # a duplicate, as in 1.1.0
    fluent["package/assets/1f9ff-fe0f.webp"] = _png((1, 2, 3), 256, "WEBP")       # matches nothing
    meta = {"package/emoji.json": json.dumps(entries).encode(), "package/LICENSE": b"MIT"}
    cldr = [{"label": lab, "hexcode": hexcode, "tags": tags} for hexcode, (lab, tags) in FAKE_CLDR.items()]
    keywords = {"".join(chr(int(h, 16)) for h in hexcode.split("-")): [lab.replace(" ", "_"), "meow" if "cat" in lab else "thing"]
                for hexcode, (lab, _) in FAKE_CLDR.items()}
    return {
        "emoji-datasource": _tgz(root / "emoji-datasource-16.0.0.tgz", meta),
        "emoji-datasource-google": _tgz(root / "emoji-datasource-google-16.0.0.tgz", google),
        "emoji-datasource-twitter": _tgz(root / "emoji-datasource-twitter-16.0.0.tgz", twitter),
        "@lobehub/fluent-emoji-3d": _tgz(root / "lobehub-fluent-emoji-3d-1.1.0.tgz", fluent),
        "emojibase-data": _tgz(root / "emojibase-data-17.0.0.tgz", {"package/en/data.json": json.dumps(cldr).encode()}),
        "emojilib": _tgz(root / "emojilib-4.0.3.tgz", {"package/dist/emoji-en-US.json": json.dumps(keywords).encode()}),
    }


@pytest.fixture(scope="package")
def pack_dir(fake_npm, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    S.build_pack(fake_npm, out)
    return out


@pytest.fixture(scope="package")
def smoke_run(pack_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    rc = T.main(["--smoke", "--data", str(pack_dir), "--run", str(root / "run"), "--export", str(root / "model"),
                 "--shard", "100KB"])
    assert rc == 0
    return root
