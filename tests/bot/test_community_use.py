"""The bot tried as a community would (issue 13): simultaneous commands against per-member
limits, prompts that try to ping or format, over-long and off-menu option values, restarts in
the middle of a job, privacy in /queue, blocked words in disguise. The real discord.py client
against the stand-in, on the tiny model.

    .venv/bin/python -m pytest tests/bot/test_community_use.py -q
"""

from __future__ import annotations

import asyncio
import threading
import time

from core.jobs import Owner
from tests.bot.conftest import until
from tests.bot.test_bot import ALICE, BOB, EPHEMERAL, answer, final_of, ids_in, imagine, is_final


def _generations(store, user_id=ALICE) -> int:
    from sqlalchemy import func, select

    from storage.models import Generation

    with store.engine.connect() as c:
        return c.scalar(select(func.count(Generation.id)).where(Generation.owner_user_id == user_id))


def _statuses(store) -> list[str]:
    from sqlalchemy import select

    from storage.models import Generation

    with store.engine.connect() as c:
        return list(c.scalars(select(Generation.status)))


def _block(monkeypatch, service, release: threading.Event) -> None:
    real = service._gen.generate
    monkeypatch.setattr(service._gen, "generate", lambda *a, **kw: (release.wait(30), real(*a, **kw))[1])


# ---- 1. per-member limits hold against simultaneous commands -------------------------------------------


def test_simultaneous_imagines_cannot_beat_the_queued_limit(discord_run, monkeypatch):
    release = threading.Event()

    async def scenario(d):
        st = d.standin
        d.bot.community.update_guild(st.guild_id, by="9", max_queued=1)
        _block(monkeypatch, d.service, release)
        first, second = await asyncio.gather(st.slash("imagine", prompt="one", steps=2),
                                             st.slash("imagine", prompt="two", steps=2))
        refused = await st.wait_message(lambda m: "at once" in m["content"])
        assert refused["flags"] & EPHEMERAL and "allows 1 at once" in refused["content"]
        await asyncio.sleep(0.3)
        assert _generations(d.store) == 1 and len(d.service.handles_of(Owner("discord", ALICE))) == 1
        release.set()
        await st.wait_for(lambda: any(is_final(st.original(i) or {}) for i in (first, second)))

    try:
        discord_run(scenario)
    finally:
        release.set()


def test_simultaneous_imagines_and_v_clicks_cannot_beat_the_hourly_limit(discord_run):
    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="four pears", count=4)
        d.bot.community.update_guild(st.guild_id, by="9", max_per_hour=3)  # one used already
        await asyncio.gather(*(st.slash("imagine", prompt=f"pear {n}", steps=2) for n in range(2)),
                             *(st.click(grid, f"V{n}") for n in range(1, 5)))
        await st.wait_for(lambda: sum("in the last hour" in m["content"] for m in st.messages.values()) == 4)
        await until(lambda: not d.service.handles_of(Owner("discord", ALICE)), what="the jobs to end")
        assert _generations(d.store) == 3

    discord_run(scenario)


# ---- 2. a prompt cannot ping anyone or format the bot's messages ---------------------------------------

MALLORY = "456789012345678901"


def test_a_prompt_cannot_ping_or_format_even_on_the_post_after_expiry(discord_run):
    offset = [0.0]
    prompt = f"hey <@{MALLORY}> and @everyone ||spoiler|| **loud**"

    async def scenario(d):
        st = d.standin
        it = await st.slash("imagine", prompt=prompt, negative=f"<@&{MALLORY}>", steps=3)
        await answer(st, it, "queue")
        edit = st.calls_to("PATCH", f"/{it['token']}/messages/@original")[0]
        assert f"<@{MALLORY}>" not in edit.payload["content"] and "\\|\\|spoiler\\|\\|" in edit.payload["content"]
        assert edit.payload["allowed_mentions"] == {"parse": []}  # the client's default: nobody
        offset[0] = 16 * 60  # the token expires: the result is a channel message mentioning the requester
        msg = await st.wait_message(lambda m: is_final(m) and "webhook_id" not in m)
        send = st.calls_to("POST", f"/channels/{st.channel_id}/messages")[-1]
        assert send.payload["allowed_mentions"]["parse"] == [] and list(map(str, send.payload["allowed_mentions"]["users"])) == [ALICE]
        assert msg["content"].startswith(f"<@{ALICE}>")
        for raw in (f"<@{MALLORY}>", f"<@&{MALLORY}>", "@everyone", "||spoiler||", "**loud**"):
            assert raw not in msg["content"], raw
        assert "\\*\\*loud\\*\\*" in msg["content"]

        it = await st.slash("history")  # and wherever else the prompt is echoed
        listed = (await answer(st, it, "Your pictures"))["content"]
        assert "\\|\\|spoiler" in listed and f"<@{MALLORY}>" not in listed

    discord_run(scenario, clock=lambda: time.time() + offset[0])


# ---- 3. a long id gets a short answer; 4. deleting a deleted id is not 'Deleted' ---------------------------


def test_a_long_id_gets_an_answer_that_fits_and_echoes_a_short_form(discord_run):
    async def scenario(d):
        st = d.standin
        for name in ("info", "reproduce", "vary", "delete"):
            option = next(o for c in st.commands if c["name"] == name for o in c["options"] if o["name"] == "id")
            assert option["max_length"] <= 40, name
        long_id = "x" * 2500  # what a client that ignores max_length (or a raw API call) sends
        for name in ("info", "reproduce", "delete"):
            await st.slash(name, id=long_id)
            msg = await st.wait_message(lambda m: "is not an image id" in m["content"] and m["id"] not in seen)
            seen.add(msg["id"])
            assert len(msg["content"]) < 200 and "x" * 30 not in msg["content"] and "2500 characters" in msg["content"]
        assert not [c for c in st.calls if c.status == 400]  # Discord refused nothing

    seen: set[str] = set()
    discord_run(scenario)


def test_deleting_an_already_deleted_image_does_not_say_deleted(discord_run):
    async def scenario(d):
        st = d.standin
        _, one = await imagine(st, prompt="a pear")
        (iid,) = ids_in(one)
        it = await st.slash("delete", id=iid)
        await answer(st, it, "Deleted")
        for who in (ALICE, BOB):
            it = await st.slash("delete", id=iid, user_id=who, user_name=who)
            again = await answer(st, it, "already")
            assert "Deleted" not in again["content"] and iid in again["content"] and again["flags"] & EPHEMERAL

    discord_run(scenario)


# ---- 5. values that bypass Discord's choices and ranges are validated like everything else -----------------


def test_values_outside_discords_choices_get_the_request_validation_sentence(discord_run):
    async def scenario(d):
        st = d.standin
        cases = [({"aspect": "banana"}, "aspect: 'banana' is not allowed; use one of 1:1, 3:2"),
                 ({"aspect": "1:0"}, "aspect: '1:0' is not allowed; use one of 1:1"),
                 ({"sampler": "turbo"}, "sampler: 'turbo' is not allowed; use one of dpmpp_2m_karras"),
                 ({"size": 10}, "size: 10 is not allowed; use a whole number from 64 to 4096"),
                 ({"guidance": -3.0}, "guidance: -3.0 is not allowed; use a finite number from 0 to 30")]
        for options, sentence in cases:
            await st.slash("imagine", prompt="a fox", steps=2, **options)
            msg = await st.wait_message(lambda m: sentence in m["content"])
            assert msg["flags"] & EPHEMERAL
        await st.slash("history", query="q" * 91)
        msg = await st.wait_message(lambda m: "query: a text of 91 characters is not allowed; use at most 82 characters"
                                    in m["content"])
        assert msg["flags"] & EPHEMERAL
        assert not [m for m in st.messages.values() if "went wrong" in m["content"]]
        assert _generations(d.store) == 0  # nothing was queued

    discord_run(scenario)


# ---- 6. a result made while the bot restarts is still posted; no progress frame outlives its token --------


def test_a_job_finished_while_the_bot_restarts_is_delivered_when_it_starts(discord_run, monkeypatch):
    release = threading.Event()

    async def scenario(d):
        st = d.standin
        _block(monkeypatch, d.service, release)
        it = await st.slash("imagine", prompt="patient owl", steps=3)
        await answer(st, it, "queue")
        await until(lambda: d.service.status()["running"], what="the job to run")

        async def while_down():
            assert "restarted" in st.original(it)["content"]  # not a stale 'step n/m'
            release.set()
            await until(lambda: d.store.history().total == 1, what="the job to finish with no bot")

        await d.restart(between=while_down)
        final = await final_of(st, it)  # the original response, through its (still valid) token
        (iid,) = ids_in(final)
        assert "patient owl" in final["content"] and d.store.get(iid).owner.user_id == ALICE
        await until(lambda: d.bot.posts.showing([iid]), what="the post to be noted")
        await until(lambda: d.bot.pending.all() == [], what="the delivery to be paid")
        await d.restart()  # owed nothing: a second start posts nothing twice
        await asyncio.sleep(0.5)
        assert sum(iid in m["content"] for m in st.messages.values()) == 1

    try:
        discord_run(scenario)
    finally:
        release.set()


def test_a_restart_just_after_the_result_is_shown_leaves_the_result_up(discord_run):
    """The bot restarts after the result's edit landed but before the job's follower finished its
    bookkeeping (here: the database is slow to forget the owed delivery). The picture that is up
    must stay up: no "restarted while this was being made" over a finished result (CI caught it
    once, by chance, in the restart test of test_bot.py)."""
    forgetting, release = threading.Event(), threading.Event()

    async def scenario(d):
        st = d.standin
        real_forget = d.bot.pending.forget

        def slow_forget(generation_id):
            forgetting.set()
            release.wait(30)
            real_forget(generation_id)

        d.bot.pending.forget = slow_forget
        it, grid = await imagine(st, prompt="a tower", count=2)
        ids, final_text = ids_in(grid), grid["content"]
        await until(forgetting.is_set, what="the follower to reach its bookkeeping")
        message_id = grid["id"]
        await d.restart()
        release.set()
        await until(lambda: d.bot.pending.all() == [], what="the delivery to be paid")
        edits = [c.payload or {} for c in st.calls if c.method == "PATCH" and c.path.endswith("/@original")
                 and st.originals.get(c.path.split("/")[-3]) == message_id]
        shown = [e["content"] for e in edits if "content" in e]
        assert shown and all("restarted" not in text for text in shown[shown.index(final_text):]), shown
        assert ids_in(st.messages[message_id]) == ids and is_final(st.messages[message_id])

    try:
        discord_run(scenario)
    finally:
        release.set()


def test_a_failure_during_a_restart_is_reported_and_a_late_result_goes_to_the_channel(discord_run, monkeypatch):
    offset = [0.0]
    release = threading.Event()

    async def scenario(d):
        st = d.standin

        def doomed(*a, **kw):
            release.wait(30)
            raise RuntimeError("the UNet caught fire")

        monkeypatch.setattr(d.service._gen, "generate", doomed)
        it = await st.slash("imagine", prompt="slow snail", steps=3)
        await answer(st, it, "queue")
        await until(lambda: d.service.status()["running"], what="the job to run")

        async def while_down():
            offset[0] = 16 * 60  # the token expires while the bot is away
            release.set()
            await until(lambda: _statuses(d.store) == ["failed"], what="the job to fail with no bot")

        await d.restart(between=while_down, clock=lambda: time.time() + offset[0])
        msg = await st.wait_message(lambda m: "failed" in m["content"] and "webhook_id" not in m)
        assert msg["content"].startswith(f"<@{ALICE}>") and "slow snail" in msg["content"]
        assert "Something went wrong on our side" in msg["content"] and "restarted" in st.original(it)["content"]

    try:
        discord_run(scenario)
    finally:
        release.set()


def test_a_progress_message_gets_a_final_note_before_its_token_expires(discord_run, monkeypatch):
    offset = [0.0]
    release = threading.Event()

    async def scenario(d):
        st = d.standin
        real = d.service._gen.generate

        def slow(request, on_step=None, **kw):  # steps 0.25 s apart (each shown), waits at step 2 until released
            def step(traj, n, total):
                time.sleep(0.25)
                on_step(traj, n, total)
                if n == 2:
                    release.wait(30)
            return real(request, on_step=step, **kw)

        monkeypatch.setattr(d.service._gen, "generate", slow)
        it = await st.slash("imagine", prompt="a long night", steps=6)
        await answer(st, it, "Carving")  # then it waits at step 2
        offset[0] = 14 * 60  # fourteen minutes in: the token has one minute (less our margin) to live
        release.set()
        note = await answer(st, it, "posted in this channel")
        assert "step" not in note["content"] and not note["attachments"]
        msg = await st.wait_message(lambda m: is_final(m) and "webhook_id" not in m)
        assert "a long night" in msg["content"] and f"<@{ALICE}>" in msg["content"]
        assert "posted in this channel" in st.original(it)["content"]  # the note stays: nothing overwrote it

    try:
        discord_run(scenario, clock=lambda: time.time() + offset[0])
    finally:
        release.set()


# ---- 7. /queue keeps a private member's prompt private ------------------------------------------------


def test_queue_does_not_show_a_private_members_prompt(discord_run, monkeypatch):
    release = threading.Event()

    async def scenario(d):
        st = d.standin
        _block(monkeypatch, d.service, release)
        it = await st.slash("private", on=True, user_id=BOB, user_name="bob")
        await answer(st, it, "DM")
        await st.slash("imagine", prompt="bob's secret garden", steps=2, user_id=BOB, user_name="bob")
        await until(lambda: d.service.status()["running"], what="bob's job to run")
        it = await st.slash("queue")
        shown = (await answer(st, it, "Now"))["content"]
        assert "secret garden" not in shown and "a private job" in shown
        it = await st.slash("queue", user_id=BOB, user_name="bob")  # bob sees his own
        assert "secret garden" in (await answer(st, it, "Now"))["content"]
        release.set()

    try:
        discord_run(scenario)
    finally:
        release.set()


# ---- 8. blocked words in disguise, and in the negative prompt -----------------------------------------


def test_blocked_words_are_found_in_plural_lookalike_wide_and_negative_forms(discord_run):
    async def scenario(d):
        st = d.standin
        d.bot.community.update_guild(st.guild_id, by="9", blocked_words=["cat"])
        tries = [{"prompt": "two cats"}, {"prompt": "a \u0441at on a mat"}, {"prompt": "a \uff23\uff21\uff34"},
                 {"prompt": "a dog", "negative": "cat"}]
        for n, options in enumerate(tries, 1):
            await st.slash("imagine", steps=2, **options)
            await st.wait_for(lambda: sum("does not allow “cat”" in m["content"] for m in st.messages.values()) == n)
        _, ok = await imagine(st, prompt="a category of concatenated dogs", negative="grey fog")  # whole words only
        d.bot.community.update_guild(st.guild_id, by="9", blocked_words=["fogs"])
        await st.click(ok, "Re-roll")  # a stored request's negative prompt is checked too
        await st.wait_message(lambda m: "does not allow “fogs”" in m["content"])
        assert _generations(d.store) == 1

    discord_run(scenario)


# ---- 9. nothing slow runs on the event loop; clicks are acknowledged before the database is read ------------


def test_slow_database_and_encoding_never_stall_the_event_loop_or_the_acknowledgement(discord_run, monkeypatch):
    import bot.cogs.images
    import bot.delivery

    monkeypatch.setattr(bot.cogs.images, "HISTORY_PER_PAGE", 1)
    # A call that blocked the loop would stall it for all of SLOW; a busy machine (the suite beside a
    # training run) starves it for up to ~0.6 s. 1.5 s keeps the two apart.
    SLOW = 1.5

    def slowly(obj, name):
        real = getattr(obj, name)
        monkeypatch.setattr(obj, name, lambda *a, **kw: (time.sleep(SLOW), real(*a, **kw))[1])

    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="two owls", count=2)
        d.bot.community._guilds.clear()  # members and servers not seen yet...
        d.bot.community._private.clear()
        for obj, name in ((d.bot.community, "_read"), (d.store, "_read"), (bot.delivery.render, "encode_within")):
            slowly(obj, name)  # ...and a database (and PNG encoder) that take their time
        gaps, stop = [0.0], asyncio.Event()

        async def ticker():  # the longest the event loop went without running us
            last = time.monotonic()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps[0], last = max(gaps[0], now - last), now

        tick = asyncio.create_task(ticker())
        it = await st.slash("history")
        page1 = await answer(st, it, "page 1 of 2")
        for label, message in (("Info", grid), ("V1", grid), ("Older ▶", page1)):
            click = await st.click(message, label)
            sent = time.monotonic()
            callback = await st.wait_for(lambda: st.calls_to("POST", f"/{click['token']}/callback"))
            assert callback[0].at - sent < SLOW, f"{label} was acknowledged only after the database answered"
        await st.slash("server", subcommand=["blocked"], user_id="9", user_name="mod", manage_guild=True,
                       action="add", words="bat")
        await st.slash("imagine", prompt="one more owl", steps=6)
        await st.wait_message(lambda m: is_final(m) and "one more owl" in m["content"])
        stop.set()
        await tick
        assert gaps[0] < SLOW * 0.7, f"the event loop stalled for {gaps[0]:.2f} s"

    discord_run(scenario)


# ---- 10. progress text does not mix one image's number with the whole job's step count ----------------------


def test_progress_of_several_pictures_counts_steps_over_all_of_them(discord_run):
    async def scenario(d):
        st = d.standin
        it, _ = await imagine(st, prompt="three bees", count=3, steps=4)
        texts = [c.payload["content"] for c in st.calls_to("PATCH", f"/{it['token']}/messages/@original")
                 if "Carving" in (c.payload.get("content") or "")]
        assert texts and all("3 pictures — step" in t and "of 12 in all" in t for t in texts), texts

    discord_run(scenario, progress_interval=0.0)


# ---- 15. /history can show the jobs that ended without pictures, with their reasons -------------------------


def test_history_shows_failed_and_cancelled_jobs_with_reasons(discord_run, monkeypatch):
    async def scenario(d):
        st = d.standin

        def boom(*a, **kw):
            raise RuntimeError("the UNet caught fire")

        monkeypatch.setattr(d.service._gen, "generate", boom)
        it = await st.slash("imagine", prompt="a doomed comet", steps=2)
        await answer(st, it, "failed")
        it = await st.slash("history", status="failed")
        shown = (await answer(st, it, "comet"))["content"]
        assert "Something went wrong on our side" in shown and "failed" in shown and "fire" not in shown
        it = await st.slash("history", status="undone", user_id=BOB, user_name="bob")
        assert "no failed, interrupted or cancelled jobs" in (await answer(st, it, "no"))["content"]

    discord_run(scenario)
