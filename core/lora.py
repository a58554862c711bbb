"""LoRA files: the folder, the checks at submit, and switching adapters on the loaded model.

A LoRA is a `.safetensors` file in STATUARY_LORA_DIR (default DATA_DIR/loras), named by its
file name without the suffix: `<lora:pixel:0.8>` in a prompt, or `--lora pixel:0.8`. Both
formats people download load through diffusers' own LoRA loading (with peft, pinned in
pyproject.toml): diffusers/PEFT keys ("unet.<module>.lora_A.weight") and kohya/A1111 keys
("lora_unet_<module>.lora_down.weight", ".alpha"), which diffusers converts.

At submit (`LoraLibrary.resolve`), each named file must exist, be safetensors by its bytes
(the loader's pickle refusal), and fit the loaded model: every layer it changes must exist in
the model with the same number of inputs and outputs; a file made for another base model
(an SDXL LoRA on SD 1.x, say) is refused with its name and why, before anything is queued.
Each file's sha256 goes into the request, so the recipe says exactly which file ran.

In the worker (`LoraSwitch.activate`), adapters are loaded once per file content (adapter
name from its sha256, the last few kept) and switched per UNet call with set_adapters; a
request without LoRAs runs with the adapters disabled, which peft computes as the base layer
alone, so it is bit-identical to a model that never saw a LoRA.
"""

from __future__ import annotations

import json
import logging
import re
import struct
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

from core.jobs import JobError
from core.loader import HashCache, UnsafeWeights, check_safetensors
from core.request import FieldError, GenerationRequest, InvalidRequest

log = logging.getLogger(__name__)

ADAPTERS_KEPT = 8  # adapters held on the model at once; the least recently used go first

_SUFFIXES = ((".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora.down.weight", "down"),
             (".lora.up.weight", "up"), (".lora_linear_layer.down.weight", "down"),
             (".lora_linear_layer.up.weight", "up"), ("_lora.down.weight", "down"), ("_lora.up.weight", "up"))
_ATTN_PROC = re.compile(r"(.*?)(?:\.processor)?\.(to_q|to_k|to_v|to_out)_lora$")
_TEXT_PROJ = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def read_metadata(path: Path) -> dict[str, str]:
    """A safetensors file's __metadata__ (header only; nothing else is read)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    meta = header.get("__metadata__") or {}
    return {str(k): str(v) for k, v in meta.items()}


def trigger_words(meta: dict[str, str], most: int = 8) -> list[str]:
    """Words a LoRA was trained to answer to, when its metadata says: an explicit trigger phrase
    (modelspec.trigger_phrase, trigger_words, ss_trigger_words), else kohya's most frequent
    training tags (ss_tag_frequency). [] when it says nothing."""
    for key in ("modelspec.trigger_phrase", "trigger_words", "ss_trigger_words"):
        text = meta.get(key, "").strip()
        if text:
            try:
                value = json.loads(text)
                words = value if isinstance(value, list) else [str(value)]
            except ValueError:
                words = text.split(",")
            return [w.strip() for w in words if str(w).strip()][:most]
    try:
        freq = json.loads(meta.get("ss_tag_frequency", "") or "{}")
    except ValueError:
        return []
    counts: dict[str, int] = {}
    if isinstance(freq, dict):
        for tags in freq.values():
            if isinstance(tags, dict):
                for tag, n in tags.items():
                    if isinstance(n, (int, float)):
                        counts[str(tag).strip()] = counts.get(str(tag).strip(), 0) + int(n)
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if t][:most]


def folder_names(folder: Path) -> list[str]:
    """The LoRA names in `folder`: its .safetensors files without the suffix."""
    if not Path(folder).is_dir():
        return []
    return sorted((p.stem for p in Path(folder).glob("*.safetensors") if p.is_file()), key=str.lower)


def folder_catalog(folder: Path) -> list[dict[str, Any]]:
    """Every LoRA in `folder` with its trigger words (from its metadata; [] when it has none)."""
    out = []
    for name in folder_names(folder):
        try:
            words = trigger_words(read_metadata(Path(folder) / f"{name}.safetensors"))
        except (OSError, ValueError, struct.error):
            words = []
        out.append({"name": name, "trigger_words": words})
    return out


def library_for(settings, model) -> "LoraLibrary":
    """The LoRA folder of `settings` (STATUARY_LORA_DIR, or DATA_DIR/loras) for `model` (loaded, or
    announced as ModelLayers), with the sha256 cache in the data folder that every process shares."""
    return LoraLibrary(settings.lora_folder, model, HashCache(Path(settings.data_dir) / "cache" / "lora-hashes.json"))


def check_request(library: "LoraLibrary | None", request: GenerationRequest, *,
                  queued: bool = False) -> GenerationRequest:
    """The submit-time LoRA check every job service makes: each LoRA exists, is safetensors and
    fits the model; the request comes back with each file's sha256. Raises InvalidRequest.

    `queued`: the request was checked and recorded already (a distributed worker taking a job a
    front-end queued); each file must still be the one recorded then, or the job would run, and
    its row would say, another file than the one that was asked for."""
    if not request.loras:
        return request
    if library is None:
        raise InvalidRequest([FieldError("loras", request.loras[0][0], "this service has no LoRA folder")])
    resolved = library.resolve(request)
    if queued:
        for asked, now in zip(request.loras, resolved.loras):
            if len(asked) > 2 and asked[2] and asked[2] != now[2]:
                raise JobError(f"LoRA {now[0]}.safetensors changed after this job was queued; submit it again.")
    return resolved


class ModelLayers:
    """What the fit check needs of a model, without the model: its id, its pipeline class (whose
    `lora_state_dict`, a classmethod, reads a LoRA file's keys as diffusers converts them) and
    the shape of every layer a LoRA may change. A distributed worker announces it
    (core/distributed/broker.py), so a front-end with no model refuses an unfit LoRA before
    anything is queued, with the same sentence as the in-process service."""

    def __init__(self, model_id: str, pipeline_class: str, layers: dict[str, dict[str, tuple[int, int]]],
                 pipeline=None):
        self.model_id = model_id
        self.pipeline_class = pipeline_class
        self.layers = layers
        self._pipeline = pipeline  # the loaded pipeline, when there is one

    @classmethod
    def of(cls, model) -> "ModelLayers":
        return cls(model.model_id, type(model.pipeline).__name__, _layer_shapes(model), model.pipeline)

    def to_json(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "pipeline_class": self.pipeline_class,
                "layers": {c: {name: list(shape) for name, shape in layers.items()}
                           for c, layers in self.layers.items()}}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ModelLayers":
        return cls(str(d["model_id"]), str(d["pipeline_class"]),
                   {c: {name: (int(a), int(b)) for name, (a, b) in layers.items()} for c, layers in d["layers"].items()})

    def lora_state_dict(self, path: Path):
        if self._pipeline is not None:
            return self._pipeline.lora_state_dict(str(path))
        import diffusers

        return getattr(diffusers, self.pipeline_class).lora_state_dict(str(path))


class LoraLibrary:
    """The LoRA folder, and the checks a request's LoRAs pass at submit. `model` is the loaded
    model, or its ModelLayers (a front-end of distributed workers)."""

    def __init__(self, folder: Path, model, hashes: HashCache | None = None):
        self.folder = Path(folder)
        self.model = model if isinstance(model, ModelLayers) else ModelLayers.of(model)
        self.hashes = hashes or HashCache(None)
        self._fits: dict[str, str | None] = {}  # sha256 -> why it does not fit (None: it fits)
        self._lock = threading.Lock()
        self._layers = self.model.layers

    def names(self) -> list[str]:
        return folder_names(self.folder)

    def path(self, name: str) -> Path | None:
        """The file named `name` (letter case aside); None when there is none."""
        for stem in self.names():
            if stem.lower() == str(name).lower():
                return self.folder / f"{stem}.safetensors"
        return None

    def catalog(self) -> list[dict[str, Any]]:
        return folder_catalog(self.folder)

    def resolve(self, request: GenerationRequest) -> GenerationRequest:
        """The request with each LoRA's file name as spelled in the folder and its sha256; raises
        InvalidRequest naming a LoRA that is missing, not safetensors, or made for another model."""
        if not request.loras:
            return request
        errors: list[FieldError] = []
        resolved = []
        for entry in request.loras:
            name, weight = entry[0], entry[1]
            recorded = entry[2] if len(entry) > 2 else None
            path = self.path(name)
            if path is None:
                have = ", ".join(self.names()[:20]) or "none"
                was = f" (the recipe used the file with sha256 {recorded[:12]})" if recorded else ""
                errors.append(FieldError("loras", name, f"there is no {name}.safetensors in the LoRA folder "
                                         f"{self.folder}{was}; the folder has: {have}"))
                continue
            try:
                check_safetensors(path)
            except UnsafeWeights as exc:
                errors.append(FieldError("loras", name, str(exc).rstrip(".")))
                continue
            sha = self.hashes.file_sha256(path)
            why = self._fit(path, sha)
            if why:
                errors.append(FieldError("loras", name, f"{path.name} does not fit the loaded model "
                                         f"{self.model.model_id}: {why}"))
                continue
            resolved.append((path.stem, float(weight), sha))
        if errors:
            raise InvalidRequest(errors)
        import dataclasses

        return dataclasses.replace(request, loras=tuple(resolved))

    def _fit(self, path: Path, sha: str) -> str | None:
        with self._lock:
            if sha not in self._fits:
                self._fits[sha] = self._check_fit(path)
            return self._fits[sha]

    def _check_fit(self, path: Path) -> str | None:
        """Why the file cannot apply to this model (None: it can). diffusers converts the file's
        keys (kohya's too); every layer they name must exist with the same shape."""
        try:
            state, _alphas = self.model.lora_state_dict(path)
        except Exception as exc:  # noqa: BLE001 -- diffusers' own words for a file it cannot read
            return f"diffusers cannot read it as a LoRA ({type(exc).__name__}: {_short(exc)})"
        if not state:
            return "it has no LoRA weights diffusers recognises"
        known = 0
        for key, tensor in state.items():
            where = _layer_of(key)
            if where is None:
                continue  # a form we do not map; diffusers' loader has the last word
            component, layer, side = where
            layers = self._layers.get(component)
            if layers is None:
                return f"it changes the {component}, which this model does not have"
            shape = layers.get(layer) or layers.get(layer.removeprefix("text_model."))
            if shape is None:
                return f"it changes the layer {component}.{layer}, which this model does not have (made for another base model?)"
            fan_in, fan_out = shape
            has = int(tensor.shape[1]) if side == "down" else int(tensor.shape[0])
            want = fan_in if side == "down" else fan_out
            if has != want:
                what = "inputs" if side == "down" else "outputs"
                return (f"its layer {component}.{layer} has {has} {what}, this model's has {want} "
                        "(it was made for another base model)")
            known += 1
        if not known:
            return "none of its layers is one this model has"
        return None


def _short(exc: BaseException, most: int = 200) -> str:
    text = str(exc).replace("\n", " ")
    return text if len(text) <= most else text[:most - 3] + "..."


def _layer_of(key: str) -> tuple[str, str, str] | None:
    """(component, layer path, 'down' or 'up') for a converted LoRA key; None for other keys."""
    if "." not in key:
        return None
    component, rest = key.split(".", 1)
    for suffix, side in _SUFFIXES:
        if rest.endswith(suffix):
            layer = rest[: -len(suffix)] + ("_lora" if suffix.startswith("_lora") else "")
            break
    else:
        return None
    m = _ATTN_PROC.fullmatch(layer)
    if m:  # diffusers' older attention-processor names (its kohya conversion gives these)
        base, proj = m.groups()
        if component.startswith("text_encoder"):
            layer = f"{base}.{_TEXT_PROJ[proj]}"
        else:
            layer = f"{base}.{'to_out.0' if proj == 'to_out' else proj}"
    return component, layer, side


def _layer_shapes(model) -> dict[str, dict[str, tuple[int, int]]]:
    """{component: {layer path: (inputs, outputs)}} for the linear and conv layers a LoRA may change."""
    import torch

    out: dict[str, dict[str, tuple[int, int]]] = {}
    for component in ("unet", "text_encoder", "text_encoder_2"):
        module = getattr(model.pipeline, component, None)
        if module is None:
            continue
        layers = {}
        for name, layer in module.named_modules():
            if ".lora_" in name:  # an adapter already loaded (peft wraps the layer it changes)
                continue
            name = name.removesuffix(".base_layer")
            if isinstance(layer, torch.nn.Linear):
                layers[name] = (layer.in_features, layer.out_features)
            elif isinstance(layer, torch.nn.Conv2d):
                layers[name] = (layer.in_channels, layer.out_channels)
        out[component] = layers
    return out


class LoraSwitch:
    """The adapters on the loaded model: loaded once per file, switched per UNet call. Used by
    the worker thread only (through Generator)."""

    def __init__(self, model, library: LoraLibrary | None = None):
        self.model = model
        self.library = library
        self._loaded: OrderedDict[str, str] = OrderedDict()  # adapter name -> file sha256
        self._active: tuple = ()  # ((adapter, weight), ...) now set on the model

    @staticmethod
    def key(loras) -> tuple:
        """What must be active for `loras` (a request's): the same key means the same adapters."""
        return tuple((e[2] if len(e) > 2 else e[0], float(e[1])) for e in loras)

    def activate(self, loras) -> None:
        pipe = self.model.pipeline
        wanted = tuple((self._ensure(e), float(e[1])) for e in loras)
        if wanted == self._active:
            return
        if not wanted:
            pipe.disable_lora()
        else:
            if not self._active:
                pipe.enable_lora()
            pipe.set_adapters([a for a, _ in wanted], [w for _, w in wanted])
        self._active = wanted

    def _ensure(self, entry) -> str:
        name = entry[0]
        sha = entry[2] if len(entry) > 2 else None
        if sha is None or self.library is None:
            raise RuntimeError(f"LoRA {name} was not resolved against the LoRA folder before it ran")
        adapter = f"lora_{sha[:16]}"
        if adapter in self._loaded:
            self._loaded.move_to_end(adapter)
            return adapter
        path = self.library.path(name)
        if path is None:
            raise JobError(f"LoRA {name}.safetensors left the LoRA folder after this job was queued.")
        if self.library.hashes.file_sha256(path) != sha:   # before the format check: a changed file says so
            raise JobError(f"LoRA {path.name} changed after this job was queued; submit it again.")
        check_safetensors(path)
        self._evict()
        try:
            with warnings.catch_warnings():  # "multiple adapters in the model": intended, one per file
                warnings.filterwarnings("ignore", message=".*peft_config.*")
                self.model.pipeline.load_lora_weights(str(path), adapter_name=adapter)
        except Exception as exc:
            raise JobError(f"LoRA {path.name} does not fit the loaded model: {_short(exc)}") from exc
        self._loaded[adapter] = sha
        return adapter

    def _evict(self) -> None:
        in_use = {a for a, _ in self._active}
        while len(self._loaded) >= ADAPTERS_KEPT:
            victim = next((a for a in self._loaded if a not in in_use), None)
            if victim is None:
                return
            self.model.pipeline.delete_adapters(victim)
            del self._loaded[victim]
