"""The sampler choices of /imagine and /settings follow the loaded model: on a schedule that runs
to pure noise (the default model's: cosine, zero terminal SNR) Karras spacing is not offered, the
model's default is named, and a value that bypasses the choices gets the core's sentence."""

from __future__ import annotations

import pytest

from tests.bot.conftest import model_service
from tests.bot.test_bot import ALICE, EPHEMERAL, final_of


@pytest.fixture
def service(service_factory, store, tmp_path):
    from tests.tiny_model import build_tiny_model

    folder = build_tiny_model(tmp_path / "zero-snr", zero_snr=True)
    svc = model_service(folder, store)
    yield svc
    svc.close()


def choices(st, command: str) -> list[dict]:
    cmd = next(c for c in st.commands if c["name"] == command)
    return next(o for o in cmd["options"] if o["name"] == "sampler")["choices"]


def test_only_the_samplers_that_suit_the_model_are_offered_and_bypassing_them_is_refused(discord_run):
    async def scenario(d):
        st, limits = d.standin, d.service.limits
        assert limits.default_sampler == "ddim" and "dpmpp_2m_karras" not in limits.samplers
        for command in ("imagine", "settings"):
            offered = choices(st, command)
            assert [c["value"] for c in offered] == list(limits.samplers)
            assert {c["value"]: c["name"] for c in offered}["ddim"] == "ddim (this model's default)"

        # An old client or a raw API call can still send Karras: one sentence, nothing saved.
        await st.slash("settings", sampler="dpmpp_2m_karras")
        refused = await st.wait_message(lambda m: "sampler" in m["content"] and "not allowed" in m["content"])
        assert refused["flags"] & EPHEMERAL
        assert "Karras spacing does not suit this model's noise schedule" in refused["content"]
        assert d.bot.community.member(ALICE).sampler is None

        before = len(d.store.history().items)
        await st.slash("imagine", prompt="a cat", sampler="dpmpp_2m_karras", steps=2)
        refused = await st.wait_message(lambda m: "dpmpp_2m_karras" in m["content"] and "not allowed" in m["content"]
                                        and "/settings" not in m["content"])
        assert "use one of dpmpp_2m" in refused["content"] and "Traceback" not in refused["content"]
        assert len(d.store.history().items) == before            # nothing queued

        final = await final_of(st, await st.slash("imagine", prompt="a cat", steps=2, seed=3))
        assert final.get("attachments")
        assert d.store.history().items[0].image_request["sampler"] == "ddim"   # the model's default, recorded

    discord_run(scenario)


def test_a_saved_sampler_that_does_not_suit_a_new_model_gives_way_to_its_default_with_a_note(discord_run):
    async def scenario(d):
        st = d.standin
        # Saved while the server ran a Stable Diffusion checkpoint; the operator has since switched models.
        d.bot.community.update_member(ALICE, sampler="dpmpp_2m_karras", steps=2)
        final = await final_of(st, await st.slash("imagine", prompt="a cat", seed=4))
        assert final.get("attachments")
        assert ("💡 Your /settings sampler dpmpp_2m_karras does not suit this model; it drew with ddim, "
                "the model's default.") in final["content"]
        rec = d.store.history().items[0]
        assert (rec.image_request["sampler"], rec.image_request["steps"]) == ("ddim", 2)   # the rest still applies

        d.bot.community.update_member(ALICE, sampler="euler")                  # one that suits: used, no note
        final = await final_of(st, await st.slash("imagine", prompt="a cat", seed=5))
        assert "does not suit" not in final["content"]
        assert d.store.history().items[0].image_request["sampler"] == "euler"

    discord_run(scenario)
