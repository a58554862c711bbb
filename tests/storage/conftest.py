"""Storage fixtures: every storage test runs on SQLite and on a real PostgreSQL server.

The PostgreSQL server is started by the suite itself, once per session: initdb into a temp
folder, pg_ctl start on a free port of 127.0.0.1 (and a unix socket in that folder), fsync
off since the data is thrown away; each test gets a fresh database. Run as root, the server
runs as the `postgres` user (PostgreSQL refuses to run as root).

No PostgreSQL binaries: the postgres variants skip, saying why, or fail when
TEST_REQUIRE_POSTGRES=1 (CI sets it, so a broken CI image cannot pass silently).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

PG_USER = "postgres"


# ---- the PostgreSQL server ---------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    """Where initdb/pg_ctl live: $POSTGRES_BINDIR, PATH, or Debian's /usr/lib/postgresql/N/bin."""
    if os.environ.get("POSTGRES_BINDIR"):
        return Path(os.environ["POSTGRES_BINDIR"])
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.as_user: list[str] = []
        self.root = Path(tempfile.mkdtemp(prefix="statuary-pg-"))
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam(PG_USER)
            except KeyError:
                raise RuntimeError("running as root, and there is no 'postgres' user to run the test server as; "
                                   "create one or run the tests as a normal user") from None
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
            runuser = shutil.which("runuser")
            self.as_user = [runuser, "-u", PG_USER, "--"] if runuser else ["su", PG_USER, "-s", "/bin/sh", "-c"]
        self.data = self.root / "data"
        self.port = _free_port()
        self._counter = itertools.count(1)

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        cmd = [str(a) for a in args]
        if self.as_user and self.as_user[0] == "su":
            cmd = self.as_user + [" ".join(cmd)]
        else:
            cmd = self.as_user + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> None:
        r = self._run(self.bindir / "initdb", "-D", self.data, "-U", PG_USER, "--auth=trust", "-E", "UTF8",
                      "--no-sync", "--locale=C")
        if r.returncode:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        self.resume()

    def resume(self) -> None:
        """Start the server on its data folder (again, after `halt`)."""
        opts = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off "
                f"-c full_page_writes=off -c max_connections=60 -c shared_buffers=32MB")
        r = self._run(self.bindir / "pg_ctl", "-D", self.data, "-l", self.root / "server.log", "-o", opts,
                      "-w", "-t", "60", "start")
        if r.returncode:
            log = (self.root / "server.log").read_text(errors="replace") if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{log}")

    def halt(self) -> None:
        """Stop the server, data kept, as a restart does: every connection dropped ("fast"; an
        "immediate" stop would lose the last commits, as this test server runs with
        synchronous_commit=off)."""
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop", timeout=60)

    def stop(self) -> None:
        self._run(self.bindir / "pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"t{next(self._counter)}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={PG_USER} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


# ---- databases, settings, stores ---------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'statuary.db'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def make_settings(tmp_path, db_url):
    """make_settings(**env) -> Settings on this test's database, data dir in tmp_path."""
    from core.settings import load_settings

    def make(**env: Any):
        base = {"STATUARY_DATA_DIR": str(tmp_path / "data"), "DATABASE_URL": db_url}
        base.update({k: str(v) for k, v in env.items()})
        return load_settings(base, dotenv_path=None)

    return make


@pytest.fixture
def store(make_settings):
    from storage import open_store

    s = open_store(make_settings())
    yield s
    s.close()


@pytest.fixture
def fake_service(store):
    from tests.storage.helpers import FakeService

    return FakeService(store)
