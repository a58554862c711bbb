"""The Celery app and the Redis connection every distributed piece shares, with the timing
constants that decide how a dead worker's job comes back (README, "Scaling out").

Celery carries one message per job ("a job is waiting"); Redis also holds the fair waiting
line (quota.py), leases, events and the announced model. Chosen settings:

- task_acks_late + worker_prefetch_multiplier=1: a worker acknowledges a message only after
  the job's images and rows are written, and holds no more messages than it runs.
- visibility_timeout VISIBILITY_TIMEOUT_S (2 h, longer than any job runs): Celery's Redis
  transport re-delivers an unacknowledged message only after it, and re-delivers a message
  still running past it as a duplicate (celery/celery#5935, #3270, #5306). A duplicate is
  harmless (the claim on the row, storage/claims.py, lets one worker run a job), but a short
  timeout would also not bring a dead worker's job back any sooner than the lease does:
- a running job holds a lease in Redis (LEASE_TTL_S, renewed every LEASE_RENEW_S); the sweep
  (every SWEEP_EVERY_S, in every worker) re-queues a job whose lease ran out. A killed
  worker's job therefore starts again elsewhere after at most LEASE_TTL_S + SWEEP_EVERY_S.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from pathlib import Path
from typing import Any

PREFIX = "statuary:"
QUEUE = "statuary"                     # the Celery queue
TASK = "statuary.run"                  # the one task: "a job is waiting"
VISIBILITY_TIMEOUT_S = 2 * 3600
LEASE_TTL_S = 20
LEASE_RENEW_S = 5
SWEEP_EVERY_S = 5
STUCK_QUEUED_S = 60                    # a row queued this long that the broker never heard of is ended
MAX_ATTEMPTS = 3                       # a job whose worker died this many times is failed
WORKER_ALIVE_TTL_S = 15


class BrokerUnavailable(RuntimeError):
    """Redis cannot be reached; the message says so in one sentence."""


def key(*parts: str) -> str:
    return PREFIX + ":".join(parts)


def redis_client(url: str):
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10, health_check_interval=30)


def unreachable(url: str) -> str:
    """The one sentence a front-end says when Redis cannot be reached (no password in it)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    where = f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else url.split("@")[-1]
    return (f"The job queue (Redis at {where}) cannot be reached, so nothing was queued; "
            "history still works. Try again in a minute.")


def make_app(url: str):
    """The Celery app both sides use (the task itself is registered by worker.py)."""
    from celery import Celery

    app = Celery("statuary", broker=url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_serializer="json", accept_content=["json"],
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
        task_ignore_result=True, result_backend=None,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT_S},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False, worker_send_task_events=False,
    )
    return app


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


# ---- the model the workers serve ------------------------------------------------------------


def announcement(service: Any) -> dict[str, Any]:
    """What a front-end needs of the model without loading it (`service`: the worker's in-process
    one): limits, fingerprint, word list, the hires fix's defaults (the model folder's hires.json)
    and the layer shapes the LoRA fit check compares a file against (core/lora.py ModelLayers)."""
    from core.lora import ModelLayers

    model, fingerprint = service.model, service.fingerprint
    vocab = getattr(model, "vocabulary", None)
    return {
        "limits": dataclasses.asdict(model.limits),   # every field; ModelLimits(**...) reads it back
        "fingerprint": fingerprint, "kind": model.kind, "inpainting_unet": model.inpainting_unet,
        "vocabulary": None if vocab is None else vocab.to_json(),
        "hires": service.hires_defaults.to_json(),
        "lora_fit": ModelLayers.of(model).to_json(),
    }


def announcement_file(data_dir: Path) -> Path:
    """Kept in the shared data folder too, so a front-end starts while Redis is down."""
    return Path(data_dir) / "cache" / "worker-model.json"


def publish_announcement(r, data_dir: Path, info: dict[str, Any]) -> None:
    from storage.files import atomic_write

    text = json.dumps(info, sort_keys=True)
    r.set(key("model"), text)
    atomic_write(announcement_file(data_dir), text.encode())
