"""Remix: the Edit prompt button's modal, through the real client and the stand-in's modals."""

from __future__ import annotations

from tests.bot.test_bot import BOB, EPHEMERAL, final_of, ids_in, imagine
from tests.bot.standin import button_labels


def test_edit_prompt_opens_a_filled_modal_and_makes_a_child_with_the_same_seed(discord_run):
    async def scenario(d):
        st = d.standin
        _, grid = await imagine(st, prompt="a red fox", negative="blurry", count=2, seed=21, sampler="euler")
        ids = ids_in(grid)
        assert "Edit prompt" in button_labels(grid)

        click = await st.click(grid, "Edit prompt", user_id=BOB, user_name="bob")
        modal = await st.wait_for(lambda: st.modal(click))
        fields = {t["label"]: t.get("value") for t in st.text_inputs(modal)}
        assert fields == {"Prompt": "a red fox", "Negative prompt": "blurry"}

        sub = await st.submit_modal(click, {"Prompt": "a blue fox"}, user_id=BOB, user_name="bob")
        result = await final_of(st, sub)
        assert "a blue fox" in result["content"] and len(ids_in(result)) == 2
        child, parent = d.store.get(ids_in(result)[0]), d.store.get(ids[0])
        assert child.parent_id == ids[0] and child.kind == "remix" and child.owner.user_id == BOB
        same = ("seed", "steps", "guidance", "sampler", "width", "height", "negative_prompt")
        assert {k: child.image_request[k] for k in same} == {k: parent.image_request[k] for k in same}
        assert child.image_request["prompt"] == "a blue fox"
        assert d.store.get(ids_in(result)[1]).seed == d.store.get(ids[1]).seed  # image 2 keeps its seed too

    discord_run(scenario)


def test_a_remix_with_only_spaces_or_a_blocked_word_is_refused_and_nothing_queued(discord_run):
    async def scenario(d):
        st = d.standin
        _, final = await imagine(st, prompt="a cat")
        before = len(d.store.history().items)
        click = await st.click(final, "Edit prompt")
        await st.wait_for(lambda: st.modal(click))
        await st.submit_modal(click, {"Prompt": "   "})
        refused = await st.wait_message(lambda m: "prompt:" in m["content"] and "not allowed" in m["content"])
        assert refused["flags"] & EPHEMERAL and "Traceback" not in refused["content"]

        it = await st.slash("server", subcommand=["blocked"], manage_guild=True, action="add", words="dog")
        await st.wait_for(lambda: (m := st.original(it)) and "dog" in m["content"])
        click = await st.click(final, "Edit prompt")
        await st.wait_for(lambda: st.modal(click))
        await st.submit_modal(click, {"Prompt": "a dog"})
        await st.wait_message(lambda m: "does not allow" in m["content"])
        assert len(d.store.history().items) == before

    discord_run(scenario)
