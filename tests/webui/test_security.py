"""What the web UI serves and to whom: only the image store as files, a size limit on
uploads, 127.0.0.1 and no share link by default, an optional login. Plain HTTP, no browser."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from core.jobs import Owner
from core.request import GenerationRequest
from tests.webui.conftest import start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(generator, tiny_model_dir, tmp_path_factory):
    srv = start_server(generator, tmp_path_factory.mktemp("webui-sec") / "data", tiny_model_dir,
                       STATUARY_UPLOAD_MAX_MB=1)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def made(server):
    """One generated image and one img2img job (so an uploaded input is on disk too)."""
    img = server.service.submit(GenerationRequest(prompt="cat", seed=1, steps=2), Owner("cli", "t")).result(60).images[0]
    init = Path(img.path).read_bytes()
    server.service.submit(GenerationRequest(prompt="dog", seed=2, steps=2, init_image=init, strength=0.5),
                          Owner("cli", "t")).result(60)
    return img


def test_importing_the_ui_loads_no_torch():
    code = "import sys, webui.app; bad = [m for m in ('torch', 'diffusers') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_defaults_are_local_and_private(settings_factory, tmp_path):
    from webui.app import launch_options

    class FakeStore:
        data_dir = tmp_path / "data"

    opts = launch_options(FakeStore(), settings_factory())
    assert opts["server_name"] == "127.0.0.1"
    assert opts["share"] is False and opts["auth"] is None
    assert opts["allowed_paths"] == [str((tmp_path / "data" / "images").resolve())]
    assert opts["max_file_size"] == "10mb"
    assert str((tmp_path / "data" / "statuary.db").resolve()) in opts["blocked_paths"]

    opts = launch_options(FakeStore(), settings_factory(STATUARY_AUTH="alice:s3cret,bob:pw:x", STATUARY_SHARE=1,
                                                        STATUARY_HOST="0.0.0.0"), port=9999)
    assert opts["auth"] == [("alice", "s3cret"), ("bob", "pw:x")]
    assert opts["share"] is True and opts["server_name"] == "0.0.0.0" and opts["server_port"] == 9999


def test_server_listens_on_loopback_only(server):
    assert server.url.startswith("http://127.0.0.1:")


def test_only_the_image_store_is_served(server, made, tmp_path):
    data = Path(server.settings.data_dir)
    secret = data / ".env"
    secret.write_text("DISCORD_TOKEN=do-not-serve\n")
    db = data / "statuary.db"
    assert db.exists()
    inputs = [p for p in (data / "inputs").rglob("*") if p.is_file()]
    assert inputs, "the img2img job stored its input"
    images_dir = data / "images"
    targets = [
        str(secret), str(db), str(inputs[0]), "/etc/passwd", str(ROOT / "pyproject.toml"), "pyproject.toml",
        "webui/app.py", ".env", str(images_dir / ".." / "statuary.db"), str(images_dir) + "/../.env",
        "../" * 12 + "etc/passwd", str(images_dir), str(data),
    ]
    with httpx.Client(base_url=server.url, timeout=10, follow_redirects=False) as http:
        ok = http.get(f"/gradio_api/file={made.path}")
        assert ok.status_code == 200 and ok.content == Path(made.path).read_bytes()  # the control
        for target in targets:
            for url in (f"/gradio_api/file={target}", f"/gradio_api/file={quote(target, safe='')}",
                        f"/file={target}", f"/gradio_api/file=/{target.lstrip('/')}"):
                r = http.get(url)
                assert r.status_code in (400, 403, 404), (url, r.status_code)
                assert b"do-not-serve" not in r.content and b"SQLite format" not in r.content
                assert b"root:" not in r.content and b"[project]" not in r.content
        for url in ("/static/../../../../etc/passwd", "/assets/../../../../etc/passwd",
                    "/gradio_api/static/../../pyproject.toml", "/svelte/../../../pyproject.toml",
                    f"/gradio_api/file={made.path}/../../../statuary.db",
                    "/gradio_api/proxy=file:///etc/passwd", "/gradio_api/file=file:///etc/passwd"):
            r = http.get(url)
            assert r.status_code >= 400 or (b"root:" not in r.content and b"[project]" not in r.content
                                             and b"SQLite format" not in r.content), url


def test_uploads_are_size_limited(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        small = http.post("/gradio_api/upload", files={"files": ("a.png", b"\x89PNG" + b"0" * 1000, "image/png")})
        assert small.status_code == 200
        big = http.post("/gradio_api/upload",
                        files={"files": ("b.png", b"\x89PNG" + b"0" * (2 * 1024 * 1024), "image/png")})
        assert big.status_code in (400, 413), big.status_code
        assert "1mb" in big.text.lower().replace(" ", "") or "size" in big.text.lower()


def test_login_when_auth_is_set(generator, tiny_model_dir, tmp_path):
    from gradio_client import Client

    srv = start_server(generator, tmp_path / "data", tiny_model_dir, STATUARY_AUTH="alice:s3cret")
    try:
        img = srv.service.submit(GenerationRequest(prompt="cat", seed=1, steps=2), Owner("cli", "t")).result(60).images[0]
        with httpx.Client(base_url=srv.url, timeout=10) as http:
            assert http.get("/config").status_code == 401
            assert http.get(f"/gradio_api/file={img.path}").status_code == 401
            bad = http.post("/login", data={"username": "alice", "password": "wrong"})
            assert bad.status_code >= 400
        client = Client(srv.url, auth=("alice", "s3cret"), verbose=False)
        out = client.predict(prompt="cat face", seed=5, steps=2, api_name="/generate")
        rec = srv.store.get(out[0]["id"])
        assert rec.owner == Owner("web", "alice", "alice")
        client.close()
    finally:
        stop_server(srv)
