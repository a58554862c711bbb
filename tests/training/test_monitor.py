"""What a run is watched by while it trains: the probes and the grids it draws."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from training import data as D
from training import train as T


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
