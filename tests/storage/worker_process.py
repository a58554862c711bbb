"""A second process for the concurrency and crash tests (python -m tests.storage.worker_process ...).

    write DATA_DIR DATABASE_URL N TAG    record N two-image jobs, then print DONE
    hang  DATA_DIR DATABASE_URL WHERE    start a job and stop forever in its middle, printing HANG:
                                         WHERE=file: while an image file is being written (before its rename)
                                         WHERE=commit: inside the database transaction that records the images
"""

from __future__ import annotations

import os
import sys
import time

from core.jobs import Owner
from core.request import GenerationRequest
from core.settings import load_settings
from storage import open_store
from tests.storage.helpers import FakeService


def main(argv: list[str]) -> int:
    mode, data_dir, url = argv[:3]
    store = open_store(load_settings({"STATUARY_DATA_DIR": data_dir, "DATABASE_URL": url}, dotenv_path=None))
    service = FakeService(store)
    owner = Owner("cli", f"proc-{os.getpid()}")
    if mode == "write":
        n, tag = int(argv[3]), argv[4]
        for i in range(n):
            service.submit(GenerationRequest(f"{tag} job {i}", seed=i, count=2), owner).result()
        print("DONE", flush=True)
        return 0

    def hang(*_args, **_kwargs):
        print("HANG", flush=True)
        while True:
            time.sleep(60)

    if argv[3] == "file":
        import storage.files

        storage.files.os.fsync = hang  # the temp file is written; the rename never comes
    else:
        store._free_image_ids = hang  # inside job_done's write transaction (holding SQLite's write lock)
    service.submit(GenerationRequest("killed mid-job", seed=7, count=2), owner)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
