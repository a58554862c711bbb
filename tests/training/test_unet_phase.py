"""The UNet phase's recipe: the v-prediction pair, the latent pool, the schedule fit, timestep
sampling, starting from another run's UNet, the caption in the timestep embedding."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from training import common as C
from training import data as D
from training import model as M
from training import train as T
from training.batches import _gen
from training.monitor import ConditioningProbe


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
