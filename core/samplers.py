"""Sampler names -> diffusers schedulers, built from the model's own scheduler config."""

from __future__ import annotations

from typing import Any

from core.request import SAMPLERS

# name: (diffusers class, overrides, label shown to people and written in A1111 metadata)
_TABLE: dict[str, tuple[str, dict[str, Any], str]] = {
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True}, "DPM++ 2M Karras"),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}, "DPM++ 2M"),
    "euler": ("EulerDiscreteScheduler", {}, "Euler"),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}, "Euler a"),
    "ddim": ("DDIMScheduler", {}, "DDIM"),
    "unipc": ("UniPCMultistepScheduler", {}, "UniPC"),
}
assert tuple(_TABLE) == SAMPLERS

LABELS = {name: label for name, (_, _, label) in _TABLE.items()}
BY_LABEL = {label: name for name, label in LABELS.items()}


def make_scheduler(name: str, model_config: dict[str, Any]):
    """A fresh scheduler instance (each image keeps its own state)."""
    import diffusers

    cls_name, overrides, _ = _TABLE[name]
    config = {k: v for k, v in model_config.items() if not k.startswith("_")}
    cls = getattr(diffusers, cls_name)
    return cls.from_config(config, **overrides)
