"""The bot end to end: the real discord.py client against the local stand-in, on the tiny model.

    .venv/bin/python -m pytest tests/bot -q
"""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image

from storage import NotFound
from tests.bot.conftest import until
from tests.bot.standin import button_labels

ALICE, BOB = "1001", "2002"
EPHEMERAL = 64


def is_final(message) -> bool:
    return bool(message and message["attachments"] and message["components"])


async def final_of(st, interaction, timeout=60):
    """The original response once it holds the result (picture and buttons)."""
    return await st.wait_for(lambda: (m := st.original(interaction)) and is_final(m) and m, timeout)


def ids_in(message) -> list[str]:
    return message["content"].split("ids: ", 1)[1].split("\n", 1)[0].replace("`", "").split()


async def answer(st, interaction, text="", timeout=30):
    """The original response once its content holds `text`."""
    return await st.wait_for(lambda: (m := st.original(interaction)) and text in m["content"] and m["content"] and m,
                             timeout)


async def imagine(st, **options):
    options.setdefault("steps", 3)
    it = await st.slash("imagine", **options)
    return it, await final_of(st, it)


# ---- /imagine --------------------------------------------------------------------------------------


def test_imagine_defers_shows_queue_and_progress_then_a_grid_with_buttons(discord_run):
    async def scenario(d):
        st = d.standin
        assert {c["name"] for c in st.commands} == {"imagine", "reproduce", "vary", "info", "history", "delete",
                                                    "queue", "cancel", "private", "server", "settings", "words"}
        imagine_cmd = next(c for c in st.commands if c["name"] == "imagine")
        assert imagine_cmd["description"] and all(o["description"] for o in imagine_cmd["options"])
        aspect = next(o for o in imagine_cmd["options"] if o["name"] == "aspect")
        assert {c["value"] for c in aspect["choices"]} >= {"1:1", "3:2", "2:3", "16:9"}

        sent = time.monotonic()
        it = await st.slash("imagine", prompt="a lighthouse at dusk", count=4, steps=4, seed=7)
        final = await final_of(st, it)
        token = it["token"]
        callback = st.calls_to("POST", f"/interactions/.*/{token}/callback")[0]
        assert callback.payload["type"] == 5 and callback.at - sent < 1.0  # deferred at once
        edits = [c for c in st.calls_to("PATCH", f"/webhooks/.*/{token}/messages/@original") if c.status == 200]
        assert "queue: position 1" in edits[0].payload["content"]
        progress = [e for e in edits if "Carving" in (e.payload.get("content") or "")]
        assert progress and all(e.files for e in progress)  # the picture emerging, as an attachment
        assert "step 16/16" not in progress[0].payload["content"]  # ...from the noise

        ids = ids_in(final)
        assert len(ids) == 4 and "a lighthouse at dusk" in final["content"] and "seed 7" in final["content"]
        grid = Image.open(io.BytesIO(st.attachment_bytes(final)))
        assert grid.size == (256, 256)  # 2x2 of the tiny model's 64 px, shown at 2x
        labels = button_labels(final)
        assert labels[:8] == ["U1", "U2", "U3", "U4", "V1", "V2", "V3", "V4"]
        assert {"V1 strong", "Re-roll", "Info", "Timeline", "Delete"} <= set(labels)
        # the images are in the store, as the web UI's History shows them
        page = d.store.history()
        assert set(ids) <= {r.id for r in page.items}
        rec = d.store.get(ids[0])
        assert rec.owner.source == "discord" and rec.owner.user_id == ALICE
        assert rec.owner.guild_id == st.guild_id and rec.owner.channel_id == st.channel_id

    discord_run(scenario)


def test_progress_edits_are_throttled(discord_run):
    async def scenario(d):
        st = d.standin
        it = await st.slash("imagine", prompt="slow boat", count=2, steps=40)
        await final_of(st, it)
        edits = [c for c in st.calls_to("PATCH", f"/{it['token']}/messages/@original") if c.status == 200]
        steps = [e for e in edits if "Carving" in (e.payload.get("content") or "")]
        gaps = [b.at - a.at for a, b in zip(steps, steps[1:])]
        assert len(steps) < 80 and all(g >= 0.25 for g in gaps), gaps

    discord_run(scenario, progress_interval=0.3)


def test_aspect_count_and_sampler_reach_the_request(discord_run):
    async def scenario(d):
        _, final = await imagine(d.standin, prompt="wide field", aspect="16:9", sampler="euler", count=2)
        rec = d.store.get(ids_in(final)[0])
        assert rec.width > rec.height and rec.image_request["sampler"] == "euler"
        assert rec.width % d.service.limits.multiple == 0 and len(rec.image_ids) == 2

    discord_run(scenario)


# ---- buttons ---------------------------------------------------------------------------------------


def test_u_v_reroll_info_timeline_and_delete_buttons(discord_run):
    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="a red fox", count=4, seed=11)
        ids = ids_in(grid)

        # U2: that image alone, with its id; the stored PNG with its recipe, its 64 px shown at 4x
        click = await st.click(grid, "U2")
        u2 = await final_of(st, click)
        posted = Image.open(io.BytesIO(st.attachment_bytes(u2)))
        stored = Image.open(d.store.get(ids[1]).path)
        assert ids[1] in u2["content"] and posted.size == (256, 256) and posted.text == stored.text
        assert _pixels(posted.resize((64, 64), Image.Resampling.NEAREST)) == _pixels(stored)
        assert "Vary (subtle)" in button_labels(u2)

        # V3: a subtle variation of image 3, recorded as its child
        click = await st.click(grid, "V3")
        v3 = await final_of(st, click)
        child = d.store.get(ids_in(v3)[0])
        assert child.parent_id == ids[2] and child.kind == "vary"
        assert child.image_request["variation_strength"] == pytest.approx(0.2)
        click = await st.click(grid, "V1 strong")
        strong = d.store.get(ids_in(await final_of(st, click))[0])
        assert strong.parent_id == ids[0] and strong.image_request["variation_strength"] == pytest.approx(0.6)

        # re-roll: same prompt, new seed, as many images
        click = await st.click(grid, "Re-roll")
        rerolled = ids_in(await final_of(st, click))
        rec = d.store.get(rerolled[0])
        assert len(rerolled) == 4 and rec.image_request["prompt"] == "a red fox" and rec.seed != 11

        # info: the recipe, only for the one who asked
        click = await st.click(grid, "Info", user_id=BOB, user_name="bob")
        info = await answer(st, click)
        assert info["flags"] & EPHEMERAL and ids[0] in info["content"] and "Seed:** 11" in info["content"]

        # timeline: the image emerging from the noise, animated
        click = await st.click(grid, "Timeline")
        tl = await st.wait_for(lambda: (m := st.original(click)) and len(m["attachments"]) == 4 and m)
        anim = Image.open(io.BytesIO(st.attachment_bytes(tl)))
        assert anim.format in ("GIF", "WEBP") and getattr(anim, "n_frames", 1) > 1

        # delete: someone else's -> refused, nothing deleted; own -> message, files and rows gone
        click = await st.click(grid, "Delete", user_id=BOB, user_name="bob")
        refused = await answer(st, click)
        assert "only your own" in refused["content"] and grid["id"] in st.messages
        path = d.store.get(ids[0]).path
        click = await st.click(grid, "Delete")
        done = await answer(st, click, "Deleted")
        assert done["flags"] & EPHEMERAL and grid["id"] not in st.messages
        assert u2["id"] not in st.messages  # U2's post showed one of them: it went too
        for iid in ids:
            with pytest.raises(NotFound, match="deleted"):
                d.store.get(iid)
        assert not path.exists()

        # a button under a message whose images are gone (still on some client's screen) says so
        click = await st.click(u2, "Info")
        gone = await answer(st, click)
        assert "deleted" in gone["content"]

    discord_run(scenario)


def test_buttons_still_work_after_the_bot_restarts(discord_run):
    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="a tower", count=2)
        await d.restart()
        assert len(st.calls_to("PUT", "/commands")) == 2  # each process syncs once
        click = await st.click(grid, "V2")
        v2 = await final_of(st, click)
        assert d.store.get(ids_in(v2)[0]).parent_id == ids_in(grid)[1]

    discord_run(scenario)


def test_a_reconnect_neither_syncs_again_nor_starts_twice(discord_run):
    async def scenario(d):
        st = d.standin
        await st.invalidate_session()
        await until(lambda: d.bot.ready_count == 2 and st.identifies == 2, what="the second READY")
        assert len(st.calls_to("PUT", "/commands")) == 1 and d.bot.synced == 1
        await imagine(st, prompt="after reconnect")  # and it still works

    discord_run(scenario)


# ---- commands --------------------------------------------------------------------------------------


def test_reproduce_gives_identical_bytes_and_vary_info_delete_commands(discord_run):
    async def scenario(d):
        st = d.standin
        _, first = await imagine(st, prompt="a blue vase", seed=5)
        iid = ids_in(first)[0]
        it = await st.slash("reproduce", id=iid)
        again = await final_of(st, it)
        assert st.attachment_bytes(again) == st.attachment_bytes(first)
        assert d.store.get(ids_in(again)[0]).sha256 == d.store.get(iid).sha256

        it = await st.slash("vary", id=iid, strength=0.5, seed=99)
        varied = d.store.get(ids_in(await final_of(st, it))[0])
        assert varied.parent_id == iid and varied.variation_seed == 99

        it = await st.slash("info", id=iid.upper())
        info = await answer(st, it)
        assert f"`{iid}`" in info["content"] and "a blue vase" in info["content"] and info["flags"] & EPHEMERAL

        it = await st.slash("info", id="nope")
        bad = await answer(st, it)
        assert "not an image id" in bad["content"]

        it = await st.slash("delete", id=iid, user_id=BOB, user_name="bob")
        assert "only your own" in (await answer(st, it))["content"]
        it = await st.slash("delete", id=iid)
        assert "Deleted" in (await answer(st, it))["content"]
        it = await st.slash("reproduce", id=iid)
        msg = await st.wait_message(lambda m: "was deleted" in m["content"])
        assert msg["flags"] & EPHEMERAL

    discord_run(scenario)


def test_history_is_own_images_ephemeral_and_paged(discord_run, monkeypatch):
    import bot.cogs.images

    monkeypatch.setattr(bot.cogs.images, "HISTORY_PER_PAGE", 2)

    async def scenario(d):
        st = d.standin
        _, a = await imagine(st, prompt="green apple", count=3)
        await imagine(st, prompt="someone else's pear", user_id=BOB, user_name="bob")
        it = await st.slash("history")
        page1 = await answer(st, it)
        assert page1["flags"] & EPHEMERAL and "page 1 of 2" in page1["content"] and "pear" not in page1["content"]
        await st.click(page1, "Older ▶")
        page2 = await st.wait_for(lambda: "page 2 of 2" in st.messages[page1["id"]]["content"]
                                  and st.messages[page1["id"]])
        assert ids_in(a)[2] in page2["content"]
        it = await st.slash("history", query="pear")
        none = await answer(st, it)
        assert "No pictures" in none["content"]

    discord_run(scenario)


def test_queue_full_queue_and_cancel(discord_run, monkeypatch, service_factory, store):
    release = threading.Event()

    async def scenario(d):
        st = d.standin
        real = d.service._gen.generate

        def blocked(*a, **kw):
            release.wait(30)
            return real(*a, **kw)

        monkeypatch.setattr(d.service._gen, "generate", blocked)
        first = await st.slash("imagine", prompt="first", steps=2)
        await until(lambda: d.service.status()["running"], what="the first job to run")
        second = await st.slash("imagine", prompt="second", steps=2)
        await answer(st, second, "position 1")
        await st.slash("imagine", prompt="third", steps=2)
        full = await st.wait_message(lambda m: "jobs waiting" in m["content"] and m["flags"] & EPHEMERAL)
        assert "limit per person is 1" in full["content"]

        it = await st.slash("queue")
        q = await answer(st, it)
        assert "first" in q["content"] and "position 1" in q["content"] and "second" in q["content"]

        it = await st.slash("cancel")
        c = await answer(st, it)
        assert "Cancelled 1" in c["content"] and "second" in c["content"]
        await st.wait_for(lambda: "Cancelled" in st.original(second)["content"])
        release.set()
        await final_of(st, first)

    try:
        discord_run(scenario)
    finally:
        release.set()


@pytest.fixture
def service(service_factory, store):  # this module's jobs: at most one waiting per person
    return service_factory(recorder=store, preview_frames=4, queue_per_owner=1)


def test_a_failing_job_tells_the_user(discord_run, monkeypatch):
    async def scenario(d):
        def boom(*a, **kw):
            raise RuntimeError("the UNet caught fire")

        monkeypatch.setattr(d.service._gen, "generate", boom)
        it = await d.standin.slash("imagine", prompt="doomed", steps=2)
        msg = await answer(d.standin, it, "failed")
        assert "Something went wrong on our side" in msg["content"] and "fire" not in msg["content"]

    discord_run(scenario)


# ---- Discord's rules -------------------------------------------------------------------------------


def test_rate_limits_are_waited_out(discord_run):
    async def scenario(d):
        st = d.standin
        st.fail("PATCH", r"/messages/@original", status=429, times=2, retry_after=0.2)
        it, final = await imagine(st, prompt="patience")
        statuses = [c.status for c in st.calls_to("PATCH", f"/{it['token']}/messages/@original")]
        assert statuses.count(429) == 2 and statuses[-1] == 200 and ids_in(final)

    discord_run(scenario)


def test_a_result_after_the_token_expired_is_a_channel_message_mentioning_the_user(discord_run):
    offset = [0.0]

    async def scenario(d):
        st = d.standin
        it = await st.slash("imagine", prompt="a long wait", steps=3)
        await answer(st, it, "queue")
        offset[0] = 16 * 60  # sixteen minutes later, as far as the bot can tell
        msg = await st.wait_message(lambda m: is_final(m) and m["channel_id"] == st.channel_id
                                    and "webhook_id" not in m)
        assert f"<@{ALICE}>" in msg["content"] and "a long wait" in msg["content"]
        assert not is_final(st.original(it))  # the expired token was not used for the result
        send = st.calls_to("POST", f"/channels/{st.channel_id}/messages")[-1]
        assert send.payload["allowed_mentions"] == {"parse": [], "users": [int(ALICE)]}  # the requester alone

    discord_run(scenario, clock=lambda: time.time() + offset[0])


def test_a_deleted_progress_message_does_not_stop_the_result(discord_run):
    async def scenario(d):
        st = d.standin
        it = await st.slash("imagine", prompt="vanishing", steps=30, count=2)
        await answer(st, it, "Carving")
        st.messages.pop(st.originals[it["token"]])  # the user deleted the message
        msg = await st.wait_message(lambda m: is_final(m) and "vanishing" in m["content"])
        assert f"<@{ALICE}>" in msg["content"]

    discord_run(scenario)


def test_attachments_fit_the_upload_limit(discord_run):
    async def scenario(d):
        st = d.standin
        it, final = await imagine(st, prompt="big noise", count=4)
        assert all(a["size"] <= st.attachment_size_limit for a in final["attachments"])
        assert not any(c.status == 413 for c in st.calls)

    discord_run(scenario, standin={"attachment_size_limit": 4000})


def test_direct_messages_and_the_private_preference(discord_run):
    async def scenario(d):
        st = d.standin
        it = await st.slash("imagine", prompt="in a dm", dm=True, steps=2)
        final = await final_of(st, it)
        assert final["channel_id"] == st.dm_channels[ALICE]

        it = await st.slash("private", on=True)
        await answer(st, it, "DM")
        it = await st.slash("imagine", prompt="secret garden", steps=2)
        dm = await st.wait_message(lambda m: is_final(m) and "secret garden" in m["content"])
        assert dm["channel_id"] == st.dm_channels[ALICE] and "webhook_id" not in dm
        ack = st.original(it)
        assert ack["flags"] & EPHEMERAL and "by DM" in ack["content"] and not ack["attachments"]
        assert d.bot.community.is_private(ALICE)

    discord_run(scenario)


# ---- community controls ----------------------------------------------------------------------------


def test_community_controls_need_manage_server_and_are_applied(discord_run):
    async def scenario(d):
        st = d.standin
        it = await st.slash("server", subcommand=["blocked"], action="add", words="spider")
        no = await answer(st, it)
        assert "Manage Server" in no["content"]
        server = next(c for c in st.commands if c["name"] == "server")
        assert str(server["default_member_permissions"]) == str(1 << 5) and server.get("contexts") in (None, [0])

        async def admin(sub, **opts):
            it = await st.slash("server", subcommand=[sub], user_id="9", user_name="mod", manage_guild=True, **opts)
            return (await answer(st, it, "Saved"))["content"]

        assert "spider" in await admin("blocked", action="add", words="Spider, giant snake")
        it = await st.slash("imagine", prompt="a giant SNAKE in a box")
        refused = await st.wait_message(lambda m: "does not allow" in m["content"])
        assert refused["flags"] & EPHEMERAL and "giant snake" in refused["content"]
        assert st.original(it) is None  # the 'thinking...' answer was taken back

        await admin("defaults", max_steps=10)
        await st.slash("imagine", prompt="fine", steps=30)
        assert "10" in (await st.wait_message(lambda m: "steps is more than" in m["content"]))["content"]

        await admin("channels", action="allow", channel=None)
        await st.slash("imagine", prompt="elsewhere", channel_id=st.other_channel_id)
        msg = await st.wait_message(lambda m: "only in" in m["content"])
        assert f"<#{st.channel_id}>" in msg["content"]

        await admin("limits", per_hour=1)
        await imagine(st, prompt="one is fine")
        await st.slash("imagine", prompt="two is too many", steps=2)  # else the default 20 > max_steps 10 answers first
        assert "1 per hour" in (await st.wait_message(lambda m: "in the last hour" in m["content"]))["content"]

        # the settings are in the database: a new process sees them
        from bot.community import Community

        rules = Community(d.store.engine).guild(st.guild_id)
        assert rules.max_per_hour == 1 and rules.max_steps == 10 and "spider" in rules.blocked_words
        assert rules.allowed_channels == (st.channel_id,)

    discord_run(scenario)


def test_per_member_queue_limit(discord_run, monkeypatch):
    release = threading.Event()

    async def scenario(d):
        st = d.standin
        d.bot.community.update_guild(st.guild_id, by="9", max_queued=1)
        real = d.service._gen.generate
        monkeypatch.setattr(d.service._gen, "generate", lambda *a, **kw: (release.wait(30), real(*a, **kw))[1])
        first = await st.slash("imagine", prompt="one", steps=2)
        await until(lambda: d.service.status()["running"], what="the job to run")
        await st.slash("imagine", prompt="two", steps=2)
        msg = await st.wait_message(lambda m: "at once" in m["content"])
        assert "1 job waiting or running" in msg["content"] and "/cancel" in msg["content"]
        release.set()
        await final_of(st, first)

    try:
        discord_run(scenario)
    finally:
        release.set()


def test_no_permission_to_post_in_the_channel_falls_back_to_a_dm(discord_run):
    offset = [0.0]

    async def scenario(d):
        st = d.standin
        st.fail("POST", rf"/channels/{st.channel_id}/messages", status=403, code=50013, message="Missing Permissions")
        it = await st.slash("imagine", prompt="locked channel", steps=2)
        await answer(st, it, "queue")
        offset[0] = 20 * 60
        dm = await st.wait_message(lambda m: is_final(m) and "locked channel" in m["content"])
        assert dm["channel_id"] == st.dm_channels[ALICE]

    discord_run(scenario, clock=lambda: time.time() + offset[0])


# ---- deleting an image takes it off Discord ----------------------------------------------------------


async def noted(d, message):
    """Wait until the bot has recorded that `message` shows its images (just after posting it)."""
    await until(lambda: message["id"] in d.bot.posts.showing(ids_in(message)), what="the post to be noted")


def _pixels(im) -> bytes:
    return im.convert("RGB").tobytes()


def test_deleting_an_image_redraws_grids_and_takes_down_its_posts(discord_run):
    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="four pears", count=4, seed=3)
        a, b, c, e = ids_in(grid)
        u2 = await final_of(st, await st.click(grid, "U2"))
        await until(lambda: d.bot.posts.showing([b]).keys() == {grid["id"], u2["id"]}, what="both posts noted")

        it = await st.slash("delete", id=b)
        await answer(st, it, "Deleted")
        # the post of b alone is gone -- by its channel, not the (short-lived) interaction token
        assert u2["id"] not in st.messages
        assert st.calls_to("DELETE", rf"/channels/{u2['channel_id']}/messages/{u2['id']}")
        # the grid shows the other three, with their ids, buttons and a note of what went
        g = st.messages[grid["id"]]
        assert ids_in(g) == [a, c, e] and f"Deleted by its owner: `{b}`" in g["content"]
        labels = button_labels(g)
        assert labels[:6] == ["U1", "U2", "U3", "V1", "V2", "V3"] and "U4" not in labels
        pic = Image.open(io.BytesIO(st.attachment_bytes(g)))
        assert pic.size == (256, 256)  # 2x2 of 64 px, shown at 2x
        top_right = pic.crop((128, 0, 256, 128)).resize((64, 64), Image.Resampling.NEAREST)
        assert _pixels(top_right) == _pixels(Image.open(d.store.get(c).path))  # c moved up
        assert d.bot.posts.showing([b]) == {}
        assert d.bot.posts.showing([a])[grid["id"]].image_ids == (a, c, e)

        # the redrawn grid's buttons act on what it now shows
        u = await final_of(st, await st.click(g, "U2"))
        assert ids_in(u) == [c]
        await noted(d, u)
        # its ❌ deletes the rest: the grid goes, and so does the post of c alone
        click = await st.click(g, "Delete")
        await answer(st, click, "Deleted")
        assert grid["id"] not in st.messages and u["id"] not in st.messages
        assert d.bot.posts.showing([a, b, c, e]) == {}

    discord_run(scenario)


def test_delete_copes_with_posts_already_gone_or_out_of_reach(discord_run):
    async def scenario(d):
        st = d.standin
        _, one = await imagine(st, prompt="lonely pear")
        (x,) = ids_in(one)
        await noted(d, one)
        st.messages.pop(one["id"])  # a moderator deleted the post already
        it = await st.slash("delete", id=x)
        await answer(st, it, "Deleted")
        assert d.bot.posts.showing([x]) == {}

        _, pair = await imagine(st, prompt="two plums", count=2)
        p, q = ids_in(pair)
        await noted(d, pair)
        for method in ("PATCH", "DELETE"):  # the bot lost access to the channel
            st.fail(method, rf"/channels/\d+/messages/{pair['id']}$", status=403, code=50013,
                    message="Missing Permissions")
        it = await st.slash("delete", id=p)
        await answer(st, it, "Deleted")
        assert pair["id"] in st.messages and d.bot.posts.showing([p]) == {}  # left as it was; p's rows gone
        with pytest.raises(NotFound, match="deleted"):
            d.store.get(p)
        it = await st.slash("delete", id=q)  # access is back: the post of q is still known, and goes
        await answer(st, it, "Deleted")
        assert pair["id"] not in st.messages and d.bot.posts.showing([q]) == {}

        # a result sent by DM is reached through the DM channel
        _, dm = await imagine(st, prompt="a private plum", dm=True)
        assert dm["channel_id"] == st.dm_channels[ALICE]
        await noted(d, dm)
        it = await st.slash("delete", id=ids_in(dm)[0])
        await answer(st, it, "Deleted")
        assert dm["id"] not in st.messages

    discord_run(scenario)


# ---- /history paging survives a restart --------------------------------------------------------------


def test_history_pages_still_turn_after_a_restart(discord_run, monkeypatch):
    import bot.cogs.images

    monkeypatch.setattr(bot.cogs.images, "HISTORY_PER_PAGE", 2)

    async def scenario(d):
        st = d.standin
        _, apples = await imagine(st, prompt="green apple", count=3)
        await imagine(st, prompt="apple pie", user_id=BOB, user_name="bob")
        await imagine(st, prompt="a red car")
        it = await st.slash("history", query="apple")
        page1 = await answer(st, it, "page 1 of 2")
        older = next(c for row in page1["components"] for c in row["components"] if c["label"] == "Older ▶")
        assert older["custom_id"] == "statuary:h:2:apple"  # the page and the query travel in the button

        await d.restart()  # nothing of the first process's views is left
        await st.click(page1, "Older ▶")
        page2 = await st.wait_for(lambda: "page 2 of 2" in st.messages[page1["id"]]["content"]
                                  and st.messages[page1["id"]])
        assert ids_in(apples)[2] in page2["content"] and page2["flags"] & EPHEMERAL
        assert "car" not in page2["content"] and "pie" not in page2["content"]
        await st.click(page2, "◀ Newer")
        again = await st.wait_for(lambda: "page 1 of 2" in st.messages[page1["id"]]["content"]
                                  and st.messages[page1["id"]])
        assert ids_in(apples)[0] in again["content"] and ids_in(apples)[2] not in again["content"]

        # the buttons name no user: whoever clicks sees their own pictures only (Discord shows the
        # ephemeral answer to one person anyway)
        await st.click(again, "Older ▶", user_id=BOB, user_name="bob")
        bobs = await st.wait_for(lambda: "pie" in st.messages[page1["id"]]["content"] and st.messages[page1["id"]])
        assert "page 1 of 1" in bobs["content"] and not any(i in bobs["content"] for i in ids_in(apples))
        assert bobs["components"] == []  # one page: no buttons

    discord_run(scenario)


def test_words_with_a_checkpoint_that_has_no_word_list_says_so(discord_run):
    async def scenario(d):
        it = await d.standin.slash("words", search="cat")
        said = await d.standin.wait_for(lambda: d.standin.original(it))
        assert said["content"].startswith("This model has no word list") and said["flags"] & EPHEMERAL

    discord_run(scenario)
