"""Scaling out, measured side by side in one run: 1 `statuary worker` against 2 for the same 16
jobs (throughput ratio), and what the broker path adds to one job over the in-process service.

    .venv/bin/python bench/scale.py                 # here: the default model's architecture, a few minutes
    .venv/bin/python bench/scale.py --model tiny    # the tiny test model (seconds per phase)

Everything is real: a Redis and a PostgreSQL started for the run (Debian's redis-server and
postgresql, as the tests start them), `statuary worker` processes with one torch thread each,
the jobs submitted through CeleryJobService from this process. The model is the default model's
architecture with random weights (they run exactly as fast as trained ones) unless --model says.

Printed: for 1 and 2 workers, 16 jobs' wall time (first submit to last Done) and images/s, and
the ratio; for one job at a time (no queue), p50 submit-to-Done of the in-process service (one
torch thread, in this process) and of the broker path (one worker), interleaved, and the
difference in ms; and the p50 of submit-to-Done minus the job's own run time on each path (what
the path adds around the denoising), which a busy CPU disturbs less. On the CPU two workers share the machine's cores: with 2 cores and one
thread each, 2 workers can at best double the throughput of 1.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_model(which: str) -> str:
    if which == "tiny":
        from tests.tiny_model import build_tiny_model

        return str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny-sd"))
    if which == "default":
        if (ROOT / "models" / "default" / "model_index.json").is_file():
            return str(ROOT / "models" / "default")
        from bench.default_model_speed import build_pipeline
        from training.model import ModelSize

        folder = Path(tempfile.mkdtemp()) / "default-arch"
        build_pipeline(ModelSize()).save_pretrained(folder, safe_serialization=True)
        return str(folder)
    return which


def run_jobs(service, n: int, steps: int, tag: str, seconds: list[float] | None = None) -> float:
    """Submit n jobs at once (4 owners), wait for all; the wall time. Each job's own run time
    (the worker's, from its record) is appended to `seconds`."""
    from core.jobs import Owner
    from core.request import GenerationRequest

    t0 = time.perf_counter()
    handles = [service.submit(GenerationRequest(f"cat face {tag} {i}", seed=i, steps=steps), Owner("web", f"o{i % 4}"))
               for i in range(n)]
    for h in handles:
        r = h.result(timeout=1800)
        if seconds is not None:
            seconds.append(r.seconds)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="default", help="default (its architecture), tiny, or a model path")
    ap.add_argument("--jobs", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--single", type=int, default=9, help="single jobs timed on each path for the p50")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from core.distributed.service import CeleryJobService
    from core.service import create_service
    from storage import open_store
    from tests.distributed.conftest import Cluster, RedisServer
    from tests.storage.conftest import PostgresServer, _pg_bindir

    import shutil

    model = build_model(args.model)
    redis = RedisServer(shutil.which("redis-server"))
    redis.start()
    pg = PostgresServer(_pg_bindir())
    pg.start()
    work = Path(tempfile.mkdtemp(prefix="statuary-bench-"))
    (work / "logs").mkdir()
    cluster = Cluster(redis, pg.new_database(), work / "data", Path(model), work / "logs")
    try:
        settings = cluster.settings(STATUARY_QUEUE_MAX="1000", STATUARY_QUEUE_PER_OWNER="1000")
        # the in-process service records into the same PostgreSQL server (its own database) and
        # the same kind of folder, so the difference is the broker path alone
        from core.settings import load_settings

        local_settings = load_settings({"STATUARY_MODEL": model, "STATUARY_DEVICE": "cpu", "STATUARY_THREADS": "1",
                                        "STATUARY_DATA_DIR": str(work / "local"), "DATABASE_URL": pg.new_database()},
                                       dotenv_path=None)
        local_store = open_store(local_settings)
        local = create_service(local_settings, recorder=local_store)
        cluster.start_worker()
        cluster.wait_workers(1)
        store = open_store(settings)
        remote = CeleryJobService(settings, store)
        print(f"model {model}\n{args.steps} steps, {local.limits.native_size} px, guidance 7, DPM++ 2M Karras, "
              f"1 torch thread per worker, {torch.get_num_threads()} here")

        run_jobs(remote, 2, args.steps, "warm")  # both paths warm before timing
        run_jobs(local, 2, args.steps, "warm")
        local_s, remote_s, local_run, remote_run = [], [], [], []
        for i in range(args.single):  # interleaved, one job at a time
            local_s.append(run_jobs(local, 1, args.steps, f"l{i}", local_run))
            remote_s.append(run_jobs(remote, 1, args.steps, f"r{i}", remote_run))
        p50_l, p50_r = statistics.median(local_s), statistics.median(remote_s)
        # Submit-to-Done minus the job's own run time: what each path adds around the denoising
        # (recording the row and files on both; on the broker path also Redis, Celery, the claim,
        # the events and reading the result back). Less sensitive to a busy CPU than the totals.
        around_l = statistics.median(t - r for t, r in zip(local_s, local_run))
        around_r = statistics.median(t - r for t, r in zip(remote_s, remote_run))

        load = [os.getloadavg()[0]]
        per_job: dict[int, list[float]] = {1: [], 2: []}
        one = run_jobs(remote, args.jobs, args.steps, "one", per_job[1])
        cluster.start_worker()
        cluster.wait_workers(2)
        run_jobs(remote, 2, args.steps, "warm2")
        two = run_jobs(remote, args.jobs, args.steps, "two", per_job[2])
        load.append(os.getloadavg()[0])

        print(f"\n{'workers':>8} {'jobs':>5} {'wall s':>8} {'images/s':>9} {'s per job on its worker (p50)':>30}")
        for n, wall in ((1, one), (2, two)):
            print(f"{n:>8} {args.jobs:>5} {wall:>8.2f} {args.jobs / wall:>9.2f} {statistics.median(per_job[n]):>30.2f}")
        print(f"throughput ratio 2 workers / 1 worker: {one / two:.2f}   "
              f"(machine load average {load[0]:.1f} before, {load[1]:.1f} after, {os.cpu_count()} cores)")
        print(f"\none job, submit to Done, p50 of {args.single}: in-process {p50_l * 1000:.0f} ms, "
              f"broker path {p50_r * 1000:.0f} ms, added {(p50_r - p50_l) * 1000:+.0f} ms "
              f"(ratio {p50_r / p50_l:.3f})")
        print(f"time around the job's own run (p50): in-process {around_l * 1000:.0f} ms, broker path "
              f"{around_r * 1000:.0f} ms, added by the broker path {(around_r - around_l) * 1000:+.0f} ms")
        remote.close()
        local.close()
        local_store.close()
        store.close()
    finally:
        cluster.stop()
        redis.stop()
        pg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
