"""core.loader.HashCache shared by processes: workers and front-ends on one data folder write
the same cache file at once (two workers starting together failed: one's rename found the
other's fixed-name temporary file gone)."""

from __future__ import annotations

import hashlib
import threading

from core.loader import HashCache


def test_caches_on_one_file_written_at_once_all_succeed(tmp_path):
    files = []
    for i in range(40):
        f = tmp_path / f"w{i}.bin"
        f.write_bytes(bytes([i]) * 1000)
        files.append(f)
    cache_file = tmp_path / "cache" / "hashes.json"
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def hash_all() -> None:
        cache = HashCache(cache_file)  # each its own instance, as each process has
        start.wait()
        try:
            for f in files:
                assert cache.file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=hash_all) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert HashCache(cache_file).file_sha256(files[0]) == hashlib.sha256(files[0].read_bytes()).hexdigest()
