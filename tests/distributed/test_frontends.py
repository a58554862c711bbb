"""The unchanged front-ends on the distributed service: `statuary webui` started as the README's
"Scaling out" says (STATUARY_BROKER_URL, DATABASE_URL) and driven by gradio_client; the
discord.py bot, on the local Discord stand-in, with its live progress edits, /queue and
/cancel; jobs run by `statuary worker` processes."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image

from tests.distributed.conftest import ROOT
from tests.storage.conftest import _free_port

pytestmark = pytest.mark.slow


def test_webui_command_serves_generate_and_history_from_the_workers(cluster):
    from gradio_client import Client

    cluster.start_worker()
    cluster.start_worker()
    cluster.wait_workers(2)
    port = _free_port()
    log = open(cluster.logs / "webui.log", "wb")
    web = subprocess.Popen([sys.executable, "-m", "core.cli", "webui", "--port", str(port)], cwd=ROOT,
                           env=cluster.env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert web.poll() is None, cluster.log_text()
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        client = Client(url, verbose=False)
        out = client.predict(prompt="cat face", seed=42, steps=3, count=2, api_name="/generate")
        assert [o["seed"] for o in out] == [42, 43]
        png = httpx.get(url + out[0]["file"], timeout=10)
        assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (64, 64)
        history = client.predict(api_name="/history")
        assert out[0]["id"] in str(history)
        client.close()

        from storage import open_store

        store = open_store(cluster.settings())
        rec = store.get(out[0]["id"])
        assert rec.owner.source == "web" and rec.status == "done"
        store.close()
    finally:
        web.terminate()
        web.wait(30)


def test_discord_bot_progress_queue_and_cancel_through_the_workers(cluster):
    from bot.client import StatuaryBot
    from core.distributed.service import CeleryJobService
    from storage import open_store
    from tests.bot.conftest import until
    from tests.bot.standin import DiscordStandin
    from tests.bot.test_bot import answer, final_of, ids_in

    cluster.start_worker()
    cluster.wait_workers(1)
    settings = cluster.settings()
    store = open_store(settings)
    service = CeleryJobService(settings, store)

    async def main() -> None:
        st = DiscordStandin()
        await st.start()
        bot = StatuaryBot(service, store, progress_interval=0.1, guild_ready_timeout=0.05)
        task = asyncio.create_task(bot.start(st.token))
        try:
            await until(bot.is_ready, what="the bot to be ready")
            it = await st.slash("imagine", prompt="a lighthouse", count=2, steps=6, seed=7)
            final = await final_of(st, it, timeout=120)
            token = it["token"]
            edits = [c for c in st.calls_to("PATCH", f"/webhooks/.*/{token}/messages/@original") if c.status == 200]
            assert any("Carving" in (e.payload.get("content") or "") and e.files for e in edits)  # live previews
            ids = ids_in(final)
            assert len(ids) == 2 and store.get(ids[0]).owner.source == "discord"

            long = await st.slash("imagine", prompt="a long one", steps=50, count=4, seed=8)  # the bot allows 50 steps
            await answer(st, long, "Carving", timeout=120)
            waiting = await st.slash("imagine", prompt="waits", steps=2, seed=9)
            await answer(st, waiting, "position 1", timeout=60)
            q = await st.slash("queue")
            assert "a long one" in (await answer(st, q, "Waiting"))["content"]
            c = await st.slash("cancel", all=True)
            assert "Cancelled 2 job(s)" in (await answer(st, c, "Cancelled"))["content"]
            await answer(st, long, "Cancelled", timeout=60)
            await answer(st, waiting, "Cancelled", timeout=60)
        finally:
            await bot.close()
            await asyncio.wait_for(task, 10)
            await st.stop()

    try:
        asyncio.run(main())
    finally:
        service.close()
        store.close()
