"""/imagine without a guidance draws with the model's own (its folder's defaults.json), and says so
in the option's description; one typed in is used as typed."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.bot.conftest import model_service
from tests.bot.test_bot import final_of


@pytest.fixture
def service(store, tmp_path, tiny_model_dir):
    folder = tmp_path / "guided"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "defaults.json").write_text(json.dumps({"guidance": 12}))
    svc = model_service(folder, store)
    yield svc
    svc.close()


def test_imagine_without_a_guidance_draws_with_the_models_own(discord_run):
    async def scenario(d):
        st = d.standin
        assert d.service.limits.default_guidance == 12.0
        imagine = next(c for c in st.commands if c["name"] == "imagine")
        option = next(o for o in imagine["options"] if o["name"] == "guidance")
        assert not option.get("required") and "the model's own default if empty" in option["description"]

        final = await final_of(st, await st.slash("imagine", prompt="a cat", steps=2, seed=3))
        assert final.get("attachments") and "guidance 12" in final["content"]
        assert d.store.history().items[0].image_request["guidance"] == 12.0   # recorded as made

        final = await final_of(st, await st.slash("imagine", prompt="a cat", steps=2, seed=3, guidance=2.5))
        assert final.get("attachments")
        assert d.store.history().items[0].image_request["guidance"] == 2.5

    discord_run(scenario)
