"""The judge that scores pictures, and the ceiling the VAE puts on what a model can draw."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from PIL import Image

from training import data as D
from training import train as T


def test_the_judge_resumes_from_its_checkpoint_as_if_never_stopped(pack_dir, tmp_path):
    """The 128 px judge takes about an hour on a CPU: it keeps its progress, and a resumed judge
    is the one an uninterrupted training makes."""
    from training.evaluate import train_judge

    pack = D.Pack.load(pack_dir)
    renderer = D.Renderer(pack.sprites(16), 16, torch.device("cpu"))
    straight = train_judge(pack, renderer, 6, 4, torch.device("cpu"), 0, log=lambda m: None, width=4, stem_stride=2)
    ckpt = tmp_path / "partial-judge.safetensors"
    train_judge(pack, renderer, 6, 4, torch.device("cpu"), 0, log=lambda m: None, width=4, stem_stride=2,
                checkpoint=ckpt, every=3)
    assert json.loads(ckpt.with_suffix(".json").read_text())["step"] == 3     # kept at 3; the end is the caller's to save
    said = []
    resumed = train_judge(pack, renderer, 6, 4, torch.device("cpu"), 0, log=said.append, width=4, stem_stride=2,
                          checkpoint=ckpt, every=3)
    assert said[0].startswith("judge: resumed at step 3")
    want = straight.state_dict()
    assert all(torch.allclose(v, want[k], atol=1e-6) for k, v in resumed.state_dict().items())
    # and a judge resumed from a checkpoint differs from one trained for three steps only
    short = train_judge(pack, renderer, 3, 4, torch.device("cpu"), 0, log=lambda m: None, width=4, stem_stride=2)
    assert not all(torch.allclose(v, want[k], atol=1e-6) for k, v in short.state_dict().items())


def test_grid_judge_loads_the_cached_judge_for_its_size_and_counts_what_it_finds(tmp_path):
    from safetensors.torch import save_file

    from training.evaluate import Judge
    from training.monitor import GridJudge

    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    assert GridJudge.find(eval_dir, "common", 16, 6, [[1]]) is None       # nothing cached yet
    judges = {}
    for name, width, stride in [("judge2-common-16px-w4x2-s10-b8-seed0", 4, 2), ("judge2-common-32px-w8x2-s10-b8-seed0", 8, 2),
                                ("judge2-all-16px-w8x1-s10-b8-seed0", 8, 1)]:
        judges[name] = Judge(6, width, stride)
        save_file({k: v.contiguous() for k, v in judges[name].state_dict().items()}, str(eval_dir / f"{name}.safetensors"))
    found = GridJudge.find(eval_dir, "common", 16, 6, [[1]])
    assert found.path.name == "judge2-common-16px-w4x2-s10-b8-seed0.safetensors"
    want = judges["judge2-common-16px-w4x2-s10-b8-seed0"].state_dict()
    assert all(torch.equal(v, want[k]) for k, v in found.judge.state_dict().items())

    # Two subjects ("tree" has two emoji: 1 and 2), three styles each, in sample_grid's order.
    emoji = torch.full((6, 10), -1.0)
    emoji[0, 2] = 9                       # 3d: its second emoji first -> top 1
    emoji[1, [0, 3, 4, 5, 1]] = torch.tensor([9.0, 8, 7, 6, 5])   # flat: fifth -> top 5, not top 1
    emoji[2, [0, 3, 5, 6, 7]] = 9         # cartoon: neither emoji in the top 5
    emoji[3:, 4] = 9                      # the second subject, emoji 4, first in every style
    style = torch.zeros(6, len(D.STYLES))
    asked = [D.STYLES.index(s) for s in ("3d", "flat", "cartoon")] * 2
    for k, a in enumerate(asked):
        style[k, a if k != 4 else (a + 1) % len(D.STYLES)] = 1.0   # picture 4's style is wrong

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x):
            assert x.shape == (6, 3, 16, 16)
            return emoji, style, None

    score = GridJudge(Fixed(), [[1, 2], [4]])(torch.zeros(6, 3, 16, 16))
    assert (score["top5"], score["top1"], score["style"]) == (5, 4, 5)
    assert (score["words_in_every_style"], score["words_in_any_style"]) == (1, 2)
    assert score["found"] == [[True, True, False], [True, True, True]]
    assert GridJudge.line(score).startswith("subject grid, judged: subject in top 5 5/6 (top 1 4), style 5/6")
    with pytest.raises(ValueError, match="expected 6 pictures"):
        GridJudge(Fixed(), [[1, 2], [4]])(torch.zeros(5, 3, 16, 16))


def test_the_judge_sees_the_combinations_training_never_does(pack_dir):
    pack = D.Pack.load(pack_dir)
    split = D.Split.make(pack, 0)
    seen = {True: set(), False: set()}
    for hold_out in (True, False):
        s = D.Sampler(pack, split, 0, pair_prob=0.0, hold_out=hold_out)
        for step in range(40):
            b = s.train_batch(step, 32)
            seen[hold_out] |= {(D.STYLES[st], D.COLOUR_NAMES[c]) for st, c in zip(b.style, b.colour)}
    assert not seen[True] & D.HELD_OUT_STYLE_COLOUR
    assert seen[False] >= D.HELD_OUT_STYLE_COLOUR


def test_ceiling_scores_real_pictures_and_their_round_trips_at_each_size(smoke_run, pack_dir, tmp_path, monkeypatch):
    # training.ceiling: what the run's VAE lets a UNet draw, known before any UNet step. A perfect
    # autoencoder's round trips score exactly as the real pictures; the smoke VAE's lose something.
    from safetensors.torch import save_file

    from training import ceiling as CE
    from training.evaluate import Judge

    run = tmp_path / "run"
    shutil.copytree(smoke_run / "run", run)
    with pytest.raises(SystemExit, match="no judge for 32 px yet"):
        CE.ceiling(run, pack_dir, [32], None, n_single=6, n_combo=3, n_pairs=2)
    pack = D.Pack.load(pack_dir)
    torch.manual_seed(0)
    (run / "eval").mkdir()
    save_file({k: v.contiguous() for k, v in Judge(len(pack.emoji), 4, 2).state_dict().items()},
              str(run / "eval" / "judge2-all-32px-w4x2-s10-b8-seed0.safetensors"))
    before = sorted(p.name for p in run.iterdir())
    got = CE.ceiling(run, pack_dir, [16, 32], tmp_path / "out", n_single=6, n_combo=3, n_pairs=2)
    assert sorted(got) == [16, 32] and sorted(p.name for p in run.iterdir()) == before   # read, never written
    for px, r in got.items():
        assert r["real"]["n"] == r["round_trip"]["n"] == 11 and r["l1"] > 0.01
        assert sum(k["round_trip"]["n"] for k in r["kinds"].values()) == 11      # and kind by kind
        assert Image.open(tmp_path / "out" / f"round-trip-{px}.png").size[0] > px

    class Perfect(torch.nn.Module):      # decode(encode(x)) == x
        def encode(self, x):
            return type("E", (), {"latent_dist": type("D", (), {"mean": x})()})()

        def decode(self, z):
            return type("O", (), {"sample": z})()

    monkeypatch.setattr(T.Run, "frozen_vae", lambda self, decoder=True: Perfect())
    got = CE.ceiling(run, pack_dir, [32], None, n_single=6, n_combo=3, n_pairs=2, blur=(32, 8))[32]
    assert got["real"] == got["round_trip"] and got["l1"] == 0.0
    assert got["blurred"][32] == got["real"] and set(got["blurred"]) == {32, 8}   # down to its own size: unchanged
    # a judge trained at another size may score this model's pictures (every judge reads at 64x64),
    # asked for by size; a size with no judge is refused by name
    (run / "eval" / "judge2-all-32px-w4x2-s10-b8-seed0.safetensors").rename(run / "eval" / "judge2-all-48px-w4x2-s10-b8-seed0.safetensors")
    with pytest.raises(SystemExit, match="no judge for 32 px yet"):
        CE.ceiling(run, pack_dir, [32], None, n_single=6, n_combo=3, n_pairs=2)
    assert CE.ceiling(run, pack_dir, [32], None, n_single=6, n_combo=3, n_pairs=2, judge_px=48)[32]["real"] == got["real"]
    cfg = json.loads((run / "config.json").read_text())      # or by the run's own judge_px
    (run / "config.json").write_text(json.dumps(cfg | {"judge_px": 48}))
    assert CE.ceiling(run, pack_dir, [32], None, n_single=6, n_combo=3, n_pairs=2)[32]["real"] == got["real"]
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(CE.blurred(x, 32), x) and not torch.allclose(CE.blurred(x, 8), x)


def test_style_by_subject_splits_style_by_whether_the_subject_was_read():
    import numpy as np

    from training.evaluate import style_by_subject

    hits = {"top1": np.array([True, True, True, False, False, False]),
            "top5": np.array([True, True, True, True, False, False]),
            "style": np.array([True, True, False, True, False, True])}
    split = style_by_subject(hits)
    assert split["subject_read"] == {"n": 3, "style": round(2 / 3, 4)}
    # the fourth picture (subject in the top 5, not first) is in neither share
    assert split["subject_missed"] == {"n": 2, "style": 0.5}
    none_read = style_by_subject({k: np.zeros(3, bool) for k in ("top1", "top5", "style")})
    assert none_read["subject_read"] == {"n": 0, "style": None}
