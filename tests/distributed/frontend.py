"""A front-end process for the distributed tests (python -m tests.distributed.frontend MODE ...),
configured by the environment (STATUARY_BROKER_URL, DATABASE_URL, ...) like `statuary serve`.

    jobs START OWNERS N STEPS      at time START, submit N jobs round-robin over OWNERS (comma-separated
                                   user ids), wait for all; print one JSON line per job
    burst START OWNER N ACTIVE     at time START, submit N jobs for OWNER at once (threads) with
                                   Quota(max_active=ACTIVE) (ACTIVE -1: none); print accepted and refusals
    cancel OWNER                   cancel every waiting or running job of OWNER (web:OWNER); print how many
"""

from __future__ import annotations

import json
import sys
import threading
import time
import zlib

from core.distributed.service import CeleryJobService
from core.jobs import Owner, QueueFull, Quota
from core.request import GenerationRequest
from core.settings import load_settings
from storage import open_store


def main(argv: list[str]) -> int:
    settings = load_settings(dotenv_path=None)
    store = open_store(settings)
    service = CeleryJobService(settings, store)
    mode = argv[0]
    if mode == "jobs":
        start, owners, n, steps = float(argv[1]), argv[2].split(","), int(argv[3]), int(argv[4])
        time.sleep(max(0.0, start - time.time()))
        handles = []
        for i in range(n):
            owner = Owner("web", owners[i % len(owners)], owners[i % len(owners)])
            seed = zlib.crc32(f"{owners[i % len(owners)]}-{i}".encode()) % 10_000
            handles.append((seed, service.submit(GenerationRequest(f"cat {seed}", seed=seed, steps=steps), owner)))
        for seed, h in handles:
            r = h.result(timeout=600)
            print(json.dumps({"seed": seed, "generation_id": r.generation_id, "owner": h.owner.user_id,
                              "images": [[i.id, i.sha256] for i in r.images]}), flush=True)
    elif mode == "burst":
        start, user, n, active = float(argv[1]), argv[2], int(argv[3]), int(argv[4])
        quota = Quota(max_active=active) if active >= 0 else None
        out: list[str] = []
        barrier = threading.Barrier(n)

        def one(i: int) -> None:
            barrier.wait()
            time.sleep(max(0.0, start - time.time()))
            try:
                service.submit(GenerationRequest(f"burst {i}", seed=i, steps=2), Owner("web", user, user), quota=quota)
                out.append("ok")
            except QueueFull as exc:
                out.append(str(exc))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps({"accepted": out.count("ok"), "refusals": [m for m in out if m != "ok"]}), flush=True)
    elif mode == "cancel":
        handles = service.handles_of(Owner("web", argv[1]))
        print(json.dumps({"cancelled": sum(1 for h in handles if h.cancel())}), flush=True)
    service.close()
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
