"""The data pack: building it from the packages, the held-out split, captions, the tokenizer and
the vocabulary, and the batches the trainer draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training import data as D
from training import sources as S
from training.batches import Prefetch
from training.tokenizer import load_tokenizer, train_tokenizer


def test_build_matches_every_image_and_counts_styles(pack_dir):
    pack = D.Pack.load(pack_dir)
    st = pack.stats["styles"]
    assert st["cartoon"]["matched"] == st["flat"]["matched"] == 15       # 12 emoji + 3 skin tones
    assert st["3d"]["matched"] == 14 and st["3d"]["duplicates"] == 1      # no rocket; one duplicate file
    assert st["3d"]["unmatched"] == ["1f9ff-fe0f.webp"]
    england = next(i for i, e in enumerate(pack.emoji) if e["unified"].startswith("1F3F4"))
    assert any(im["emoji"] == england and im["style"] == "3d" for im in pack.images)
    assert {s["licence"] for s in pack.sources} >= {"MIT", "Apache-2.0 (Noto Emoji images)", "CC-BY-4.0 (Twemoji graphics)"}
    sprites = pack.sprites(32)
    assert sprites.shape == (len(pack.images), 32, 32, 4) and sprites[..., 3].max() == 255


def test_build_and_split_are_deterministic(fake_npm, pack_dir, tmp_path):
    S.build_pack(fake_npm, tmp_path)
    for name in ("meta.json", "images.bin"):
        assert (tmp_path / name).read_bytes() == (pack_dir / name).read_bytes()
    pack = D.Pack.load(pack_dir)
    a, b, c = D.Split.make(pack, 0, held_fraction=0.3, n_held_pairs=5), D.Split.make(pack, 0, held_fraction=0.3, n_held_pairs=5), \
        D.Split.make(pack, 1, held_fraction=0.3, n_held_pairs=5)
    assert list(a.eval_images) == list(b.eval_images) and a.held_pairs == b.held_pairs
    assert len(a.eval_images) > 0 and not set(a.train_images) & set(a.eval_images)
    assert list(a.eval_images) != list(c.eval_images) or a.held_pairs != c.held_pairs
    s1, s2 = D.Sampler(pack, a, 0), D.Sampler(pack, b, 0)
    x, y = s1.train_batch(7, 32), s2.train_batch(7, 32)
    assert x.captions == y.captions and np.array_equal(x.image, y.image) and np.array_equal(x.centre, y.centre)


def test_training_never_renders_held_out_things(pack_dir):
    pack = D.Pack.load(pack_dir)
    split = D.Split.make(pack, 0, held_fraction=0.3, n_held_pairs=5)
    sampler = D.Sampler(pack, split, 0, pair_prob=0.5)
    held_images = set(int(i) for i in split.eval_images)
    for step in range(20):
        b = sampler.train_batch(step, 32)
        assert not held_images & set(b.image.flatten().tolist())
        for i in range(32):
            style, colour = D.STYLES[b.style[i]], D.COLOUR_NAMES[b.colour[i]]
            assert (style, colour) not in D.HELD_OUT_STYLE_COLOUR
            if b.emoji[i, 1] >= 0:
                assert (min(b.emoji[i]), max(b.emoji[i])) not in split.held_pairs
    specs = D.eval_prompts(pack, split, 0, n_single=10, n_combo=5, n_pairs=3)
    assert {s["kind"] for s in specs} >= {"held_emoji_style", "held_style_colour", "held_pair"}


def test_open_caption_leaves_room_for_seeds(pack_dir):
    """The same caption must map to many pictures: what it leaves open varies."""
    pack = D.Pack.load(pack_dir)
    split = D.Split.make(pack, 0)
    sampler = D.Sampler(pack, split, 0)
    b = sampler.eval_batch([{"kind": "open", "emoji": 1, "style": "flat"}] * 8, seed=3)
    assert len({c.split(",")[0].split()[-1] for c in b.captions}) == 1
    assert "background" not in b.captions[0]
    assert len(set(b.colour.tolist())) > 1 and np.ptp(b.centre[:, 0, 0]) > 0.1
    imgs = D.Renderer(pack.sprites(32), 32)(b)
    assert imgs.shape == (8, 3, 32, 32) and imgs.min() >= -1 and imgs.max() <= 1


def test_tokenizer_loads_in_clip_format_and_never_drops_a_word(tmp_path):
    caps = ["a cat and a pizza, flat style, on a blue background", "a small grinning face in the top left, 3d render"] * 20
    train_tokenizer(caps, tmp_path, vocab_size=400)
    tok = load_tokenizer(tmp_path)
    assert type(tok).__name__ == "CLIPTokenizer"
    vocab = json.loads((tmp_path / "vocab.json").read_text())
    assert "cat</w>" in vocab and (tmp_path / "merges.txt").read_text().startswith("#version")
    for text in ["zyxwvq", "Quokka 🦘 naïve", "flat style"]:
        ids = tok(text).input_ids
        assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
        body = ids[1:-1]
        assert body and tok.unk_token_id not in body
        assert tok.decode(body).replace(" ", "") == text.lower().replace(" ", "")
    assert len(tok("flat style").input_ids) == 4         # known words are single tokens


def test_worker_prefetch_draws_the_same_batches_and_stops_cleanly(pack_dir, smoke_run):
    """The GPU path draws recipes in forked workers; it must match the in-thread path."""
    pack = D.Pack.load(pack_dir)
    sampler = D.Sampler(pack, D.Split.make(pack, 0), 0)
    tok = load_tokenizer(smoke_run / "run" / "tokenizer")
    a = Prefetch(sampler, tok, 16, 5, 100, workers=0)
    b = Prefetch(sampler, load_tokenizer(smoke_run / "run" / "tokenizer"), 16, 5, 100, workers=1)
    for _ in range(3):
        (sa, ba, ia), (sb, bb, ib) = a.get(), b.get()
        assert sa == sb and ba.captions == bb.captions and torch.equal(ia, ib)
    expected = torch.as_tensor(tok(ba.captions, padding="max_length", truncation=True,
                                   max_length=tok.model_max_length).input_ids)
    assert torch.equal(ia, expected)     # the Rust batch path tokenises exactly like the pipeline
    a.close()
    b.close()
    assert not a.t.is_alive() and not b.t.is_alive()


def test_vocabulary_names_emoji_by_cldr_label_and_required_words(pack_dir, monkeypatch):
    """The words people type: CLDR label first, datasource names, tags that name few emoji."""
    from training import vocab as V

    monkeypatch.setattr(V, "SUBGROUPS", ())
    monkeypatch.setattr(V, "PICKS", ("pizza", "dog face", "red heart", "grinning face", "rocket"))
    monkeypatch.setattr(V, "SUBJECTS", {"cat": ("cat face",), "heart": ("red heart",), "sun": ("sun with face",)})
    monkeypatch.setattr(V, "MAX_SHARED", 1)
    pack = D.Pack.load(pack_dir)
    v = V.Vocabulary.build(pack)
    label = {v.names[i][0]: i for i in v.emoji}
    # rocket has no 3d art in the fake pack, so it is not learned; santa, keycaps, flags never were
    assert set(label) == {"cat face", "pizza", "dog face", "red heart", "grinning face", "sun with face"}
    cat, heart, sun = label["cat face"], label["red heart"], label["sun with face"]
    assert v.names[cat][:2] == ["cat face", "cat"] and "kitten" in v.names[cat]
    assert "pet" not in v.names[cat]             # a tag of both cat and dog: names neither
    assert "face" not in v.names[cat]            # a stop word
    assert v.names[heart][:2] == ["red heart", "heavy black heart"] and "heart" in v.names[heart]
    assert "sun" in v.names[sun] and v.subjects == {"cat": [cat], "heart": [heart], "sun": [sun]}
    # a required subject is never held out of training
    split, names = V.learned_split(pack, 0, "common")
    held = {pack.images[i]["emoji"] for i in split.eval_images}
    assert not held & {cat, heart, sun} and names == v.names
    out = v.to_json(pack)
    assert out["subjects"] == ["cat", "heart", "sun"] and {e["label"] for e in out["emoji"]} == set(label)
    everyone = set(v.emoji)
    for seed in range(5):   # holding out half: the kept ones are never among them
        s = D.Split.make(pack, seed, held_fraction=0.5, only=everyone, keep={cat, heart})
        held = {pack.images[i]["emoji"] for i in s.eval_images}
        assert held and not held & {cat, heart} and held <= everyone
    monkeypatch.setattr(V, "PICKS", ("no such emoji",))
    with pytest.raises(ValueError, match="no such emoji"):
        V.Vocabulary.build(pack)


def test_training_commands_name_a_missing_data_pack(tmp_path):
    """The commands that read a data pack, pointed at a folder with none, say so and what to run
    (as training.train does), instead of a FileNotFoundError traceback."""
    from training import evaluate, vocab

    missing = tmp_path / "no-pack"
    for call in (lambda: evaluate.main(["--judge-only", "--data", str(missing), "--out", str(tmp_path / "ev")]),
                 lambda: vocab.main(["--data", str(missing)])):
        with pytest.raises(SystemExit, match=r"no data pack at .*no-pack: run `python -m training.data build --out"):
            call()
