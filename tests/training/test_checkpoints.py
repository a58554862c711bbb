"""Stopping and resuming: a resumed run equals one run straight through, a signal stops with a
checkpoint, and a checkpoint's weights and step always match."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from training import common as C
from training import train as T


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
                            cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True,
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


def test_a_signal_during_the_probes_cuts_them_short_and_stops_with_a_checkpoint(pack_dir, smoke_run, tmp_path,
                                                                                 monkeypatch, capfd):
    """The probes and the subject grid at a stop take minutes on the CPU. A SIGTERM that comes while
    they run (a machine shutting down, or the CPU wanted for an evaluation) ends them at once, and
    the phase stops at that step with a checkpoint; before, they ran to their end first."""
    from training import monitor
    run = tmp_path / "run"      # a finished smoke run, its UNet given a longer schedule
    shutil.copytree(smoke_run / "run", run)
    stop_at = T.Config.smoke().unet_steps + 2

    def slow_probe(self, text, unet):       # a probe as slow as the real ones at cpu8's size
        text.eval(), unet.eval()
        os.kill(os.getpid(), signal.SIGTERM)
        end = time.time() + 60
        while time.time() < end:
            time.sleep(0.05)
        return "the probe ran to its end"

    monkeypatch.setattr(monitor.ConditioningProbe, "__call__", slow_probe)
    monkeypatch.setattr(C, "_signalled", None)
    monkeypatch.setattr(C, "_said", False)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    C.stop_on_signals()
    try:
        began = time.time()
        rc = T.main(["--smoke", "--data", str(pack_dir), "--run", str(run), "--phase", "unet",
                     "--set", "unet_steps=100000", "--stop-at", str(stop_at)])
        took = time.time() - began
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
    err = capfd.readouterr().err
    assert rc == 0 and took < 40, err[-2000:]
    assert f"unet step {stop_at}: the probes: cut short by SIGTERM" in err
    assert f"unet: stopping at step {stop_at}; run again to resume" in err
    assert "the probe ran to its end" not in err and "Traceback" not in err
    assert json.loads((run / "unet.json").read_text())["step"] == stop_at


def test_monitoring_gives_the_models_their_train_modes_back_however_it_ends():
    """A probe puts the models in eval mode; one that fails (or is cut short) must not leave the
    training going on in eval mode, nor put a frozen part (eval) into train mode."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))
    model[1].eval()
    with C.monitoring("a failing probe", model):
        model.eval()
        raise ValueError("the probe's fault")
    assert model.training and model[0].training and not model[1].training


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
