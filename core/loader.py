"""One loader for every model Statuary runs.

    load_model("default")                       the embedded model in models/default/
    load_model("/path/to/diffusers-folder")     any diffusers layout (SD 1.x / 2.x / SDXL, inpainting too)
    load_model("/path/to/model.safetensors")    a single-file SD 1.x / 2.x / SDXL checkpoint
    load_model("org/name")                      a hub id, when the machine is online

Weights load from safetensors only. Files are checked by their content, not their name: a
pickle (which can run code when loaded) renamed to .safetensors is refused before anything
reads it with torch. Every model gets a content hash (sha256 of its weight files, cached by
path, size and mtime) that is recorded with each image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import struct
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from core.model_defaults import ModelDefaults
from core.request import ModelLimits
from core.samplers import suited
from core.vocabulary import ModelVocabulary

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")


class ModelError(RuntimeError):
    """The model cannot be used; the message says why and what to do."""


class UnsafeWeights(ModelError):
    """A weight file is not safetensors (a pickle can run arbitrary code when loaded)."""


@dataclasses.dataclass
class LoadedModel:
    """The parts of a Stable Diffusion model the denoise loop needs, on one device."""

    model_id: str
    source: str
    sha256: str
    kind: str  # "sd" or "sdxl"
    pipeline: Any  # the diffusers pipeline that holds the components (for encode_prompt)
    unet: Any
    vae: Any
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    vae_dtype: torch.dtype
    vae_scale_factor: int
    limits: ModelLimits
    latent_rgb: tuple[torch.Tensor, torch.Tensor] | None = None  # (weights C x 3, bias 3) for previews
    vocabulary: ModelVocabulary | None = None  # what the folder says the model knows (the default model's words)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def inpainting_unet(self) -> bool:
        return int(self.unet.config.in_channels) == 9

    def fingerprint(self) -> dict[str, Any]:
        import diffusers
        import transformers

        import core

        if self.device.type == "cuda":
            device_name = torch.cuda.get_device_name(self.device)
        elif self.device.type == "mps":
            device_name = "Apple MPS"
        else:
            import platform

            device_name = f"cpu {platform.machine()}"
        return {
            "model_id": self.model_id,
            "model_sha256": self.sha256,
            "statuary": core.__version__,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "transformers": transformers.__version__,
            "device": device_name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "attention": "sdpa" if hasattr(torch.nn.functional, "scaled_dot_product_attention") else "math",
            "noise": "cpu torch.randn (mt19937), one generator per image",
        }


# ---- safety and hashing ---------------------------------------------------------------------


def check_safetensors(path: str | os.PathLike) -> None:
    """Refuse anything that is not a well-formed safetensors file, judged by its bytes.

    A safetensors file opens with its header's length (8 bytes, little-endian), so its first byte
    can be anything, b"\x80" (a pickle's opening) included: the file is judged as safetensors
    first, and only one that fails is named a pickle or a zip archive in the message."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(8)
        size = path.stat().st_size
        why = None
        if len(head) < 8:
            why = "it is too short"
        else:
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > min(size - 8, 100 * 2**20):
                why = "its header length is impossible"
            else:
                header = f.read(n)
                try:
                    meta = json.loads(header)
                    if not isinstance(meta, dict):
                        raise ValueError
                    ends = [int(v["data_offsets"][1]) for k, v in meta.items() if k != "__metadata__"]
                except (ValueError, TypeError, KeyError, IndexError):
                    why = "its header is not JSON naming each tensor's data_offsets"
                else:
                    needed = 8 + n + max(ends, default=0)
                    if needed > size:  # a download or copy that stopped early
                        why = f"it is truncated ({size} bytes; its header describes {needed})"
        if why and head[:2] == b"PK":
            why = "it is a zip archive (a PyTorch pickle checkpoint)"
        elif why and head[:1] == b"\x80":
            why = "it is a Python pickle"
    if why:
        raise UnsafeWeights(
            f"{path} is not a safetensors file: {why}. Statuary loads weights from safetensors only, "
            "because pickle files (.ckpt, .bin, .pt) can run code when loaded. Convert it to "
            ".safetensors with a trusted tool first.")


def _check_folder(folder: Path) -> list[Path]:
    weights = sorted(p for p in folder.rglob("*.safetensors") if p.is_file())
    for p in weights:
        check_safetensors(p)
    # A component that only has pickle weights would make diffusers refuse or fall back: say why up front.
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        pickles = [p for p in sub.iterdir() if p.suffix in PICKLE_SUFFIXES]
        if pickles and not any(p.suffix == ".safetensors" for p in sub.iterdir()):
            raise UnsafeWeights(
                f"{sub} has only pickle weights ({pickles[0].name}). Statuary loads weights from safetensors only; "
                "convert the model to safetensors first.")
    if not weights:
        raise ModelError(f"{folder} has no .safetensors weight files.")
    return weights


class HashCache:
    """sha256 of weight files, remembered by (path, size, mtime) in a small JSON file."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._data: dict[str, dict[str, Any]] = {}
        if path and path.is_file():
            try:
                self._data = json.loads(path.read_text())
            except ValueError:
                self._data = {}

    def file_sha256(self, file: Path) -> str:
        st = file.stat()
        key = str(file.resolve())
        with self._lock:
            hit = self._data.get(key)
        if hit and hit["size"] == st.st_size and hit["mtime_ns"] == st.st_mtime_ns:
            return hit["sha256"]
        h = hashlib.sha256()
        with open(file, "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
        digest = h.hexdigest()
        with self._lock:
            self._data[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
            if self.path:
                from storage.files import atomic_write  # a temporary file of its own: processes sharing
                                                        # the data folder write this cache at once
                atomic_write(self.path, json.dumps(self._data, indent=1).encode())
        return digest

    def files_sha256(self, root: Path, files: list[Path]) -> str:
        """One hash for a folder: sha256 over each file's relative path and sha256, sorted."""
        h = hashlib.sha256()
        for f in sorted(files):
            h.update(f"{f.relative_to(root).as_posix()}\0{self.file_sha256(f)}\n".encode())
        return h.hexdigest()


# ---- device and dtype ----------------------------------------------------------------------------


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"STATUARY_DEVICE={name} but this torch build sees no CUDA GPU; use cpu or auto.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ModelError(f"STATUARY_DEVICE={name} but MPS is not available here; use cpu or auto.")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise ModelError("float16 on the CPU is very slow and inexact; use float32 or bfloat16 there.")
    return dtype


# ---- loading ------------------------------------------------------------------------------------------


def _single_file_pipeline_class(path: Path):
    from diffusers import (StableDiffusionInpaintPipeline, StableDiffusionPipeline,
                           StableDiffusionXLInpaintPipeline, StableDiffusionXLPipeline)
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from safetensors import safe_open

    # infer_diffusers_model_type only asks which keys exist and a few tensors' shapes: give it
    # shapes read from the header, so a multi-GB checkpoint is not loaded twice.
    with safe_open(path, framework="pt") as f:
        shapes = {k: SimpleNamespace(shape=tuple(f.get_slice(k).get_shape())) for k in f.keys()}
    model_type = infer_diffusers_model_type(shapes)
    if model_type.startswith("xl_inpaint"):
        return StableDiffusionXLInpaintPipeline, model_type
    if model_type.startswith("xl"):
        return StableDiffusionXLPipeline, model_type
    if "inpaint" in model_type:
        return StableDiffusionInpaintPipeline, model_type
    return StableDiffusionPipeline, model_type


def require_model_folder(path: Path) -> None:
    """Raise ModelError unless `path` holds a diffusers model (the unshipped default model says so)."""
    if not (path / "model_index.json").is_file():
        raise ModelError(
            f"{path} is not a diffusers model folder (no model_index.json). "
            + ("The embedded default model has not been trained and shipped yet; set STATUARY_MODEL to a "
               "diffusers folder or a .safetensors checkpoint." if path.name == "default" else
               "Give a diffusers folder, a .safetensors file or a hub id."))


def load_model(spec: str, *, device: str = "auto", dtype: str = "auto", config: str | None = None,
               cache_dir: Path | None = None, max_side: int = 0) -> LoadedModel:
    """Load `spec` (see the module docstring). `config` is a diffusers folder that gives a
    single-file checkpoint its component configs and tokenizer when the machine is offline."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # a server's log is no place for progress bars
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    hashes = HashCache(cache_dir / "model-hashes.json" if cache_dir else None)
    path = Path(spec).expanduser()
    common = dict(dtype=dt)

    if path.is_dir():
        require_model_folder(path)
        weights = _check_folder(path)
        sha = hashes.files_sha256(path, weights)
        index = json.loads((path / "model_index.json").read_text())
        kwargs = dict(common, use_safetensors=True)
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        pipe = DiffusionPipeline.from_pretrained(path, **kwargs)
        model_id = "default" if path.resolve() == (Path(__file__).resolve().parent.parent / "models" / "default") else path.name
        source = str(path.resolve())
    elif path.is_file():
        check_safetensors(path)  # before anything else opens it
        if path.suffix != ".safetensors":
            raise UnsafeWeights(f"{path}: Statuary loads single-file checkpoints only as .safetensors.")
        sha = hashes.file_sha256(path)
        cls, model_type = _single_file_pipeline_class(path)
        kwargs = dict(common)
        if config:
            kwargs.update(config=str(config), local_files_only=True)
        try:
            pipe = cls.from_single_file(str(path), **kwargs)
        except Exception as exc:  # most often: offline, and the architecture's configs are not cached
            raise ModelError(
                f"Could not load {path.name} as a {model_type} checkpoint: {exc}. Offline, a single-file "
                "checkpoint needs its architecture's configs and tokenizer: pass a diffusers folder of the same "
                "architecture as its config (statuary --model-config FOLDER), or load it once online.") from exc
        model_id, source = path.stem, str(path.resolve())
    elif "/" in spec and not spec.startswith((".", "/")) and spec.count("/") == 1:
        from huggingface_hub import snapshot_download

        def cached() -> Path | None:
            try:
                return Path(snapshot_download(spec, local_files_only=True))
            except Exception:  # noqa: BLE001 -- not in the local cache (yet)
                return None

        folder = cached()
        if folder is not None:
            _check_folder(folder)  # a cached copy is checked before anything reads it
        try:
            # use_safetensors: only .safetensors weights are fetched and read (by the safetensors library,
            # which cannot run code), never a repository's pickle files.
            pipe = DiffusionPipeline.from_pretrained(spec, use_safetensors=True, **common)
        except Exception as exc:
            raise ModelError(f"Could not load hub model {spec!r}: {exc}. Hub ids need the machine to be online "
                             "(or the model in the local Hugging Face cache).") from exc
        folder = folder or cached()
        sha = hashes.files_sha256(folder, _check_folder(folder))
        model_id, source = spec, spec
    else:
        raise ModelError(f"Model {spec!r} not found: give a diffusers folder, a .safetensors file or a hub id (org/name).")

    return _assemble(pipe, model_id=model_id, source=source, sha=sha, device=dev, dtype=dt, max_side=max_side)


def _assemble(pipe, *, model_id: str, source: str, sha: str, device: torch.device, dtype: torch.dtype,
              max_side: int) -> LoadedModel:
    kind = "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"
    pipe.to(device)
    vae_dtype = dtype
    if dtype == torch.float16:
        # The SD 1.x/2.x/XL VAEs overflow in float16 (black or NaN images): decode in float32.
        vae_dtype = torch.float32
        pipe.vae.to(dtype=torch.float32)
    for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part, None)
        if module is not None:
            module.eval().requires_grad_(False)
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    native = int(pipe.unet.config.sample_size) * vae_scale
    samplers, default_sampler = suited(dict(pipe.scheduler.config))
    try:   # what the folder says its pictures are made best with (defaults.json); a file gives no such say
        defaults = ModelDefaults.load(source if Path(source).is_dir() else None)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    limits = ModelLimits(native_size=native, max_side=max_side or 2 * native, multiple=max(8, vae_scale),
                         samplers=samplers, default_sampler=default_sampler, default_guidance=defaults.guidance)
    model = LoadedModel(
        model_id=model_id, source=source, sha256=sha, kind=kind, pipeline=pipe, unet=pipe.unet, vae=pipe.vae,
        scheduler_config=dict(pipe.scheduler.config), device=device, dtype=dtype, vae_dtype=vae_dtype,
        vae_scale_factor=vae_scale, limits=limits)
    model.latent_rgb = calibrate_latent_rgb(model)
    if Path(source).is_dir():   # a folder (or hub snapshot) may say which words its model knows
        model.vocabulary = ModelVocabulary.load(source)
    return model


@torch.no_grad()
def calibrate_latent_rgb(model: LoadedModel) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit the linear latent->RGB map used for cheap step previews.

    Encodes a few smooth random colour fields with the model's own VAE and solves a least-squares
    fit from latent pixels to the colours they came from. Works for any VAE (SD, SDXL, ours)
    without a table of magic numbers, in well under a second.
    """
    g = torch.Generator().manual_seed(0)
    side = model.vae_scale_factor * 8
    coarse = torch.rand(12, 3, 4, 4, generator=g) * 2 - 1
    images = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic", align_corners=False).clamp(-1, 1)
    latents = model.vae.encode(images.to(model.device, model.vae_dtype)).latent_dist.mode().float().cpu()
    latents = latents * model.vae.config.scaling_factor
    target = torch.nn.functional.adaptive_avg_pool2d(images, latents.shape[-2:])
    x = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    y = target.permute(0, 2, 3, 1).reshape(-1, 3)
    x1 = torch.cat([x, torch.ones(len(x), 1)], dim=1)
    sol = torch.linalg.lstsq(x1, y).solution  # (C+1) x 3
    return sol[:-1].contiguous(), sol[-1].contiguous()
