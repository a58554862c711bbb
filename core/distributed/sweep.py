"""What brings a dead worker's job back, and ends a job that never reached the queue.

Every worker runs `sweep` every SWEEP_EVERY_S; a Redis lock lets one of them do it at a time.

- A running row whose lease has run out (its worker was killed, lost power, lost the network)
  goes back to the front of its owner's line with a new Celery message, or, after MAX_ATTEMPTS
  starts, is failed with the reason. The claim (storage/claims.py) makes sure that the first
  worker, if it was only slow, cannot record it as well.
- A queued row the broker never heard of (the front-end lost Redis, or died, between recording
  it and queuing it) is failed after STUCK_QUEUED_S with the reason, never left queued forever.
- A place reserved for a job that was never recorded is given back.
- Every waiting job has a Celery message: any that are missing (a message lost with a killed
  worker is only re-delivered after the visibility timeout) are sent again. A message with no
  job left for it is a no-op.
"""

from __future__ import annotations

import logging
import time

from core.distributed import events
from core.distributed.broker import (LEASE_TTL_S, MAX_ATTEMPTS, QUEUE, STUCK_QUEUED_S, SWEEP_EVERY_S, TASK, key)
from core.distributed.quota import Line, owner_key
from core.jobs import Failed
from storage import claims
from storage.models import utcnow

log = logging.getLogger(__name__)


def sweep(store, r, app, *, holder: str, stuck_after: float = STUCK_QUEUED_S) -> dict[str, int]:
    """One pass, if no other worker holds the sweep lock. Returns what it did, by kind."""
    done = {"requeued": 0, "failed": 0, "never_queued": 0, "released": 0, "messages": 0}
    if not r.set(key("sweep-lock"), holder, nx=True, ex=SWEEP_EVERY_S):
        return done
    line = Line(r)
    now = utcnow()
    for row in claims.unfinished(store):
        if row.status == "running":
            if r.exists(key("lease", row.id)):
                continue
            if row.started_at is not None and (now - row.started_at).total_seconds() < LEASE_TTL_S:
                continue  # claimed a moment ago: its lease is being set
            if row.attempts >= MAX_ATTEMPTS:
                reason = (f"The worker running it stopped {row.attempts} times (killed or lost), so it was not "
                          "tried again. Submit it again, or ask an admin to check the workers.")
                if claims.finish(store, row.id, "failed", reason, "WorkerLost"):
                    events.publish(r, row.job_id, Failed(reason, "WorkerLost"))
                    line.release(row.job_id, row.owner)
                    done["failed"] += 1
            elif claims.requeue(store, row.id, row.runner):
                log.warning("job %s (%s): its worker %s stopped; queued again (attempt %d of %d next)",
                            row.job_id, row.id, row.runner, row.attempts + 1, MAX_ATTEMPTS)
                line.enqueue(row.job_id, row.owner, row.id, front=True)
                r.hset(key("job", row.job_id), mapping={"owner": owner_key(row.owner), "owner_json": _json(row.owner),
                                                       "created": time.time()})
                app.send_task(TASK, args=[row.job_id], queue=QUEUE)
                r.publish(events.QUEUE_CHANGED, row.job_id)
                done["requeued"] += 1
        elif row.status == "queued":
            state = line.job(row.job_id).get("state")
            if state in ("queued", "running") or (now - row.created_at).total_seconds() < stuck_after:
                continue
            reason = ("It was recorded but never reached the job queue (the broker could not be reached, or "
                      "lost it in a restart); nothing ran. Submit it again.")
            if claims.finish(store, row.id, "failed", reason, "BrokerUnavailable"):
                events.publish(r, row.job_id, Failed(reason, "BrokerUnavailable"))
                line.release(row.job_id, row.owner)
                done["never_queued"] += 1
    for member in r.smembers(key("waiting")):
        job_id = member.decode()
        info = line.job(job_id)
        if info.get("state", "reserved") == "reserved" and time.time() - float(info.get("created", 0)) > stuck_after:
            line.release(job_id, info.get("owner", ""))
            r.srem(key("waiting"), job_id)
            done["released"] += 1
    missing = line.waiting_count() - int(r.llen(QUEUE))
    for _ in range(max(0, missing)):
        app.send_task(TASK, args=[""], queue=QUEUE)
        done["messages"] += 1
    return done


def _json(owner) -> str:
    import dataclasses
    import json

    return json.dumps(dataclasses.asdict(owner))
