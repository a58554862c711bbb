"""/settings: a member's own /imagine defaults, stored in the database, through the real client."""

from __future__ import annotations

from tests.bot.test_bot import ALICE, BOB, EPHEMERAL, answer, final_of, ids_in


def test_settings_are_shown_saved_used_by_imagine_and_reset(discord_run):
    async def scenario(d):
        st = d.standin
        it = await st.slash("settings")
        shown = await answer(st, it, "Your defaults")
        assert shown["flags"] & EPHEMERAL and "steps: the server's default" in shown["content"]

        it = await st.slash("settings", steps=3, sampler="euler", aspect="16:9", count=2)
        saved = await answer(st, it, "Saved")
        assert "steps: **3**" in saved["content"] and "aspect: **16:9**" in saved["content"]
        # stored in the database: a fresh Community (another process) reads the same
        from bot.community import Community
        assert Community(d.store.engine).member(ALICE).steps == 3

        # /imagine without those options takes them; an option given wins
        it = await st.slash("imagine", prompt="a kite")
        rec = d.store.get(ids_in(await final_of(st, it))[0])
        assert (rec.image_request["steps"], rec.image_request["sampler"]) == (3, "euler")
        assert rec.width > rec.height and len(rec.image_ids) == 2
        it = await st.slash("imagine", prompt="a kite", count=1, aspect="1:1")
        rec = d.store.get(ids_in(await final_of(st, it))[0])
        assert len(rec.image_ids) == 1 and rec.width == rec.height and rec.image_request["steps"] == 3

        # someone else's /imagine is untouched
        it = await st.slash("imagine", prompt="a kite", user_id=BOB, user_name="bob", steps=2)
        rec = d.store.get(ids_in(await final_of(st, it))[0])
        assert rec.image_request["sampler"] == "dpmpp_2m_karras" and rec.width == rec.height

        # private through /settings is /private: the result comes by DM
        it = await st.slash("settings", private=True)
        await answer(st, it, "private: **on**")
        assert d.bot.community.is_private(ALICE)

        # reset: everything back to the server's defaults, private off
        it = await st.slash("settings", reset=True)
        reset = await answer(st, it, "reset")
        assert "steps: the server's default" in reset["content"] and "private: **off**" in reset["content"]
        assert not d.bot.community.is_private(ALICE)
        member = Community(d.store.engine).member(ALICE)
        assert (member.steps, member.sampler, member.aspect, member.count) == (None, None, None, None)

    discord_run(scenario)


def test_a_default_beyond_the_server_maximum_says_where_it_came_from(discord_run):
    async def scenario(d):
        st = d.standin
        it = await st.slash("settings", steps=40)
        await answer(st, it, "Saved")
        it = await st.slash("server", subcommand=["defaults"], manage_guild=True, max_steps=10)
        await answer(st, it)
        before = len(d.store.history().items)
        await st.slash("imagine", prompt="a boat")
        refused = await st.wait_message(lambda m: "more than this server allows" in m["content"])
        assert "your /settings default" in refused["content"] and refused["flags"] & EPHEMERAL
        assert len(d.store.history().items) == before  # nothing queued

    discord_run(scenario)


def test_bad_values_are_refused_in_one_sentence(discord_run):
    async def scenario(d):
        st = d.standin
        # Discord's ranges can be bypassed: a raw payload with steps 0 and an unknown aspect
        await st.slash("settings", aspect="5:1", steps=0)
        refused = await st.wait_message(lambda m: "aspect" in m["content"] and "not allowed" in m["content"])
        assert "use one of 1:1" in refused["content"] and refused["flags"] & EPHEMERAL
        assert "steps: 0 is not allowed; use a whole number from 1 to 150." in refused["content"]
        assert d.bot.community.member(ALICE).aspect is None

    discord_run(scenario)
