"""What every training phase shares: checkpoints (safetensors weights, optimizer moments and step
in one file, written atomically, a JSON copy of the step beside it; nothing here ever calls
torch.load), the learning-rate schedule, the log line, and stopping cleanly on a signal."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], opt: torch.optim.Optimizer | None, info: dict) -> None:
    """Weights + optimizer moments + step etc. in one safetensors file (the step and the optimizer's
    settings in its metadata), replaced atomically and synced, so a process killed at any moment
    leaves either the old checkpoint or the new one, never weights of one step with the step of
    another. The JSON sidecar beside it is a copy of the metadata, for people and `jq`."""
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    opt_meta = None
    if opt is not None:
        sd = opt.state_dict()
        for pid, st in sd["state"].items():
            for k, v in st.items():
                flat[f"optim.{pid}.{k}"] = (v if torch.is_tensor(v) else torch.tensor(v)).detach().contiguous().cpu()
        opt_meta = {"param_groups": sd["param_groups"], "state_keys": {str(p): sorted(st) for p, st in sd["state"].items()}}
    text = json.dumps({**info, "optimizer": opt_meta}, indent=1)
    _write_atomically(path, lambda tmp: save_file(flat, str(tmp), metadata={_INFO_KEY: text}))
    _write_atomically(path.with_suffix(".json"), lambda tmp: tmp.write_text(text))


_INFO_KEY = "statuary.checkpoint"   # the safetensors metadata entry that holds a checkpoint's JSON


def _write_atomically(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())        # the data on disk before the rename makes it the checkpoint
    os.replace(tmp, path)


def checkpoint_info(path: Path) -> dict | None:
    """A checkpoint's step etc., read from its weights file's header (the sidecar for checkpoints
    written before the step moved there); None when there is no checkpoint."""
    if not path.exists():
        return None
    with safe_open(str(path), "pt") as f:
        text = (f.metadata() or {}).get(_INFO_KEY)
    if text is None:                # written before the step moved into the weights file
        text = path.with_suffix(".json").read_text()
    return json.loads(text)


def load_checkpoint(path: Path, opt: torch.optim.Optimizer | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    flat = load_file(str(path))
    info = checkpoint_info(path)
    if opt is not None and info.get("optimizer"):
        meta = info["optimizer"]
        state = {int(p): {k: flat[f"optim.{p}.{k}"] for k in keys} for p, keys in meta["state_keys"].items()}
        opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return {k: v for k, v in flat.items() if not k.startswith("optim.")}, info


def prefixed(prefix: str, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in module.state_dict().items()}


def unprefixed(prefix: str, flat: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in flat.items() if k.startswith(prefix + ".")}


def lr_at(step: int, base: float, warmup: int, total: int) -> float:
    """Linear warm-up, then cosine to 10% of base at `total`. A function of step only."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


_signalled: str | None = None      # the name of the signal that asked the phases to stop
_said = False                      # its log line written (from the loop: a handler must not print mid-write)
_watching = False                  # a `monitoring` block runs: a signal cuts it short


class StopAsked(BaseException):
    """Raised by the signal handler inside a `monitoring` block (probes, grids, round trips: minutes
    at a time on the CPU), which ends the block at once; the phase then stops at this step with a
    checkpoint. A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it."""


def stop_on_signals() -> None:
    """SIGTERM (a machine shutting down, `kill`) or SIGINT (Ctrl-C) asks the training phases to stop
    as when --minutes runs out: the step in hand finishes, a checkpoint is written and the process
    exits 0, so nothing since the last periodic checkpoint is lost; the probes and grids that take
    minutes are skipped, and cut short when the signal comes while they run. A second signal takes
    its default action and stops at once. For `python -m training.train` only: a test calling
    `main()` keeps its own handlers."""
    def ask(signum, frame):
        global _signalled, _watching
        _signalled = signal.Signals(signum).name
        signal.signal(signum, signal.SIG_DFL)
        if _watching:
            _watching = False       # once: the block's own except and finally must not be cut short too
            raise StopAsked(_signalled)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, ask)


def stop_signalled() -> bool:
    """A signal asked the phases to stop (`stop_on_signals`); the first call that sees it says so."""
    global _said
    if _signalled is not None and not _said:
        _said = True
        log(f"{_signalled}: stopping after this step with a checkpoint (again to stop at once)")
    return _signalled is not None


@contextlib.contextmanager
def monitoring(what: str, *modules: torch.nn.Module):
    """Around the probes, grids and round trips a phase draws between its steps: they watch the run
    and never stop it. A failure is logged with its traceback and training goes on (on the GPU
    machine's one call a monitor's fault must not cost the model). A stop signal ends the block at
    once (callers skip the block when `stop_signalled()` already). `modules` leave it in the
    train/eval mode they entered with, however it ends."""
    global _watching
    modes = [(sub, sub.training) for m in modules for sub in m.modules()]   # each: a frozen encoder stays eval
    _watching = True
    try:
        yield
    except StopAsked:
        stop_signalled()
        log(f"{what}: cut short by {_signalled}")
    except Exception:   # noqa: BLE001 - anything a monitor raises
        _watching = False
        log(f"{what} failed; training goes on:\n{traceback.format_exc().rstrip()}")
    finally:
        _watching = False
        for sub, mode in modes:
            sub.training = mode


class ScheduleFit:
    """Shortens a phase's schedule to end about `minutes` after its first step (or at the deadline), for a machine whose
    speed is not known beforehand (the lent GPU machine: one call of at most 10 minutes). It times
    steps `warm` to `warm + measure` of this invocation (the first few are slow on a GPU: kernel
    autotuning, the allocator), then says how many steps fit: once, never more than the schedule
    already has. Fitted early, while the learning rate still warms up, the cosine stays whole and the
    rest of the run is again a function of the step alone."""

    warm, measure = 10, 40      # steps not timed, then timed
    margin = 0.9                # of the time: checkpoints and probes the timed steps did not meet, and the phase's end

    def __init__(self, minutes: float, start: int, deadline: float = float("inf")):
        """`deadline` (the invocation's `--minutes`, a time.time()) caps the phase's time too: with
        `--fit unet=99 --minutes 8` the UNet's schedule ends where the call's time does."""
        self.t_begin, self.t_warm, self.done = time.time(), None, False
        self.seconds, self.start = min(minutes * 60, deadline - self.t_begin), start

    def __call__(self, step: int, total: int) -> int | None:
        """Call after each step with the step reached; the new total once, else None."""
        if self.done:
            return None
        if step == self.start + self.warm:
            self.t_warm = time.time()
        if self.t_warm is None or step < self.start + self.warm + self.measure:
            return None
        self.done = True
        now = time.time()
        per_step = (now - self.t_warm) / self.measure
        left = self.seconds * self.margin - (now - self.t_begin)
        return max(step + 1, min(total, step + int(left / per_step)))
