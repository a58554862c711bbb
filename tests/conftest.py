"""Shared fixtures: a tiny random SD model built once per test session, and services on it.

Everything runs on the CPU with no downloads. Torch is limited to 2 threads (the CI machine's
cores) so parallel parts of the suite do not fight over them.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import torch  # noqa: E402

torch.set_num_threads(2)

from tests.tiny_model import build_tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random SD 1.x-architecture model folder (64 px native, 8x VAE), safetensors only."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture(scope="session")
def tiny_inpaint_model_dir(tmp_path_factory) -> Path:
    """The same with a 9-channel inpainting UNet."""
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd-inpaint", inpainting=True)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from core.loader import load_model

    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="session")
def generator(tiny_model):
    from core.generator import Generator

    return Generator(tiny_model)


@pytest.fixture
def service_factory(generator):
    """service_factory(recorder=None, **kwargs) -> a running InProcessJobService on the tiny model,
    closed after the test."""
    from core.service import InProcessJobService

    made = []

    def make(recorder=None, **kwargs):
        svc = InProcessJobService(generator, recorder, **kwargs)
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


@pytest.fixture
def settings_factory(tmp_path, tiny_model_dir):
    """settings_factory(**env) -> Settings with the data dir in tmp_path and the tiny model."""
    from core.settings import load_settings

    def make(**env):
        base = {"STATUARY_DATA_DIR": str(tmp_path / "data"), "STATUARY_MODEL": str(tiny_model_dir),
                "STATUARY_DEVICE": "cpu", "STATUARY_THREADS": "2"}
        base.update({k: str(v) for k, v in env.items()})
        return load_settings(base, dotenv_path=None)

    return make


def png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def own_postgres():
    """A PostgreSQL server of one test's own, which it may `halt()` and `resume()` (a restart, an
    outage); the session's `postgres_server` is shared and must stay up."""
    from tests.storage.conftest import PostgresServer, _pg_bindir

    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        if os.environ.get("TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("TEST_REQUIRE_POSTGRES=1 but the PostgreSQL server binaries were not found", pytrace=False)
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) were not found; install the 'postgresql' package")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the whole session (tests/storage, tests/distributed); each
    test takes a database of its own with `.new_database()`."""
    from tests.storage.conftest import PostgresServer, _pg_bindir

    bindir = _pg_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        why = ("PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH, in /usr/lib/postgresql/*/bin "
               "or in $POSTGRES_BINDIR; install the 'postgresql' package to run the PostgreSQL variants")
        if os.environ.get("TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"TEST_REQUIRE_POSTGRES=1 but {why}", pytrace=False)
        pytest.skip(why)
    server = PostgresServer(bindir)
    try:
        server.start()
    except Exception:
        server.stop()
        raise
    yield server
    server.stop()
