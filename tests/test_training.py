"""The default model's training code, on the CPU, offline, in seconds.

A tiny synthetic stand-in of the four npm packages (same tarball layouts, a dozen
emoji) replaces the network; the model is the toy "smoke" size.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from training import common as C
from training import data as D
from training import model as M
from training import sources as S
from training import train as T
from training.batches import Prefetch, _encoder, _gen
from training.export import SHIPPED
from training.monitor import ConditioningProbe
from training.tokenizer import load_tokenizer, train_tokenizer



@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Training tests run on one thread, and give the others back their thread count afterwards:
    set at import, it changed the float sums of every test collected with this file (a CLI
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


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def pack_dir(fake_npm, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pack")
    S.build_pack(fake_npm, out)
    return out


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


@pytest.fixture(scope="module")
def smoke_run(pack_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("smoke")
    rc = T.main(["--smoke", "--data", str(pack_dir), "--run", str(root / "run"), "--export", str(root / "model"),
                 "--shard", "100KB"])
    assert rc == 0
    return root


def test_smoke_training_has_finite_falling_loss_and_exports_a_pipeline(smoke_run):
    from diffusers import StableDiffusionPipeline

    info = json.loads((smoke_run / "run" / "unet.json").read_text())
    assert info["step"] == T.Config.smoke().unet_steps and np.isfinite(info["loss"])
    model = smoke_run / "model"
    index = json.loads((model / "model_index.json").read_text())
    assert index["safety_checker"] == [None, None] and index["requires_safety_checker"] is False
    assert not list(model.rglob("*.bin")) and list((model / "unet").glob("*.safetensors.index.json"))  # sharded
    trained = json.loads((model / "training.json").read_text())
    assert trained["unet_step"] == info["step"] and trained["unet_seconds"] == info["seconds"] > 0
    assert trained["unet_started_from"] == [] and trained["decoder_step"] is None
    assert trained["vae_step"] == json.loads((smoke_run / "run" / "vae.json").read_text())["step"] > 0
    pipe = StableDiffusionPipeline.from_pretrained(str(model))
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a cat, flat style, on a blue background", num_inference_steps=2, guidance_scale=3.0,
               height=32, width=32, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert out.shape == (1, 32, 32, 3) and np.isfinite(out).all()


def test_vae_loss_falls(pack_dir, tmp_path):
    cfg = T.Config.smoke()
    run = T.Run(cfg, pack_dir, tmp_path, "cpu")
    vae = run.build_vae()
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    x = run.renderer(run.sampler.train_batch(0, 8))
    losses = []
    for _ in range(15):
        rec = vae(x).sample
        loss = torch.nn.functional.l1_loss(rec, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]


def test_resume_continues_exactly(pack_dir, smoke_run, tmp_path):
    """Stopping half-way and resuming gives the same weights as running straight through."""
    half = T.Config.smoke().unet_steps // 2
    args = ["--smoke", "--data", str(pack_dir), "--run", str(tmp_path / "run")]
    assert T.main(args + ["--phase", "vae"]) == 0
    for f in ("vae.safetensors", "vae.json"):   # the VAE phase is deterministic too
        assert (tmp_path / "run" / f).read_bytes() == (smoke_run / "run" / f).read_bytes()
    assert T.main(args + ["--phase", "unet", "--stop-at", str(half)]) == 0
    assert json.loads((tmp_path / "run" / "unet.json").read_text())["step"] == half
    assert T.main(args + ["--phase", "unet"]) == 0        # resumes at `half`
    from safetensors.torch import load_file
    resumed, straight = load_file(str(tmp_path / "run" / "unet.safetensors")), load_file(str(smoke_run / "run" / "unet.safetensors"))
    assert json.loads((tmp_path / "run" / "unet.json").read_text())["step"] == T.Config.smoke().unet_steps
    worst = max((resumed[k].float() - straight[k].float()).abs().max().item() for k in straight if not k.startswith("optim."))
    assert worst < 1e-5


def _train_until_signalled(pack_dir: Path, run: Path, phase: str, signum: int) -> tuple[int, int, str]:
    """`python -m training.train` on a phase scheduled far beyond the test's patience, sent `signum`
    once its first checkpoint is written: (exit code, the checkpoint's step when signalled, stderr)."""
    side = run / f"{phase}.json"
    before = json.loads(side.read_text())["step"] if side.exists() else None
    proc = subprocess.Popen([sys.executable, "-m", "training.train", "--smoke", "--data", str(pack_dir), "--run", str(run),
                             "--phase", phase, "--set", f"{phase}_steps=100000"],
                            cwd=Path(__file__).resolve().parents[1], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if side.exists() and json.loads(side.read_text())["step"] != before:
                break
            time.sleep(0.1)
        signalled_at = json.loads(side.read_text())["step"]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, signalled_at, err


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_training_with_a_checkpoint_that_resumes(pack_dir, smoke_run, tmp_path, signame):
    """A machine shutting down (SIGTERM) or Ctrl-C (SIGINT) mid-phase: the step in hand finishes, a
    checkpoint is written and the trainer exits cleanly, as when --minutes runs out, so no work since
    the last periodic checkpoint is lost (every 200 steps on the CPU: ~10 minutes)."""
    signum = getattr(signal, signame)
    rc, seen, err = _train_until_signalled(pack_dir, tmp_path / "vae-run", "vae", signum)
    assert rc == 0, err[-2000:]
    stopped = json.loads((tmp_path / "vae-run" / "vae.json").read_text())["step"]
    assert seen <= stopped < 100000 and f"vae: stopping at step {stopped}; run again to resume" in err
    assert f"{signame}: stopping after this step" in err and "Traceback" not in err

    run = tmp_path / "unet-run"     # a finished smoke run, its UNet given a longer schedule
    shutil.copytree(smoke_run / "run", run)
    rc, seen, err = _train_until_signalled(pack_dir, run, "unet", signum)
    assert rc == 0, err[-2000:]
    stopped = json.loads((run / "unet.json").read_text())["step"]
    assert seen <= stopped < 100000 and f"unet: stopping at step {stopped}; run again to resume" in err
    assert "Traceback" not in err
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(run), "--phase", "unet", "--stop-at", str(stopped + 1)]) == 0
    assert json.loads((run / "unet.json").read_text())["step"] == stopped + 1      # it resumes from there


def test_export_refuses_to_write_into_the_shipped_folder(smoke_run, pack_dir):
    run = T.Run(T.Config.smoke(), pack_dir, smoke_run / "run", "cpu")
    with pytest.raises(SystemExit, match="unevaluated weights never ship.*training.ship"):
        run.export(SHIPPED)
    assert not list(SHIPPED.rglob("*.safetensors"))


# training.evaluate as small as it goes: a judge of 20 steps, 16 prompts, 2 denoising steps.
EVAL_FAST = ["--judge-steps", "20", "--judge-batch", "16", "--judge-width", "8", "--batch", "8", "--n-single", "8",
             "--n-combo", "4", "--n-pairs", "4", "--n-diversity", "2", "--steps", "2", "--device", "cpu"]


def test_weights_reach_the_shipped_folder_only_through_an_evaluation_that_passes(smoke_run, pack_dir, tmp_path, capsys,
                                                                                 monkeypatch):
    import shutil

    from training import ship as S

    shipped = tmp_path / "default"
    shipped.mkdir()
    (shipped / "MODEL_CARD.md").write_text("the card")
    eval_dir = tmp_path / "eval"

    def ship(model):
        return S.main(["--model", str(model), "--data", str(pack_dir), "--eval-dir", str(eval_dir), "--to", str(shipped),
                       "--grid", str(tmp_path / "grid.png"), *EVAL_FAST])

    assert ship(smoke_run / "model") == 1          # the smoke architecture: refused before evaluating
    assert "trained at size 'smoke', which does not ship (the sizes that do: default, f4)" in capsys.readouterr().out
    assert not eval_dir.exists()
    # The same weights as if trained at the size the CPU and GPU recipes train (64 px through the 4x VAE)
    # past min_ship_steps. (Until 2026-12-02 ship refused every size but the 128 px "default", so no model
    # of the recipe chosen in the sixteenth session could have shipped.)
    candidate = tmp_path / "candidate"
    shutil.copytree(smoke_run / "model", candidate)
    trained = json.loads((candidate / "training.json").read_text())
    assert T.Config.cpu().size == T.Config.gpu().size == "f4"
    trained["config"].update(size="f4", min_ship_steps=T.Config.smoke().unet_steps)
    (candidate / "training.json").write_text(json.dumps(trained))

    # 1. The first-ship bar: an 8-step model is far below it. Nothing is written.
    assert ship(candidate) == 1
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["generated"]["all"]["top5"] < S.FIRST_SHIP["top5"] and metrics["prompts"] == 16
    assert metrics["weights_sha256"] == S.weights_sha256(candidate) and metrics["judge"].startswith("judge2-")
    assert metrics["unet_step"] == T.Config.smoke().unet_steps
    assert [p.name for p in shipped.iterdir()] == ["MODEL_CARD.md"]

    # 2. A bar it meets: the export's files are copied, the card stays, the metrics go beside, the grid is drawn.
    monkeypatch.setattr(S, "FIRST_SHIP", {k: 0.0 for k in S.FIRST_SHIP})
    assert ship(candidate) == 0
    assert torch.get_num_threads() == 1            # the in-process grid kept the caller's threads
    assert (shipped / "MODEL_CARD.md").read_text() == "the card"
    assert S.weights_sha256(shipped) == S.weights_sha256(candidate)
    assert json.loads((shipped / "metrics.json").read_text())["weights_sha256"] == S.weights_sha256(candidate)
    assert Image.open(tmp_path / "grid.png").size[1] > 20 * 32

    # 3. With a model shipped, the same model again does not beat it.
    assert ship(candidate) == 1
    assert json.loads((shipped / "metrics.json").read_text())["weights_sha256"] == S.weights_sha256(candidate)


def test_a_model_can_be_judged_by_the_judge_trained_at_another_size(smoke_run, pack_dir, tmp_path):
    # --judge-px: a 64 px model scored by the 128 px judge (every judge reads at 64x64), so models
    # of both sizes are compared by one judge; the metrics name the judge that scored them
    from training import evaluate as E

    out = tmp_path / "eval"
    assert E.main(["--model", str(smoke_run / "model"), "--data", str(pack_dir), "--out", str(out), "--judge-px", "48",
                   *EVAL_FAST]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert "-48px-" in metrics["judge"] and (out / metrics["judge"]).exists()
    assert [p.name for p in out.glob("judge2-*")] == [metrics["judge"]]   # no judge at the model's own 32 px
    assert metrics["real"]["all"]["n"] == 16
    for who in ("generated", "real"):   # asked -> judged style: every prompt once, its diagonal the style score
        table = metrics["style_confusion"][who]
        assert list(table) == list(D.STYLES) and sum(sum(r.values()) for r in table.values()) == 16
        assert sum(table[s][s] for s in D.STYLES) / 16 == pytest.approx(metrics[who]["all"]["style"], abs=1e-4)
    # a model trained with judge_px set is judged by that judge without being told
    model = tmp_path / "model"
    shutil.copytree(smoke_run / "model", model)
    trained = json.loads((model / "training.json").read_text())
    trained["config"]["judge_px"] = 48
    (model / "training.json").write_text(json.dumps(trained))
    assert E.main(["--model", str(model), "--data", str(pack_dir), "--out", str(out), *EVAL_FAST]) == 0
    assert json.loads((out / "metrics.json").read_text())["judge"] == metrics["judge"]
    assert len(list(out.glob("judge2-*"))) == 1


def test_the_ship_verdict_wants_the_bar_first_then_a_better_model_on_the_same_evaluation():
    from training.ship import verdict

    def metrics(top5, style, colour, prompts=850, judge="judge2-a"):
        return {"prompts": prompts, "steps": 20, "guidance": 7.0, "judge": judge,
                "generated": {"all": {"top5": top5, "style": style, "colour": colour}}}

    assert verdict(metrics(0.61, 0.86, 0.85), None) == []
    assert verdict(metrics(0.59, 0.90, 0.84), None) == ["top5 0.590 is below the first-ship bar 0.60",
                                                        "colour 0.840 is below the first-ship bar 0.85"]
    shipped = metrics(0.65, 0.88, 0.90)
    assert verdict(metrics(0.70, 0.88, 0.90), shipped) == []
    assert verdict(metrics(0.70, 0.87, 0.95), shipped) == ["style 0.870 is below the shipped model's 0.880"]
    assert verdict(metrics(0.65, 0.88, 0.90), shipped) == ["no better than the shipped model on any of top5, style, colour"]
    assert "judge: 'judge2-b' here, 'judge2-a' shipped" in verdict(metrics(0.9, 0.9, 0.9, judge="judge2-b"), shipped)[0]


def test_the_f4_size_draws_64_px_through_the_default_models_latent_grid():
    # size "f4": 64 px pictures, a VAE that downsamples 4x, so the UNet (and its cost a step) is
    # the default's exactly: 16x16x4 latents
    f4, default = M.SIZES["f4"], M.SIZES["default"]
    assert M.unet_config(f4) == M.unet_config(default)
    with torch.no_grad():
        z = M.build_vae(f4).encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 16, 16)


def test_v_pair_is_the_schedulers_v_prediction_pair():
    # One helper makes (noisy latent, v target) for training, the probes and the bench: check it
    # against diffusers' own add_noise / get_velocity, and the two ends of the schedule.
    sched = M.scheduler()
    g = torch.Generator().manual_seed(0)
    z, noise = torch.randn(5, 4, 3, 3, generator=g), torch.randn(5, 4, 3, 3, generator=g)
    t = torch.tensor([0, 250, 500, 750, 999])
    noisy, v = M.v_pair(z, noise, t, sched.alphas_cumprod)
    assert torch.allclose(noisy, sched.add_noise(z, noise, t), atol=1e-6)
    assert torch.allclose(v, sched.get_velocity(z, noise, t), atol=1e-6)
    # zero terminal SNR: the last step is pure noise and its target is -z
    assert torch.allclose(noisy[4], noise[4], atol=1e-6) and torch.allclose(v[4], -z[4], atol=1e-6)


def test_checkpoint_round_trip_keeps_optimizer_state(tmp_path):
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    C.save_checkpoint(tmp_path / "c.safetensors", C.prefixed("m", m), opt, {"step": 1})
    m2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.AdamW(m2.parameters(), lr=0.1)
    flat, info = C.load_checkpoint(tmp_path / "c.safetensors", opt2)
    m2.load_state_dict(C.unprefixed("m", flat))
    assert info["step"] == 1 and torch.equal(m.weight, m2.weight)
    assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])


def test_a_kill_between_weights_and_sidecar_still_resumes_a_matching_pair(tmp_path, monkeypatch):
    """A run killed while it writes a checkpoint (SIGKILL, a machine going away) must resume from
    weights, optimizer moments and step that belong together: weights of step 2 read as step 1 would
    replay the batches since step 1 onto weights that have already seen them."""
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=0.1)
    path = tmp_path / "c.safetensors"
    C.save_checkpoint(path, C.prefixed("m", m), opt, {"step": 1})
    m(torch.randn(4, 3)).sum().backward()
    opt.step()
    real_replace = os.replace

    def killed_after_the_weights(src, dst):
        real_replace(src, dst)
        if str(dst).endswith(".safetensors"):
            raise KeyboardInterrupt("killed")      # the process dies before the sidecar is replaced

    monkeypatch.setattr(C.os, "replace", killed_after_the_weights)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(path, C.prefixed("m", m), opt, {"step": 2})
    monkeypatch.setattr(C.os, "replace", real_replace)
    flat, info = C.load_checkpoint(path, torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=0.1))
    assert info["step"] == 2 and torch.equal(C.unprefixed("m", flat)["weight"], m.weight.detach())
    assert C.checkpoint_info(path)["step"] == 2 and C.checkpoint_info(tmp_path / "none.safetensors") is None


def test_a_checkpoint_written_before_its_step_moved_into_the_weights_file_still_loads(tmp_path):
    """Run folders from before (weights file without metadata, step in the sidecar only) resume."""
    from safetensors.torch import save_file
    save_file({"m.weight": torch.ones(2, 3)}, str(tmp_path / "c.safetensors"))
    (tmp_path / "c.json").write_text(json.dumps({"step": 7, "optimizer": None}))
    flat, info = C.load_checkpoint(tmp_path / "c.safetensors")
    assert info["step"] == 7 and torch.equal(flat["m.weight"], torch.ones(2, 3))


def test_the_export_loads_with_the_scheduler_it_ships(smoke_run):
    """from_pretrained builds the scheduler class model_index.json names, whatever scheduler/ holds:
    the export named DDPMScheduler over a DDIM config, so diffusers users, training.evaluate and
    Statuary (whose default sampler follows the folder's scheduler) all drew with ancestral DDPM
    or DPM++ 2M instead of the DDIM the card promises."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    from core.loader import load_model

    folder = smoke_run / "model"
    index = json.loads((folder / "model_index.json").read_text())
    saved = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert index["scheduler"] == ["diffusers", saved["_class_name"]] == ["diffusers", "DDIMScheduler"]
    assert type(StableDiffusionPipeline.from_pretrained(str(folder)).scheduler) is DDIMScheduler
    limits = load_model(str(folder), device="cpu").limits
    assert limits.default_sampler == "ddim" and not any("karras" in s for s in limits.samplers)


def test_img2img_and_inpainting_run_through_ordinary_sd_modes(smoke_run):
    from diffusers import StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline, StableDiffusionPipeline

    base = StableDiffusionPipeline.from_pretrained(str(smoke_run / "model"))
    init = Image.new("RGB", (32, 32), (40, 90, 220))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (8, 8, 24, 24))
    kw = dict(prompt="a cat", num_inference_steps=2, guidance_scale=3.0, output_type="np",
              generator=torch.Generator().manual_seed(0))
    i2i = StableDiffusionImg2ImgPipeline.from_pipe(base)(image=init, strength=0.6, **kw).images
    inp = StableDiffusionInpaintPipeline.from_pipe(base)(image=init, mask_image=mask, height=32, width=32, **kw).images
    assert i2i.shape == inp.shape == (1, 32, 32, 3) and np.isfinite(i2i).all() and np.isfinite(inp).all()


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


def test_denoiser_loss_falls_on_a_fixed_batch(pack_dir, tmp_path):
    """Text encoder + UNet learn (v-prediction on one fixed batch), so gradients reach both."""
    run = T.Run(T.Config.smoke(), pack_dir, tmp_path, "cpu")
    tok = run.tokenizer()
    text, unet = run.build_denoiser(tok)
    g = torch.Generator().manual_seed(0)
    z, noise = torch.randn(8, 4, 16, 16, generator=g), torch.randn(8, 4, 16, 16, generator=g)
    t = torch.randint(0, 1000, (8,), generator=g)
    acp = M.scheduler().alphas_cumprod
    a, s = acp[t].sqrt()[:, None, None, None], (1 - acp[t]).sqrt()[:, None, None, None]
    ids = torch.as_tensor(tok(run.sampler.train_batch(0, 8).captions, padding="max_length",
                              max_length=tok.model_max_length, truncation=True).input_ids)
    opt = torch.optim.AdamW(list(text.parameters()) + list(unet.parameters()), lr=2e-3)
    losses = []
    for _ in range(25):
        pred = unet(a * z + s * noise, t, encoder_hidden_states=text(ids)[0]).sample
        loss = torch.nn.functional.mse_loss(pred, a * noise - s * z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.6 * losses[0]
    assert text.get_input_embeddings().weight.grad is not None


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


def test_pool_recipe_trains_resumes_exactly_and_probes(pack_dir, tmp_path, capsys):
    """The CPU recipe's levers: latent pool, timesteps leaning to high noise, the text
    encoder's own rate, 64 px-style training at another size than the model's."""
    from PIL import Image
    from safetensors.torch import load_file

    levers = ["--set", "pool=48", "--set", "t_exponent=0.5", "--set", "text_lr=3e-3", "--set", "unet_px=16",
              "--set", "canonical=0.5", "--set", "probe_every=3", "--set", "t_uniform_from=6"]   # halves resume at 4
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    base = ["--smoke", "--data", str(pack_dir)] + levers
    assert T.main(base + ["--run", str(straight)]) == 0
    log = capsys.readouterr().err
    # the VAE's round trip at its own size and at the UNet's: 12 pictures over their reconstructions, x2
    assert "round trip of 12 training pictures: 16 px L1" in log and "32 px L1" in log
    for px in (16, 32):
        assert Image.open(straight / f"vae_round_trip-{px}.png").size == (12 * px * 2, 2 * px * 2)
    gain = [line for line in log.splitlines() if "caption gain" in line]
    assert gain and "t=400" in gain[-1] and "t=800" in gain[-1]      # logged with the probe, from the pool
    assert "t = 999 u^0.5 (u^1 from step 6)" in log
    assert len(gain) == 3                                             # every probe_every = 3 steps (3, 6) and the last
    words = [line for line in log.splitlines() if "word gain" in line]
    assert words and "subject" in words[-1] and "style" in words[-1] and words[-1].count("%") == 6
    chunks = sorted((straight / "pool-16").glob("chunk-*.safetensors"))
    assert len(chunks) == 1
    pool = load_file(str(chunks[0]))
    assert pool["latents"].shape == (48, 4, 8, 8) and pool["ids"].dtype == torch.int16   # 16 px / (2x VAE) = 8
    info = json.loads((straight / "unet.json").read_text())
    assert info["step"] == T.Config.smoke().unet_steps and info["px"] == 16 and np.isfinite(info["loss"])
    assert T.main(base + ["--run", str(halves), "--stop-at", "4"]) == 0
    assert T.main(base + ["--run", str(halves)]) == 0
    a, b = load_file(str(straight / "unet.safetensors")), load_file(str(halves / "unet.safetensors"))
    assert max((a[k].float() - b[k].float()).abs().max().item() for k in a) < 1e-5
    # a run folder keeps its identity, but its schedule may change
    with pytest.raises(SystemExit, match="different configuration"):
        T.main(base + ["--run", str(straight), "--set", "vocab=700"])
    assert T.main(base + ["--run", str(straight), "--set", "unet_steps=9"]) == 0
    assert json.loads((straight / "unet.json").read_text())["step"] == 9
    # ... and it remembers the change: a plain resume keeps the longer schedule (it used to fall
    # back to the recipe's 8 steps and say the schedule had changed)
    capsys.readouterr()
    assert T.main(base + ["--run", str(straight)]) == 0
    assert json.loads((straight / "config.json").read_text())["unet_steps"] == 9
    assert "schedule changed" not in capsys.readouterr().err

    run = T.Run(T.Config.smoke(), pack_dir, straight, "cpu", write_config=False)   # reads; the run keeps its levers
    tok = run.tokenizer()
    text, unet = run.build_denoiser(tok)
    flat, _ = C.load_checkpoint(straight / "unet.safetensors")
    text.load_state_dict(C.unprefixed("text", flat))
    unet.load_state_dict(C.unprefixed("unet", flat))
    line = ConditioningProbe(tok, "cpu", 8, 0)(text, unet)
    assert line.startswith("conditioning: text spread") and "prompt vs prompt" in line

    # The word gain's captions differ from the right one in the subject's name only, or the style's word only.
    from training.monitor import WordGain

    wg = WordGain(pool, 1.0, tok, run.learned_names(), "cpu", 0)
    decode = lambda ids: [tok.decode([int(i) for i in row], skip_special_tokens=True) for row in ids]  # noqa: E731
    right, subject, style = decode(wg.right), decode(wg.subject), decode(wg.style)
    assert len(right) == int((pool["emoji"][:, 1] < 0).sum()) >= 2
    for r, o, st in zip(right, subject, style):
        (rn, rs), (on, os_), (sn, ss) = (x.rsplit(" , ", 1) for x in (r, o, st))
        assert rs == os_ and rn != on and rn == sn and rs != ss
        assert {rs, ss} <= {"3 d style", "flat style", "cartoon style"}
    m = wg.measure(text, unet, M.scheduler().alphas_cumprod)
    assert len(m["subject"]) == len(m["style"]) == 3 and all(np.isfinite(m["subject"] + m["style"]))
    assert "(raw weights," in words[-1] and "(EMA weights," in wg(text, unet, M.scheduler().alphas_cumprod, "EMA")

    # training.compare measures checkpoints side by side (an A/B of two forks) without touching their runs.
    import shutil

    from training import compare

    fork = halves / "fork-4"
    fork.mkdir()
    for f in ("unet.safetensors", "unet.json"):
        shutil.copy(halves / f, fork / f)
    before = {p: p.read_bytes() for p in (straight / "config.json", halves / "config.json", straight / "unet.json")}
    out = tmp_path / "ab"
    assert compare.main([str(straight), str(fork / "unet.safetensors"), "--data", str(pack_dir), "--pictures", "4",
                         "--grid", "--grid-seeds", "2", "--finish", "--fresh", "--out", str(out),
                         "--json", str(out / "rows.json")]) == 0
    assert {p: p.read_bytes() for p in before} == before
    rows = json.loads((out / "rows.json").read_text())
    assert [r["step"] for r in rows] == [9, T.Config.smoke().unet_steps]
    for r in rows:
        for w in ("raw", "EMA", "EMA, fresh"):
            assert len(r[w]["subject"]) == len(r[w]["style"]) == len(r[w]["loss"]) == 3
            assert all(np.isfinite(r[w]["subject"] + r[w]["style"] + r[w]["loss"]))
        assert r["pictures"] == 4 and r["grids"] == {"5": None}        # no judge cached for the smoke runs
        for w in ("raw", "EMA"):                                        # the text encoder's separation of subjects
            assert -1 <= r[w]["text"]["nearest"] <= 1 and 0 <= r[w]["text"]["aliases"] <= 1
    assert rows[0]["raw"] != rows[1]["raw"]                             # two different checkpoints were read
    assert all(r["EMA, fresh"]["loss"] != r["EMA"]["loss"] for r in rows)  # on other pictures than the pool's
    assert sorted(p.name for p in out.glob("*.png")) == ["halves-8-finish.png", "halves-8-seeds1.png", "halves-8.png",
                                                         "straight-9-finish.png", "straight-9-seeds1.png", "straight-9.png"]
    assert (out / "straight-9.png").read_bytes() != (out / "straight-9-seeds1.png").read_bytes()   # other seeds
    # 8 single pictures at 16 px: the round trip, then finished from t = 300, 500, 700 and 999
    assert Image.open(out / "straight-9-finish.png").size == (8 * 16, 5 * 16)
    table = capsys.readouterr().out
    assert table.count("| raw |") == table.count("| EMA |") == table.count("| EMA, fresh |") == 2
    assert "subject gain" in table and "text: nearest subject / aliases" in table
    # The grid alone at several guidance scales: how a model folder's defaults.json is chosen.
    assert compare.main([str(straight), "--data", str(pack_dir), "--grid-only", "--guidance", "5", "9",
                         "--out", str(out / "g"), "--json", str(out / "g.json")]) == 0
    (row,) = json.loads((out / "g.json").read_text())
    assert row["grids"] == {"5": None, "9": None} and "raw" not in row and "EMA" not in row
    assert sorted(p.name for p in (out / "g").glob("*.png")) == ["straight-9-g5.png", "straight-9-g9.png"]
    assert (out / "g" / "straight-9-g5.png").read_bytes() != (out / "g" / "straight-9-g9.png").read_bytes()
    assert "guidance 5: no judge cached; guidance 9: no judge cached" in capsys.readouterr().out
    # A run folder without its tokenizer is refused, not given a newly trained one.
    bare = tmp_path / "bare"
    shutil.copytree(straight, bare, ignore=shutil.ignore_patterns("tokenizer"))
    with pytest.raises(SystemExit, match="no tokenizer"):
        compare.main([str(bare), "--data", str(pack_dir), "--pictures", "4"])
    assert not (bare / "tokenizer").exists()
    # ... and so is one without its latent pool (the word gain is measured on it), not given a new one.
    shutil.copytree(straight, tmp_path / "poolless", ignore=shutil.ignore_patterns("pool-*"))
    with pytest.raises(SystemExit, match="latent pool at 16 px lacks chunk 0"):
        compare.main([str(tmp_path / "poolless"), "--data", str(pack_dir), "--pictures", "4"])
    assert not list((tmp_path / "poolless").glob("pool-*"))


def test_a_schedule_fit_times_the_first_steps_and_shortens_the_schedule_once_never_lengthens_it(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(C.time, "time", lambda: clock[0])

    def steps(fit, start, total, seconds_each, first_extra=0.0):
        """Runs `fit` over a phase whose steps take seconds_each (the first ones longer); the totals it gave."""
        given = []
        for step in range(start + 1, start + 200):
            clock[0] += seconds_each + (first_extra if step - start <= C.ScheduleFit.warm else 0.0)
            new = fit(step, total)
            if new is not None:
                given.append((step, new))
        return given

    # 2 minutes at 0.1 s a step, the first 10 steps 1 s slower: 10 x 1.1 s + 40 x 0.1 s = 15 s spent by
    # step 50, timed at 0.1 s a step (the slow ones not counted); 0.9 x 120 - 15 = 93 s left, 930 more steps
    start = 300
    (when, total), = steps(C.ScheduleFit(2, start), start, 30000, 0.1, first_extra=1.0)
    assert when == start + 50 and abs(total - (start + 50 + 930)) <= 1      # (float rounding)
    # the invocation's deadline caps it the same way: an hour asked, two minutes left in the call
    (when, total), = steps(C.ScheduleFit(60, start, deadline=clock[0] + 120), start, 30000, 0.1, first_extra=1.0)
    assert when == start + 50 and abs(total - (start + 50 + 930)) <= 1
    # a faster machine than the schedule needs: the schedule stands (a fit never lengthens it)
    assert steps(C.ScheduleFit(2, 0), 0, 500, 0.01) == [(50, 500)]
    # so slow that nothing more fits: it ends at the next step, not before the steps already made
    assert steps(C.ScheduleFit(0.01, 0), 0, 30000, 1.0) == [(50, 51)]


def test_fit_shortens_the_unet_schedule_keeps_its_timestep_switch_in_proportion_and_remembers_it(
        pack_dir, tmp_path, capsys, monkeypatch):
    """`--fit unet=MINUTES` (the GPU machine's one call): the schedule becomes what the time allows, the
    switch to uniform timesteps moves with it, config.json keeps the new schedule for a resume or an
    export, and a bad --fit is one sentence."""
    monkeypatch.setattr(C.ScheduleFit, "warm", 2)
    monkeypatch.setattr(C.ScheduleFit, "measure", 3)
    run = tmp_path / "run"
    args = ["--smoke", "--data", str(pack_dir), "--run", str(run), "--set", "unet_steps=400",
            "--set", "t_uniform_from=100"]
    assert T.main(args + ["--fit", "unet=0.0001"]) == 0      # 6 ms: nothing more fits after the timed steps
    log = capsys.readouterr().err
    assert ("unet: schedule fitted to 0.0 minutes (--fit unet=0.0001, at most to the deadline): 6 steps instead of "
            "400; uniform timesteps from step 2") in log
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["unet_steps"] == 6 and cfg["t_uniform_from"] == 2
    assert json.loads((run / "unet.json").read_text())["step"] == 6
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(run)]) == 0     # a resume: already done
    assert json.loads((run / "unet.json").read_text())["step"] == 6
    assert "vae: schedule fitted" not in log                    # only the phase named was fitted
    for bad in ("unet", "unet=0", "vae=soon", "judge=3"):
        with pytest.raises(SystemExit):
            T.main(args + ["--fit", bad])
        assert "give a phase (vae or unet) and its minutes, e.g. --fit unet=5" in capsys.readouterr().err


def test_the_gpu_recipe_is_the_cpu_model_with_a_gpus_batches():
    cpu, gpu = T.Config.cpu(), T.Config.gpu()
    same = [k for k in T.Config.IDENTITY + ("unet_px", "judge_px", "pool", "t_exponent", "t_uniform_from", "unet_steps",
                                            "text_aux", "text_aux_colour", "joined_colour", "canonical")]
    assert {k: getattr(gpu, k) for k in same} == {k: getattr(cpu, k) for k in same}
    assert gpu.batch == 4 * cpu.batch and gpu.vae_batch == 4 * cpu.vae_batch and gpu.decoder_steps == 0


def test_timesteps_lean_to_high_noise_until_t_uniform_from():
    from training.unet_phase import t_exponent_at

    cfg = T.Config.cpu()
    assert cfg.t_exponent == 0.5 and cfg.t_uniform_from > 0
    assert t_exponent_at(0, cfg) == t_exponent_at(cfg.t_uniform_from - 1, cfg) == 0.5
    assert t_exponent_at(cfg.t_uniform_from, cfg) == t_exponent_at(cfg.unet_steps, cfg) == 1.0
    cfg.t_uniform_from = 0                       # off: the exponent throughout
    assert t_exponent_at(10 ** 6, cfg) == 0.5


def test_pool_large_draws_its_share_of_large_single_emoji(pack_dir, tmp_path, capsys):
    """pool_large: that share of every pool batch is drawn from the pool's large single emoji.
    The flags come from the chunks' recipes, drawn again; the captions, made with them, agree."""

    run_dir = tmp_path / "run"
    levers = ["--set", "pool=96", "--set", "unet_px=16", "--set", "pool_large=0.5"]
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(run_dir)] + levers) == 0
    assert re.search(r"pool: \d+ large single emoji, 50% of each batch", capsys.readouterr().err)

    cfg = T.Config.smoke()
    cfg.pool, cfg.unet_px, cfg.pool_large = 96, 16, 0.5
    run = T.Run(cfg, pack_dir, run_dir, "cpu", write_config=False)
    tok = run.tokenizer()
    pool = run.latent_pool(run.frozen_vae(), tok, float("inf"))
    large, single = pool["large"], pool["emoji"][:, 1] < 0
    assert large.shape == (96,) and 0 < int(large.sum()) < int(single.sum())
    assert not (large & ~single).any()
    # what the captions say agrees, where they name a size (some emoji names start with one)
    sized_names = {n for ns in run.sampler.names.values() for n in ns if n.split()[0] in D.SIZES}
    said = re.compile(r"^(?:an? )?(small|medium|large) ")
    for cap, is_large in zip(tok.batch_decode(pool["ids"].long(), skip_special_tokens=True), large.tolist()):
        m = said.match(cap)
        if m and not any(n in cap for n in sized_names) and " and " not in cap:
            assert (m.group(1) == "large") == is_large, cap

    from training.batches import PoolBatches

    batches = PoolBatches(pool, cfg, tok, "cpu")
    flagged = {tuple(z.flatten().tolist()) for z in pool["latents"][large].float()}
    for step in range(5):
        lat, _, _ = batches.get(step, None, 1.0)
        n = round(cfg.batch * 0.5)
        assert all(tuple(z.flatten().tolist()) in flagged for z in lat[:n])
    cfg.pool_large = 0.0     # without the lever the draw is what it always was
    plain = PoolBatches(pool, cfg, tok, "cpu").get(3, None, 1.0)[0]
    idx = torch.randint(0, 96, (cfg.batch,), generator=_gen(torch.device("cpu"), cfg.seed, 8, 3))
    assert torch.equal(plain, pool["latents"][idx].float())


def test_text_aux_labels_come_from_the_pool_and_the_head_resumes(pack_dir, tmp_path, capsys):
    """text_aux: the captions' encodings must name their emoji and style. The labels come with the
    pool's batches ("said_style" from the recipes drawn again, agreeing with the captions); the head
    is kept in the checkpoint, resumed from it, and its loss is logged."""
    from safetensors.torch import load_file

    from training.batches import PoolBatches

    run_dir = tmp_path / "run"
    args = ["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--set", "pool=96", "--set", "unet_px=16",
            "--set", "text_aux=0.5", "--set", "unet_steps=12"]
    assert T.main(args + ["--stop-at", "6"]) == 0
    assert "text aux: weight 0.5, head new" in capsys.readouterr().err
    head = {k for k in load_file(str(run_dir / "unet.safetensors")) if k.startswith("aux.")}
    assert head == {"aux.emoji", "aux.style"}
    # the background colour's head, turned on mid-run: the emoji and style heads resume, it starts new
    assert T.main(args + ["--set", "text_aux_colour=1", "--stop-at", "9"]) == 0
    log = capsys.readouterr().err
    assert "text aux: weight 0.5, background colour 1, head resumed (colour new)" in log
    head = {k for k in load_file(str(run_dir / "unet.safetensors")) if k.startswith("aux.")}
    assert head == {"aux.emoji", "aux.style", "aux.colour"}
    assert T.main(args) == 0     # the setting is remembered by the run folder
    log = capsys.readouterr().err
    assert "background colour 1, head resumed\n" in log + "\n" and "colour new" not in log
    assert re.search(r"unet step 12/12 loss [0-9.]+ text aux [0-9.]+ ", log)

    cfg = T.Config.smoke()
    cfg.pool, cfg.unet_px, cfg.text_aux = 96, 16, 0.5
    run = T.Run(cfg, pack_dir, run_dir, "cpu", write_config=False)
    tok = run.tokenizer()
    pool = run.latent_pool(run.frozen_vae(), tok, float("inf"))
    style_words = {w.replace(" ", "") for ws in D.STYLE_WORDS.values() for w in ws}
    caps = [c.replace(" ", "") for c in tok.batch_decode(pool["ids"].long(), skip_special_tokens=True)]
    said = [any(part in style_words for part in c.split(",")[1:]) for c in caps]
    assert said == pool["said_style"].tolist() and 0 < sum(said) < len(said)
    # the colour a caption names is the picture's background colour, and "said_colour" says when it names one
    named_colour = [next((k for k, c in enumerate(D.COLOUR_NAMES) if f"{c}background" in cap), -1) for cap in caps]
    assert [k >= 0 for k in named_colour] == pool["said_colour"].tolist() and 0 < sum(pool["said_colour"]) < len(caps)
    assert all(k == int(c) for k, c in zip(named_colour, pool["colour"]) if k >= 0)
    # and the place it names ("in the top left") is the recipe's, -1 when it names none
    named_place = [max((k for k, p in enumerate(D.POSITION_NAMES) if p.replace(" ", "") in cap), default=-1,
                       key=lambda k: len(D.POSITION_NAMES[k])) for cap in caps]
    assert named_place == pool["place"].tolist() and 0 < sum(k >= 0 for k in named_place) < len(caps)
    z, ids, labels = PoolBatches(pool, cfg, tok, "cpu").get(3, None, 1.0)
    empty = _encoder(tok)([""])[0]
    named = torch.tensor([not torch.equal(row, empty) for row in ids])
    assert torch.equal(labels["named"], named) and not labels["said_style"][~named].any()
    assert not labels["said_colour"][~named].any() and (labels["place"][~named] == -1).all()
    for k in range(len(z)):      # each row's labels are its picture's
        i = next(i for i in range(len(pool["latents"])) if torch.equal(pool["latents"][i].float(), z[k]))
        assert torch.equal(labels["emoji"][k], pool["emoji"][i].long()) and labels["style"][k] == pool["style"][i]
        assert labels["colour"][k] == pool["colour"][i] and labels["said_colour"][k] == (pool["said_colour"][i] & named[k])
        assert labels["place"][k] == (pool["place"][i] if named[k] else -1)


def _train_aux(text, aux, ids, labels, steps: int = 60) -> float:
    """Train the text encoder and the head on the aux loss alone; the last loss."""
    opt = torch.optim.AdamW(list(text.parameters()) + list(aux.parameters()), lr=3e-3)
    for _ in range(steps):
        loss = aux.loss(text(ids)[0], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def _mean_cosine(text, ids) -> float:
    """The cosine between two captions' encodings averaged over positions (what the head reads)."""
    with torch.no_grad():
        m = text(ids)[0].mean(1)
    return F.cosine_similarity(m[0], m[1], dim=0).item()


def test_joined_colour_words_the_captions_otherwise_and_keeps_the_pictures(pack_dir, smoke_run, tmp_path, capsys):
    """joined_colour: some captions join the background to the subject without a comma ("a cat on a
    blue background, flat", as people type it). The pictures and every other word are drawn as
    before, so a latent pool made without it keeps its latents and has only its captions drawn
    again; a pool whose recipes are not its own (another pack) is refused, not mislabelled."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(smoke_run / "run", tmp_path / "run", ignore=shutil.ignore_patterns("pool-*", "unet*"))
    cfg = T.Config.smoke()
    cfg.pool, cfg.unet_px, cfg.text_aux = 96, 16, 1.0     # text_aux: the pool carries its labels
    run = T.Run(cfg, pack_dir, tmp_path / "run", "cpu")
    plain = run.pool_sampler().train_batch(7, 64)
    run.cfg.joined_colour = 1.0
    joined = run.pool_sampler().train_batch(7, 64)
    for field in ("image", "scale", "centre", "angle", "background", "emoji", "style", "colour", "said_colour"):
        assert np.array_equal(getattr(plain, field), getattr(joined, field)), field
    pairs = list(zip(plain.captions, joined.captions))
    changed = [(p, j) for p, j in pairs if p != j]
    assert len(changed) == int(plain.said_colour.sum()) > 0      # every caption naming the colour, and only those
    for p, j in changed:
        colour = D.COLOUR_NAMES[joined.colour[joined.captions.index(j)]]
        phrase = f"on {'an' if colour[0] in 'aeiou' else 'a'} {colour} background"
        assert f", {phrase}" in p and f", {phrase}" not in j and f" {phrase}" in j.split(", ")[0]
        assert sorted(p.replace(f", {phrase}", "").split(", ")) == sorted(j.replace(f" {phrase}", "").split(", "))

    run.cfg.joined_colour = 0.0
    tok = run.tokenizer()
    made = run.latent_pool(run.frozen_vae(), tok, float("inf"))
    run.cfg.joined_colour = 0.5
    again = run.latent_pool(run.frozen_vae(), tok, float("inf"))
    assert "captions drawn again, 50% of those naming the background joined" in capsys.readouterr().err
    assert torch.equal(again["latents"], made["latents"]) and torch.equal(again["emoji"], made["emoji"])
    differ = (again["ids"] != made["ids"]).any(1)
    assert 0 < int(differ.sum()) < int(made["said_colour"].sum())
    run.cfg.joined_colour = 0.0                                      # without it: the stored captions, as made
    assert torch.equal(run.latent_pool(run.frozen_vae(), tok, float("inf"))["ids"], made["ids"])
    chunk = tmp_path / "run" / "pool-16" / "chunk-00000.safetensors"
    tensors = load_file(str(chunk))
    tensors["emoji"] = tensors["emoji"].roll(1, 0)
    save_file(tensors, str(chunk))
    run.cfg.joined_colour = 0.5
    with pytest.raises(SystemExit, match="captions cannot be drawn again"):
        run.latent_pool(run.frozen_vae(), tok, float("inf"))


def test_text_aux_pulls_two_subjects_apart():
    """Two captions that differ in one token start almost the same encoding; the head's loss,
    trained into the text encoder alone, makes them two."""
    from training.text_aux import TextAux

    torch.manual_seed(0)
    text = M.build_text_encoder(M.SIZES["smoke"], 40, 1, 2, 0)
    aux = TextAux(text.config.hidden_size, 2)
    ids = torch.tensor([[1, 5, 7, 9, 2, 0, 0, 0], [1, 6, 7, 9, 2, 0, 0, 0]])
    labels = {"emoji": torch.tensor([[0, -1], [1, -1]]), "style": torch.tensor([0, 2]),
              "named": torch.tensor([True, True]), "said_style": torch.tensor([True, False])}

    before, first = _mean_cosine(text, ids), aux.loss(text(ids)[0], labels).item()
    loss = _train_aux(text, aux, ids, labels)
    assert before > 0.9 and _mean_cosine(text, ids) < before - 0.3
    assert loss < first / 2
    # a pair's target is half on each emoji; an empty caption (not named) adds nothing
    pair = dict(labels, emoji=torch.tensor([[0, 1], [1, -1]]), named=torch.tensor([True, False]))
    le, _ = aux.logits(text(ids)[0])
    want = -(F.log_softmax(le[0], 0) * 0.5).sum() + F.cross_entropy(aux.logits(text(ids)[0])[1][:1], torch.tensor([0]))
    assert torch.allclose(aux.loss(text(ids)[0], pair), want, atol=1e-5)


@pytest.mark.parametrize("head", ["colour", "place"])
def test_text_aux_names_the_background_colour_and_the_place(head):
    """Two captions that differ only in their colour word (or place words) start almost the same
    encoding; with that head (text_aux_colour, text_aux_place), the aux loss makes them two.
    Without it, nothing in the loss tells them apart: it is left to the UNet's loss alone."""
    from training.text_aux import TextAux

    ids = torch.tensor([[1, 5, 7, 9, 2, 0, 0, 0], [1, 5, 7, 8, 2, 0, 0, 0]])   # the same subject, another word
    labels = {"emoji": torch.tensor([[0, -1], [0, -1]]), "style": torch.tensor([0, 0]),
              "named": torch.tensor([True, True]), "said_style": torch.tensor([False, False]),
              "colour": torch.tensor([3, 7]), "said_colour": torch.tensor([True, True]), "place": torch.tensor([0, 3])}

    def trained(weight: float) -> float:
        torch.manual_seed(0)
        text = M.build_text_encoder(M.SIZES["smoke"], 40, 1, 2, 0)
        _train_aux(text, TextAux(text.config.hidden_size, 2, **{head: weight}), ids, labels)
        return _mean_cosine(text, ids)

    plain, named = trained(0.0), trained(1.0)
    assert plain > 0.9 and named < plain - 0.3
    # a caption that does not name its colour (its place) adds no such term
    aux = TextAux(8, 2, **{head: 1.0})
    h = torch.randn(2, 8, 8)
    quiet = dict(labels, said_colour=torch.tensor([False, False]), place=torch.tensor([-1, -1]))
    assert torch.allclose(aux.loss(h, quiet), TextAux(8, 2).loss(h, quiet))
    assert aux.loss(h, labels) > aux.loss(h, quiet)


def test_background_colour_probe_reads_the_colours_it_asked_for(monkeypatch):
    """The probe asks for every colour in turn and scores with the evaluation's border measure:
    pictures painted the asked colour all count, pictures all painted red count only the reds."""
    from training import monitor

    seen = {}

    def painted(colour_of):
        def draw(text, unet, vae, tok, prompts, px, factor, seed0, guidance):
            seen["prompts"] = prompts
            out = np.zeros((len(prompts), px, px, 3), np.float32)
            for k, p in enumerate(prompts):
                out[k] = np.array(D.COLOURS[colour_of(p)], np.float32) / 255
                out[k, px // 4: -px // 4, px // 4: -px // 4] = 0.5    # a grey subject in the middle
            return out
        return draw

    monkeypatch.setattr(monitor, "_draw", painted(lambda p: p.split(" ")[-2]))
    found = monitor.background_colour(None, None, None, None, 16, 4, per_colour=2)
    assert found["pictures"] == 22 and found["right"] == 22 and found["got"] == found["asked"]
    assert [p.split(" ")[-2] for p in seen["prompts"]] == found["asked"]
    assert set(found["asked"]) == set(D.COLOUR_NAMES) and "an orange background" in " ".join(seen["prompts"])
    monkeypatch.setattr(monitor, "_draw", painted(lambda p: "red"))
    found = monitor.background_colour(None, None, None, None, 16, 4, per_colour=2)
    assert found["right"] == 2 and monitor.background_line(found).startswith(
        "background colour asked in 22 pictures, drawn right 2 (9%")


def test_placement_probe_finds_the_subject_in_the_asked_corner(monkeypatch):
    """Small subjects painted in the corner each prompt asks for all count; painted all in the
    bottom right, only the bottom-right asks count; a picture with nothing on it counts for none."""
    from training import monitor

    def painted(corner_of):
        def draw(text, unet, vae, tok, prompts, px, factor, seed0, guidance):
            out = np.full((len(prompts), px, px, 3), 0.2, np.float32)     # a dark background
            for k, p in enumerate(prompts):
                where = corner_of(p)
                if where is None:
                    continue
                x, y = D.POSITIONS[where]
                r, c = (px // 8 if y < 0 else px - px // 4), (px // 8 if x < 0 else px - px // 4)
                out[k, r: r + px // 8, c: c + px // 8] = (1.0, 0.9, 0.1)   # a small yellow subject
            return out
        return draw

    asked = lambda p: next(c for c in monitor.PLACE_CORNERS if c in p)  # noqa: E731
    monkeypatch.setattr(monitor, "_draw", painted(asked))
    assert monitor.placement(None, None, None, None, 32, 4, per_corner=3) == {"right": 12, "pictures": 12}
    monkeypatch.setattr(monitor, "_draw", painted(lambda p: "in the bottom right"))
    found = monitor.placement(None, None, None, None, 32, 4, per_corner=3)
    assert found == {"right": 3, "pictures": 12}
    assert monitor.placement_line(found).endswith("quarter 3 (25%; chance 25%)")
    monkeypatch.setattr(monitor, "_draw", painted(lambda p: None))
    assert monitor.placement(None, None, None, None, 32, 4, per_corner=3)["right"] == 0


def test_sample_grid_draws_the_required_subjects(smoke_run, pack_dir):
    from training.monitor import SAMPLE_SUBJECTS, sample_grid

    run = T.Run(T.Config.smoke(), pack_dir, smoke_run / "run", "cpu")
    tok = run.tokenizer()
    text, unet = run.build_denoiser(tok)
    pictures = sample_grid(text, unet, run.frozen_vae(), tok, 16, 2, smoke_run, step=8)
    assert pictures.shape == (120, 3, 16, 16) and -1 <= pictures.min() <= pictures.max() <= 1
    from PIL import Image
    im = Image.open(smoke_run / "samples.png")
    assert len(SAMPLE_SUBJECTS) == 40 and im.size == (5 * (3 * 16 + 8), 8 * 16)
    assert (smoke_run / "samples.txt").read_text().splitlines()[1:] == list(SAMPLE_SUBJECTS)
    kept = smoke_run / "samples" / "step-000008.png"   # each step's grid is kept beside the latest
    assert kept.read_bytes() == (smoke_run / "samples.png").read_bytes()


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


def test_decoder_fine_tuning_keeps_the_latent_space(smoke_run, pack_dir, tmp_path, capsys):
    """The decoder phase sharpens pictures without moving the latents the pool and UNet use."""
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run / "run", run_dir)
    before = T.Run(T.Config.smoke(), pack_dir, run_dir, "cpu").frozen_vae()
    args = ["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--set", "decoder_steps=6"]
    assert T.main(args + ["--phase", "decoder", "--stop-at", "3"]) == 0
    assert T.main(args + ["--phase", "decoder"]) == 0                  # resumes at 3
    assert json.loads((run_dir / "decoder.json").read_text())["step"] == 6
    assert "decoder step 6: round trip of plain backgrounds" in capsys.readouterr().err
    after = T.Run(T.Config.smoke(), pack_dir, run_dir, "cpu").frozen_vae()
    b, a = before.state_dict(), after.state_dict()
    assert all(torch.equal(b[k], a[k]) for k in b if not k.startswith(("decoder.", "post_quant_conv.")))
    assert any(not torch.equal(b[k], a[k]) for k in b if k.startswith("decoder."))
    # the VAE phase never trains again once the UNet phase has begun (it would spoil pool and UNet)
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--phase", "vae",
                   "--set", "vae_steps=20"]) == 0
    assert json.loads((run_dir / "vae.json").read_text())["step"] == T.Config.smoke().vae_steps


def test_the_adversarial_decoder_phase_trains_a_discriminator_resumes_it_and_keeps_the_latents(
        smoke_run, pack_dir, tmp_path, capsys, monkeypatch):
    import shutil

    from training import vae_phase

    monkeypatch.setattr(vae_phase, "GAN_WARMUP", 2)
    run_dir = tmp_path / "run"
    shutil.copytree(smoke_run / "run", run_dir)
    before = T.Run(T.Config.smoke(), pack_dir, run_dir, "cpu").frozen_vae().state_dict()
    args = ["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--set", "decoder_steps=6", "--set", "decoder_gan=0.5",
            "--set", "ckpt_every=3"]
    assert T.main(args + ["--phase", "decoder", "--stop-at", "3"]) == 0
    assert json.loads((run_dir / "decoder_disc.json").read_text())["step"] == 3
    assert T.main(args + ["--phase", "decoder"]) == 0
    err = capsys.readouterr().err
    assert "discriminator resumed at its step 3" in err
    assert json.loads((run_dir / "decoder_disc.json").read_text())["step"] == 6
    weights = [float(w) for w in re.findall(r"adversarial weight ([0-9.]+)", err)]
    assert weights and weights[-1] > 0        # past its warm-up the discriminator's verdict reaches the decoder
    after = T.Run(T.Config.smoke(), pack_dir, run_dir, "cpu").frozen_vae().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith(("decoder.", "post_quant_conv.")))
    out = tmp_path / "export"
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--phase", "none", "--export", str(out)]) == 0
    shipped = " ".join(p.read_text(errors="ignore")[:4000] for p in out.rglob("*.json"))
    assert "disc" not in shipped and not list(out.rglob("*disc*"))     # the discriminator never ships


def test_the_discriminator_learns_to_tell_sharp_from_smudged_and_its_weight_balances_the_gradients():
    from training.discriminator import PatchDiscriminator, adaptive_weight, discriminator_loss, generator_loss

    torch.manual_seed(0)
    d = PatchDiscriminator(8)
    opt = torch.optim.AdamW(d.parameters(), 2e-3, betas=(0.5, 0.9))
    sharp = (torch.rand(16, 3, 32, 32) > 0.5).float() * 2 - 1
    smudged = torch.nn.functional.avg_pool2d(sharp, 5, 1, 2)
    losses = []
    for _ in range(60):
        loss = discriminator_loss(d(sharp), d(smudged))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0] and (d(sharp).mean() > d(smudged).mean())
    # the weight makes the adversarial gradient at the last layer as large as the reconstruction's, x scale
    last = torch.nn.Parameter(torch.randn(3, 3, 3, 3))
    x = torch.randn(4, 3, 32, 32)
    rec = torch.nn.functional.conv2d(x, last, padding=1)
    rec_loss, g_loss = (rec - sharp[:4]).abs().mean(), generator_loss(d(rec))
    w = adaptive_weight(rec_loss, g_loss, last, 0.5)
    g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
    g_gan = torch.autograd.grad(w * g_loss, last)[0]
    assert abs(g_gan.norm() / g_rec.norm() - 0.5) < 1e-3


def test_corner_error_finds_a_speck_the_decoder_draws():
    """monitor.corner_error: a decoder that draws a speck in every picture's top right is told
    apart from the other corners and the centre; a faithful one reads 0 everywhere."""
    from types import SimpleNamespace

    from training.monitor import corner_error

    class Decoder:
        def __init__(self, speck):
            self.speck = speck

        def encode(self, x):
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=x))

        def decode(self, z):
            y = z.clone()
            if self.speck:
                y[:, :, 1:3, -3:-1] += 0.8
            return SimpleNamespace(sample=y)

    colours = [(255, 0, 0), (20, 40, 60)]
    assert set(corner_error(Decoder(False), 64, colours).values()) == {0.0}
    err = corner_error(Decoder(True), 64, colours)
    assert err["top right"] == pytest.approx(0.8 * 4 / 16) and err["centre"] == 0.0
    assert err["top left"] == err["bottom left"] == err["bottom right"] == 0.0


def test_a_unet_phase_can_start_from_another_runs_unet(pack_dir, smoke_run, tmp_path, capsys):
    """--init-unet: a new run (e.g. at 128 px, after more VAE training) starts its UNet and text
    encoder from another run's checkpoint, at step 0, only with the same tokenizer."""
    import shutil

    from safetensors.torch import load_file

    src, new = smoke_run / "run", tmp_path / "new"
    new.mkdir()
    for f in ("vae.safetensors", "vae.json"):
        shutil.copy(src / f, new / f)
    args = ["--smoke", "--data", str(pack_dir), "--phase", "unet", "--init-unet", str(src), "--stop-at", "1"]
    assert T.main(args + ["--run", str(new)]) == 0
    assert "unet: starting from" in capsys.readouterr().err
    assert (new / "tokenizer" / "vocab.json").read_bytes() == (src / "tokenizer" / "vocab.json").read_bytes()
    info, src_info = json.loads((new / "unet.json").read_text()), json.loads((src / "unet.json").read_text())
    assert info["step"] == 1
    # where the weights came from is carried in the checkpoint, for training.json and the card
    assert info["lineage"] == [{"run": "run", "step": src_info["step"], "px": src_info["px"],
                                "seconds": src_info["seconds"]}]
    assert src_info["seconds"] > 0 and info["seconds"] > 0
    a, b = load_file(str(src / "unet.safetensors")), load_file(str(new / "unet.safetensors"))
    run = T.Run(T.Config.smoke(), pack_dir, new, "cpu")
    fresh = {f"unet.{k}": v for k, v in run.build_denoiser(run.tokenizer())[1].state_dict().items()}

    def dist(x):
        return sum((x[k].float() - a[k].float()).norm().item() for k in fresh)

    assert dist(b) < 0.2 * dist(fresh)           # one step away from the source, far from a new UNet
    for k in a:                                  # and the EMA starts from the source's EMA
        if k.startswith("ema."):
            assert (b[k] - a[k]).abs().max().item() < 0.05
    # a run whose tokenizer differs is refused: its token ids would mean other words
    other = tmp_path / "other"
    shutil.copytree(new, other)
    (other / "unet.safetensors").unlink()
    vocab = json.loads((other / "tokenizer" / "vocab.json").read_text())
    vocab["zzzz-not-a-word"] = len(vocab)
    (other / "tokenizer" / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(SystemExit, match="tokenizer differs"):
        T.main(args + ["--run", str(other)])
    with pytest.raises(SystemExit, match="no UNet checkpoint"):
        T.main(["--smoke", "--data", str(pack_dir), "--phase", "unet", "--init-unet", str(tmp_path / "nowhere"),
                "--run", str(tmp_path / "third")])


def test_pooled_text_reaches_the_export_and_statuary_draws_with_it(pack_dir, smoke_run, tmp_path):
    """`pooled_text`: the UNet also hears the caption through its timestep embedding
    (diffusers' addition_embed_type="text"). It is part of what a run folder is, it is exported
    in the UNet's config, a stock StableDiffusionPipeline and Statuary's generator load and draw
    with it, and the prompt changes the UNet's output through that path alone."""
    import shutil

    from core.generator import Generator
    from core.loader import load_model
    from core.request import GenerationRequest

    run_dir, model = tmp_path / "run", tmp_path / "model"
    run_dir.mkdir()
    for f in ("vae.safetensors", "vae.json"):
        shutil.copy(smoke_run / "run" / f, run_dir / f)
    args = ["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--phase", "unet"]
    assert T.main(args + ["--set", "pooled_text=1", "--export", str(model)]) == 0
    config = json.loads((model / "unet" / "config.json").read_text())
    assert config["addition_embed_type"] == "text"
    with pytest.raises(SystemExit, match="pooled_text"):      # a run folder is one architecture
        T.main(args + ["--set", "pooled_text=0"])

    from diffusers import StableDiffusionPipeline      # a stock pipeline passes nothing more
    stock = StableDiffusionPipeline.from_pretrained(str(model))("a cat, flat style", num_inference_steps=2,
                                                                output_type="np").images
    assert stock.shape == (1, 32, 32, 3) and np.isfinite(stock).all()
    generator = Generator(load_model(str(model), device="cpu"))
    request = GenerationRequest("a cat, flat style", seed=3, steps=2).resolve(generator.model.limits)
    assert np.isfinite(np.asarray(generator.generate(request)[0][1], dtype=float)).all()
    unet, pipe = generator.model.unet, generator.model.pipeline
    text, tok = pipe.text_encoder, pipe.tokenizer
    with torch.no_grad():        # the pooled path alone carries the prompt: cross-attention silenced
        for name, module in unet.named_modules():
            if name.endswith("attn2.to_out.0"):
                module.weight.zero_()
                module.bias.zero_()
        ids = tok(["a cat, flat style", "pizza, 3d style, on a red background"], padding="max_length",
                  max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        h = text(ids)[0]
        x = torch.randn(1, 4, 4, 4).repeat(2, 1, 1, 1)
        v = unet(x, torch.tensor([900, 900]), encoder_hidden_states=h).sample
        unet.add_embedding.norm2.weight.zero_()           # and silenced, nothing else tells them apart
        unet.add_embedding.norm2.bias.zero_()
        w = unet(x, torch.tensor([900, 900]), encoder_hidden_states=h).sample
    assert (v[0] - v[1]).abs().mean() > 1e-3 and (w[0] - w[1]).abs().max() < 1e-6


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


def test_training_commands_name_a_missing_data_pack(tmp_path):
    """The commands that read a data pack, pointed at a folder with none, say so and what to run
    (as training.train does), instead of a FileNotFoundError traceback."""
    from training import evaluate, vocab

    missing = tmp_path / "no-pack"
    for call in (lambda: evaluate.main(["--judge-only", "--data", str(missing), "--out", str(tmp_path / "ev")]),
                 lambda: vocab.main(["--data", str(missing)])):
        with pytest.raises(SystemExit, match=r"no data pack at .*no-pack: run `python -m training.data build --out"):
            call()


def test_the_device_call_trains_exports_and_sends_back_what_the_device_tool_returns(pack_dir, tmp_path):
    """`training/device.sh train`, the GPU machine's one call, dry-run on this CPU with the toy model:
    it trains (the VAE's schedule fitted from its first steps), exports the checkpoint as it stands,
    leaves in $OUT only what the device tool sends back (at most 8 files of at most 16 MiB, plain
    names), and `unpack` here rebuilds a model folder that loads."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out, run, model = tmp_path / "out", tmp_path / "run", tmp_path / "model"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "RUN": str(run), "DATA": str(pack_dir), "PYTHON": sys.executable,
           "DEVICE_ARGS": "--device cpu --smoke", "TRAIN_ARGS": "--set vae_steps=400 --set unet_steps=12"}
    done = subprocess.run(["bash", "training/device.sh", "train", "2", "0.001"], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    back = sorted(p for p in out.rglob("*") if p.is_file())
    assert len(back) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in back)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in back)
    assert {"train.log", "run-notes.tar", "model.tar.part00"} <= {p.name for p in back}
    log = (out / "train.log").read_text()
    assert "vae: schedule fitted to 0.0 minutes" in log and "51 steps instead of 400" in log
    assert "exported step 12" in log
    done = subprocess.run(["bash", "training/device.sh", "unpack", str(out), str(model)], cwd=repo, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    trained = json.loads((model / "training.json").read_text())
    assert trained["vae_step"] == 51 and trained["unet_step"] == 12
    assert json.loads((model.with_name("model.run") / "config.json").read_text())["vae_steps"] == 51
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.from_pretrained(str(model))
    # nothing sent back, nothing to unpack: one sentence, not a tar error
    done = subprocess.run(["bash", "training/device.sh", "unpack", str(tmp_path), str(tmp_path / "m2")], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no model.tar.part*" in done.stderr


# ---- what runs on the GPU machine's one call runs there as on this CPU --------------------------
# No GPU here, and CI has none: the `meta` device stands in for "another device than the CPU's".
# A tensor built on the CPU and handed to a model there fails as it would on a GPU.


def test_the_renderer_composes_in_float32_inside_a_callers_autocast(pack_dir):
    """The pool is rendered and encoded under the trainer's bf16 autocast on a GPU; the sprites'
    sampling grid (affine_grid, a batched matmul) came out in bf16 there and put sprites up to half a
    pixel off the pictures the VAE trained on. The renderer now composes in float32 regardless."""
    pack = D.Pack.load(pack_dir)
    b = D.Sampler(pack, D.Split.make(pack, 0), 0).train_batch(3, 16)
    renderer = D.Renderer(pack.sprites(32), 32)
    plain = renderer(b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = renderer(b)
    assert inside.dtype == torch.float32 and torch.equal(inside, plain)


def test_corner_error_hands_its_plain_pictures_to_the_vae_on_the_vaes_device():
    """It built them on the CPU and gave them to a VAE on the GPU: the end of the VAE phase failed there."""
    from types import SimpleNamespace

    from training.monitor import corner_error

    seen = []

    class OnMeta(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.empty(1, device="meta"))

        def encode(self, x):
            seen.append(x.device.type)
            return SimpleNamespace(latent_dist=SimpleNamespace(mean=torch.zeros(x.shape)))

        def decode(self, z):
            return SimpleNamespace(sample=z)

    err = corner_error(OnMeta(), 16, [(255, 255, 255)])
    assert seen == ["meta"] and err["centre"] == pytest.approx(1.0)


def test_finish_from_noise_draws_on_the_models_device(smoke_run, pack_dir):
    """finish.png's pictures: the pool's latents and captions, the empty caption, the noise and the
    timesteps went to the models as CPU tensors, which a GPU's models refuse (the first subject grid of
    a GPU run would have stopped it)."""
    from training.monitor import finished_pictures

    run = T.Run(T.Config.smoke(), pack_dir, smoke_run / "run", "cpu", write_config=False)
    tok = run.tokenizer()
    text, unet = run.build_denoiser(tok)
    vae = run.frozen_vae()
    n, latent_px = 3, run.size.image_size // run.vae_factor()
    ids = _encoder(tok)(["cat, flat style"] * n)
    pool = {"emoji": torch.tensor([[0, -1]] * n, dtype=torch.int16),
            "latents": torch.zeros((n, 4, latent_px, latent_px), dtype=torch.float16),
            "ids": ids.to(torch.int16)}
    on_cpu = finished_pictures(text, unet, vae, tok, pool, 1.0, starts=(300,), n=n)
    assert on_cpu.shape == (3, 2 * run.size.image_size, n * run.size.image_size)
    for m in (text, unet, vae):
        m.to("meta")
    on_meta = finished_pictures(text, unet, vae, tok, pool, 1.0, starts=(300,), n=n)
    assert on_meta.device.type == "meta" and on_meta.shape == on_cpu.shape


def test_a_failing_monitor_is_logged_and_training_goes_on(pack_dir, tmp_path, capsys, monkeypatch):
    """Round trips, probes and grids watch a run; a fault in one must not end it (on the GPU machine's
    one call it would cost the model)."""
    from training import monitor, vae_phase

    def broken(*args, **kwargs):
        raise RuntimeError("a monitor's own fault")

    monkeypatch.setattr(vae_phase.VAEPhase, "round_trips", broken)
    monkeypatch.setattr(monitor.ConditioningProbe, "__call__", broken)
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(tmp_path / "run")]) == 0
    log = capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "unet.json").read_text())["step"] == T.Config.smoke().unet_steps
    assert "vae step 6: the round trips failed; training goes on:" in log
    assert "unet step 8: the probes failed; training goes on:" in log
    assert "RuntimeError: a monitor's own fault" in log


def test_the_grids_a_run_is_judged_by_decode_latents_as_its_export_does(smoke_run, pack_dir, tmp_path, monkeypatch):
    """The subject grid's pipeline (in training and in training.compare) decoded the UNet's latents with
    the VAE's build-time scaling factor, 1, where the export divides by the run's latent scale (cpu6's
    0.96, the toy's ~4): the grids judged during training were not the pictures the model would draw."""
    from training import compare

    seen = []

    def grid(text, unet, vae, tok, px, factor, folder, step, **kw):
        seen.append(vae.config.scaling_factor)
        Image.new("RGB", (4, 4)).save(folder / "samples.png")

    monkeypatch.setattr(compare, "sample_grid", grid)
    assert compare.main([str(smoke_run / "run"), "--data", str(pack_dir), "--grid-only", "--out", str(tmp_path)]) == 0
    scale = json.loads((smoke_run / "run" / "unet.json").read_text())["latent_scale"]
    assert scale != pytest.approx(1.0, abs=0.05) and seen == [scale]


def test_a_run_without_a_latent_pool_still_draws_its_subject_grid(pack_dir, tmp_path, capsys, monkeypatch):
    """The grid's call named the pool, which a run on fresh batches (pool 0, e.g. --recipe 128) never
    defines: the grid failed there at every checkpoint (logged by monitoring(), the run going on)."""
    from training import unet_phase

    drawn = []
    monkeypatch.setattr(unet_phase.UNetPhase, "draws_grids", property(lambda self: True))
    monkeypatch.setattr(unet_phase.UNetPhase, "sample_and_judge",
                        lambda self, *args: drawn.append((args[6], args[-1])))     # (pool, step)
    assert T.main(["--smoke", "--data", str(pack_dir), "--run", str(tmp_path / "run")]) == 0
    assert "failed" not in capsys.readouterr().err
    assert drawn == [(None, T.Config.smoke().unet_steps)]     # at the phase's end (sample_every is 1,000)
