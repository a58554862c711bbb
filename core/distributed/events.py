"""Job events across processes: a worker publishes each one as JSON on the job's Redis pub/sub
channel; every front-end listens to all of them and hands those of its handles on. A progress
event carries its small preview as PNG; `done` carries nothing, since the front-end reads the
finished job from the record (its rows and files are written before `done` is published)."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from core.distributed.broker import key
from core.jobs import Cancelled, Event, Failed, Progress, Started

QUEUE_CHANGED = key("queue-changed")  # a job joined, left or started: front-ends recompute positions
EVENTS_PATTERN = key("events", "*")


def channel(job_id: str) -> str:
    return key("events", job_id)


def encode(event: Event) -> str:
    """`event` as a JSON message (Done as {"type": "done"}: the record holds the result)."""
    if isinstance(event, Started):
        d: dict[str, Any] = {"type": "started"}
    elif isinstance(event, Progress):
        buf = io.BytesIO()
        event.preview.save(buf, format="PNG", compress_level=1)
        d = {"type": "progress", "step": event.step, "total": event.total, "image_index": event.image_index,
             "preview": base64.b64encode(buf.getvalue()).decode()}
    elif isinstance(event, Failed):
        d = {"type": "failed", "reason": event.reason, "error_type": event.error_type}
    elif isinstance(event, Cancelled):
        d = {"type": "cancelled"}
    else:  # Done
        d = {"type": "done"}
    return json.dumps(d)


def decode(text: str | bytes) -> dict[str, Any]:
    return json.loads(text)


def to_event(d: dict[str, Any]) -> Event | None:
    """The core.jobs event for a message (None for `done`, which the service builds from the record)."""
    kind = d.get("type")
    if kind == "started":
        return Started()
    if kind == "progress":
        from PIL import Image

        preview = Image.open(io.BytesIO(base64.b64decode(d["preview"])))
        preview.load()
        return Progress(int(d["step"]), int(d["total"]), int(d["image_index"]), preview)
    if kind == "failed":
        return Failed(str(d["reason"]), str(d.get("error_type") or "Error"))
    if kind == "cancelled":
        return Cancelled()
    return None


def publish(r, job_id: str, event: Event) -> None:
    r.publish(channel(job_id), encode(event))
