"""Fixtures for the distributed service: a real Redis and a real PostgreSQL started by the suite,
and real `statuary worker` processes on the tiny model.

Redis: Debian's `redis-server` on a free 127.0.0.1 port, no persistence, stopped at the end.
Without it the tests skip, saying why, unless TEST_REQUIRE_REDIS=1 (CI sets it), where they fail.
PostgreSQL: the storage tests' server (tests/storage/conftest.py), TEST_REQUIRE_POSTGRES as there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.storage.conftest import _free_port

ROOT = Path(__file__).resolve().parents[2]


class RedisServer:
    def __init__(self, binary: str):
        self.binary = binary
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="statuary-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--protected-mode", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


@pytest.fixture(scope="session")
def redis_server():
    binary = shutil.which("redis-server")
    if binary is None:
        why = "Debian's redis-server was not found on PATH; install the 'redis-server' package"
        if os.environ.get("TEST_REQUIRE_REDIS") == "1":
            pytest.fail(f"TEST_REQUIRE_REDIS=1 but {why}", pytrace=False)
        pytest.skip(why)
    server = RedisServer(binary)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


class Cluster:
    """One Redis (flushed), one fresh PostgreSQL database, one shared data folder, and the
    `statuary worker` processes a test starts: the README's "Scaling out" commands."""

    def __init__(self, redis_server: RedisServer, db_url: str, data_dir: Path, model_dir: Path, logs: Path):
        self.redis = redis_server
        self.db_url = db_url
        self.data_dir = data_dir
        self.model_dir = model_dir
        self.logs = logs
        self.workers: list[subprocess.Popen] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STATUARY_") and k != "DATABASE_URL"}
        env.update(STATUARY_BROKER_URL=self.redis.url, DATABASE_URL=self.db_url, STATUARY_DATA_DIR=str(self.data_dir),
                   STATUARY_MODEL=str(self.model_dir), STATUARY_DEVICE="cpu", STATUARY_THREADS="1",
                   PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
        env.update(extra)
        return env

    def settings(self, **extra: str):
        from core.settings import load_settings

        return load_settings(self.env(**extra), dotenv_path=None)

    def start_worker(self, **extra: str) -> subprocess.Popen:
        n = len(self.workers)
        log = open(self.logs / f"worker-{n}.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "core.cli", "worker"], cwd=ROOT, env=self.env(**extra),
                                stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        return proc

    def wait_workers(self, n: int, timeout: float = 180) -> None:
        """Until `n` workers say they are alive (each loaded the model and listens)."""
        from core.distributed.broker import redis_client
        from core.distributed.service import alive_workers

        r = redis_client(self.redis.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(alive_workers(r)) >= n:
                return
            for p in self.workers:
                if p.poll() is not None:
                    raise RuntimeError(f"a worker exited with {p.returncode}:\n{self.log_text()}")
            time.sleep(0.3)
        raise TimeoutError(f"{n} workers were not alive after {timeout} s:\n{self.log_text()}")

    def log_text(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.logs.iterdir()))

    def stop(self) -> None:
        for p in self.workers:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
        for p in self.workers:
            p.wait(30)


@pytest.fixture
def cluster(redis_server, postgres_server, tmp_path, tiny_model_dir):
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()  # a test stopped it
    redis_server.flush()
    logs = tmp_path / "logs"
    logs.mkdir()
    c = Cluster(redis_server, postgres_server.new_database(), tmp_path / "data", tiny_model_dir, logs)
    yield c
    c.stop()
