"""/imagine with an attached picture (img2img), through the real client and the stand-in's attachments."""

from __future__ import annotations

import hashlib
import io

from PIL import Image

from tests.bot.standin import Upload
from tests.bot.test_bot import EPHEMERAL, final_of, ids_in


def png(size, colour=(200, 40, 40), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour if mode == "RGB" else 128).save(buf, format="PNG")
    return buf.getvalue()


def test_an_attached_picture_is_repainted_keeping_its_shape(discord_run):
    async def scenario(d):
        st = d.standin
        data = png((96, 48))
        it = await st.slash("imagine", prompt="a red barn", steps=4, image=Upload(data, "barn.png"), strength=0.5)
        rec = d.store.get(ids_in(await final_of(st, it))[0])
        r = rec.image_request
        assert r["init_image_sha256"] == hashlib.sha256(data).hexdigest() and r["strength"] == 0.5
        assert rec.width == 2 * rec.height  # the picture's 2:1, at about the model's area
        # an aspect given wins over the picture's shape
        it = await st.slash("imagine", prompt="a red barn", steps=2, image=Upload(data, "barn.png"), aspect="1:1")
        rec = d.store.get(ids_in(await final_of(st, it))[0])
        assert rec.width == rec.height and rec.image_request["strength"] == 0.6
        # the record reproduces like any other (the init image is stored by its hash)
        assert d.store.verify(rec.id, d.service).exact

    discord_run(scenario)


def test_pictures_beyond_the_core_limits_are_refused_before_queueing(discord_run):
    async def scenario(d):
        st = d.standin
        cases = [
            (Upload(b"hello", "notes.txt", "text/plain"), "attach a PNG, JPEG or WebP picture"),
            (Upload(png((4100, 4100), mode="L"), "huge.png"), "at most 16777216 pixels"),
            (Upload(b"\x89PNG\r\n\x1a\n not really", "broken.png"), "give a readable PNG, JPEG or WebP image"),
        ]
        for upload, why in cases:
            await st.slash("imagine", prompt="a red barn", image=upload)
            refused = await st.wait_message(lambda m: why in m["content"])
            assert refused["flags"] & EPHEMERAL and "Traceback" not in refused["content"], refused["content"]
        # nothing was queued or recorded; the huge file was never downloaded
        assert d.store.history().total == 0 and d.store.jobs(("queued", "running", "done", "failed")).total == 0
        big = [a for a, b in st.attachments.items() if len(b) > 10_000]
        broken = [a for a, b in st.attachments.items() if b.startswith(b"\x89PNG\r\n\x1a\n not")]
        assert big and not st.calls_to("GET", f"/attachments/{big[0]}/")
        assert st.calls_to("GET", f"/attachments/{broken[0]}/")  # read, then refused by the core's check

    discord_run(scenario)
