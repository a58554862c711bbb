"""Helpers for the storage tests: a stand-in job service (no model) and small utilities."""

from __future__ import annotations

import dataclasses
import io
import time
import uuid
from typing import Any

# ---- a stand-in job service: deterministic pixels from the seeds, no model ---------------------


FAKE_FINGERPRINT = {"model_id": "/models/fake-model", "model_sha256": "ab" * 32, "statuary": "0.1.0",
                    "torch": "fake", "diffusers": "fake", "transformers": "fake", "device": "cpu test",
                    "dtype": "float32", "attention": "sdpa", "noise": "numpy PCG64, one generator per image"}


def fake_pixels(request, index: int):
    """What a 'model' would draw for image `index`: noise from its seed, blended toward the variation seed's."""
    import numpy as np
    from PIL import Image

    w, h = request.width, request.height
    base = np.random.default_rng(request.image_seed(index)).random((h, w, 3))
    if request.variation_strength > 0:
        other = np.random.default_rng(request.image_variation_seed(index)).random((h, w, 3))
        base = (1 - request.variation_strength) * base + request.variation_strength * other
    return Image.fromarray((base * 255).astype("uint8"), "RGB")


class FakeService:
    """Implements what Store needs of a JobService, synchronously, calling the recorder like core's service."""

    def __init__(self, recorder, fingerprint: dict | None = None, frames: int = 3):
        from core.request import ModelLimits

        self.recorder = recorder
        self.fingerprint = dict(fingerprint or FAKE_FINGERPRINT)
        self.frames = frames
        self.limits = ModelLimits(native_size=64, max_side=256)
        self.submitted: list[Any] = []

    def submit(self, request, owner, *, parent_id=None, kind="generate", quota=None):
        from core.jobs import Done, ImageResult, JobHandle, JobResult

        resolved = request.resolve(self.limits)
        handle = JobHandle(f"job-{uuid.uuid4().hex[:8]}", resolved, owner, self)
        handle.generation_id = self.recorder.job_queued(handle.job_id, resolved, owner, parent_id, kind,
                                                        dict(self.fingerprint))
        self.submitted.append((resolved, owner, parent_id, kind))
        self.recorder.job_started(handle.generation_id)
        images = []
        for k in range(resolved.count):
            image = fake_pixels(resolved, k)
            frames = [image.resize((16, 16)).point(lambda v, i=i: v * i // self.frames) for i in range(1, self.frames + 1)]
            images.append(ImageResult(index=k, seed=resolved.image_seed(k), variation_seed=resolved.image_variation_seed(k),
                                      image=image, frames=frames))
        result = JobResult(handle.job_id, handle.generation_id, resolved, images, dict(self.fingerprint), 0.01)
        stored = self.recorder.job_done(handle.generation_id, result)
        handle._emit(Done(dataclasses.replace(result, images=list(stored))))
        return handle

    def position(self, handle):
        return None

    def cancel(self, handle):
        return False


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return False

