"""The web UI under test: one server per test module, on the tiny model, on a free
127.0.0.1 port, and one headless Chromium (Debian's, never a downloaded one) per session.

    .venv/bin/python -m pytest tests/webui -q            # all (browser tests need `chromium`)
    .venv/bin/python -m pytest tests/webui -m "not browser"
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "webui"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives the running UI in headless Chromium (Playwright)")
    # expect()'s own default is 5 s, where pages wait 30 s (the page fixture). On a 2-core machine shared with
    # other work a UI answer can take longer (a cancel click read 'Waiting in the queue' for 5 s in a
    # fresh-clone CI beside training). The assertions are about what the page says, not how fast.
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running web UI and what it runs on."""

    def __init__(self, url, demo, service, store, settings):
        self.url, self.demo, self.service, self.store, self.settings = url.rstrip("/"), demo, service, store, settings


def start_server(generator, data_dir: Path, tiny_model_dir: Path, *, loras: bool = False, **env) -> Server:
    """`loras`: the service reads LoRAs from STATUARY_LORA_DIR (pass a generator of its own)."""
    from core.service import InProcessJobService
    from core.settings import load_settings
    from storage import open_store
    from webui.app import launch

    base = {"STATUARY_DATA_DIR": str(data_dir), "STATUARY_MODEL": str(tiny_model_dir), "STATUARY_DEVICE": "cpu",
            "STATUARY_THREADS": "2", "STATUARY_PORT": str(free_port()), "STATUARY_PREVIEW_FRAMES": "6"}
    base.update({k: str(v) for k, v in env.items()})
    settings = load_settings(base, dotenv_path=None)
    store = open_store(settings)
    library = None
    if loras:
        from core.lora import LoraLibrary

        library = LoraLibrary(settings.lora_folder, generator.model)
    service = InProcessJobService(generator, store, queue_max=settings.queue_max,
                                  queue_per_owner=settings.queue_per_owner, preview_frames=settings.preview_frames,
                                  loras=library)
    demo, url = launch(service, store, settings, prevent_thread_lock=True, quiet=True)
    return Server(url, demo, service, store, settings)


def stop_server(server: Server) -> None:
    server.demo.close()
    server.service.close()
    server.store.close()


@pytest.fixture(scope="module")
def server(generator, tiny_model_dir, tmp_path_factory):
    srv = start_server(generator, tmp_path_factory.mktemp("webui-data"), tiny_model_dir)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="package")
def browser():
    # One browser for tests/webui, closed when they end: sync_playwright runs an event loop on
    # the main thread while it is open, so a session-wide one made every later asyncio.run (the
    # bot tests', when they run after these) fail with "cannot be called from a running event loop".
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no chromium on PATH (apt install chromium); browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 800}, accept_downloads=True)
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.goto(server.url)
    pg.locator("#g-prompt textarea").wait_for()
    yield pg
    context.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    # Local requests only: a proxy from the environment must not swallow 127.0.0.1.
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield


os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
