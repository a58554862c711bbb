"""Prompt weights and long prompts (core/prompts.py): A1111's syntax read, embedded with compel,
long prompts in chunks instead of cut, older recipes read as they were, all reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.jobs import Owner
from core.prompts import parse, result_notes
from core.request import GenerationRequest, InvalidRequest

ANA = Owner("cli", "ana", "Ana")
TIMEOUT = 120
# 12 x 7 = 84 words: more than the tiny model's window of 77 tokens (75 between start and end)
LONG = ", ".join(["red cat on the blue background"] * 12)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0].image.convert("RGB"), dtype=np.int16)


# ---- the syntax ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text, segments", [
    ("a red cat", [[("a red cat", 1.0)]]),
    ("a (red:1.3) cat", [[("a ", 1.0), ("red", 1.3), (" cat", 1.0)]]),
    ("(red)", [[("red", 1.1)]]),
    ("((red))", [[("red", pytest.approx(1.21))]]),
    ("[red]", [[("red", pytest.approx(1 / 1.1))]]),
    ("(red [cat]:1.5)", [[("red ", 1.5), ("cat", pytest.approx(1.5 / 1.1))]]),
    ("a cat BREAK on blue", [[("a cat", 1.0)], [("on blue", 1.0)]]),
    (r"\(literal\) (open", [[("(literal) ", 1.0), ("open", pytest.approx(1.1))]]),  # unclosed: to the end
    ("time: 3 o'clock", [[("time: 3 o'clock", 1.0)]]),  # a colon outside brackets is text
    ("", [[("", 1.0)]]),
])
def test_a1111_syntax_is_read_as_a1111_reads_it(text, segments):
    assert [list(seg) for seg in parse(text).segments] == segments


def test_weights_out_of_range_are_refused_in_one_sentence_and_nothing_else_is():
    with pytest.raises(InvalidRequest) as e:
        GenerationRequest("a (red:7) cat", negative_prompt="(blue:-1)").validate()
    assert [err.field for err in e.value.errors] == ["prompt", "negative_prompt"]
    assert "use emphasis weights from 0 to 3, as in (word:1.3); it has 7" in str(e.value)
    with pytest.raises(InvalidRequest, match="prompt_syntax: 'fancy' is not allowed; use one of a1111, plain"):
        GenerationRequest("cat", prompt_syntax="fancy").validate()
    # the same words read plainly are just words
    GenerationRequest("a (red:7) cat", prompt_syntax="plain").validate()


def test_recipes_from_before_prompt_syntax_read_as_plain_and_new_ones_say_a1111():
    new = GenerationRequest("cat", seed=1, width=64, height=64)
    assert new.to_dict()["prompt_syntax"] == "a1111"
    old = new.to_dict()
    del old["prompt_syntax"]  # a recipe stored before this field existed
    assert GenerationRequest.from_dict(old).prompt_syntax == "plain"
    assert "prompt_syntax" not in GenerationRequest.from_dict(old).to_dict()  # its bytes stay as they were
    assert GenerationRequest.from_dict(new.to_dict()) == new


# ---- the embeddings -----------------------------------------------------------------------------


def test_a_prompt_without_syntax_is_embedded_exactly_as_before(generator):
    """No weights, no BREAK, within the window: the pipeline's own encoder, bit for bit."""
    req = GenerationRequest("a red cat", negative_prompt="blue", seed=1, width=64, height=64)
    assert not generator.prompts.needs_compel(req)
    emb, _ = generator.encode(req)
    pe, ne = generator.model.pipeline.encode_prompt("a red cat", "cpu", 1, True, negative_prompt="blue")
    assert torch.equal(emb, torch.cat([ne, pe]))
    # weights of 1 written out are no weights: compel gives the same numbers
    ones = GenerationRequest("a (red:1) cat", negative_prompt="blue", seed=1, width=64, height=64)
    assert generator.prompts.needs_compel(ones)
    assert torch.equal(generator.encode(ones)[0], emb)


def test_weights_change_the_embedding_of_their_words(generator):
    plain = generator.encode(GenerationRequest("a red cat", seed=1, width=64, height=64))[0]
    up = generator.encode(GenerationRequest("a (red:1.8) cat", seed=1, width=64, height=64))[0]
    down = generator.encode(GenerationRequest("a [red] cat", seed=1, width=64, height=64))[0]
    assert up.shape == plain.shape and not torch.equal(up, plain) and not torch.equal(down, plain)


def test_long_prompts_and_break_are_encoded_in_chunks_not_cut(generator):
    window = generator.prompts.window
    req = GenerationRequest(LONG, seed=1, width=64, height=64)
    assert generator.prompts.tokens(LONG, "a1111") > window - 2
    emb = generator.encode(req)[0]
    assert emb.shape[1] == 2 * window  # two chunks; the negative padded to the same length
    broken = generator.encode(GenerationRequest("red cat BREAK blue", seed=1, width=64, height=64))[0]
    assert broken.shape[1] == 2 * window
    # the words past the window count: change only the last word, and the embedding changes
    other = generator.encode(GenerationRequest(LONG[:-len("background")] + "apple", seed=1, width=64, height=64))[0]
    assert not torch.equal(emb, other)
    # read plainly, the same two prompts are cut at the window and embed the same
    p1 = generator.encode(GenerationRequest(LONG, seed=1, width=64, height=64, prompt_syntax="plain"))[0]
    p2 = generator.encode(GenerationRequest(LONG[:-len("background")] + "apple", seed=1, width=64, height=64,
                                            prompt_syntax="plain"))[0]
    assert p1.shape[1] == window and torch.equal(p1, p2)


# ---- through the service and the record -----------------------------------------------------


def test_a_cut_prompt_says_so_in_the_result_with_the_tokens_used(service_factory):
    svc = service_factory()
    plain = svc.submit(GenerationRequest(LONG, seed=3, steps=2, prompt_syntax="plain"), ANA).result(TIMEOUT)
    notes = result_notes(plain.fingerprint)
    assert len(notes) == 1 and "The prompt was cut: the text encoder used 75 of its" in notes[0]
    whole = svc.submit(GenerationRequest(LONG, seed=3, steps=2), ANA).result(TIMEOUT)
    assert result_notes(whole.fingerprint) == []
    assert "in 2 chunks of up to 75" in whole.fingerprint["prompt_chunks"]
    assert not np.array_equal(pixels(plain), pixels(whole))


def test_long_and_short_prompts_batched_together_match_each_made_alone(service_factory):
    """Step batching groups images by embedding length: neither is padded for the other."""
    reqs = [GenerationRequest(LONG, seed=5, steps=3), GenerationRequest("red cat", seed=5, steps=3),
            GenerationRequest("(red:1.5) cat BREAK blue", seed=6, steps=3)]
    alone_svc = service_factory()
    alone = [pixels(alone_svc.submit(r, ANA).result(TIMEOUT)) for r in reqs]
    batched = service_factory(batch_max=4)
    handles = [batched.submit(r, Owner("cli", f"u{i}", f"u{i}")) for i, r in enumerate(reqs)]
    together = [pixels(h.result(TIMEOUT)) for h in handles]
    for a, b in zip(alone, together):
        assert np.abs(a - b).max() <= 1  # the 1/255 batching contract (here one image per UNet call)


def test_weighted_and_long_prompts_are_stored_shown_and_reproduced_byte_identically(settings_factory, service_factory):
    from storage import open_store

    store = open_store(settings_factory())
    svc = service_factory(recorder=store)
    for prompt in ("a (red:1.4) [blue] cat", LONG + " BREAK apple"):
        first = svc.submit(GenerationRequest(prompt, negative_prompt="(dog:1.2)", seed=9, steps=3),
                           ANA).result(TIMEOUT).images[0]
        rec = store.get(first.id)
        assert rec.request["prompt"] == prompt and rec.request["prompt_syntax"] == "a1111"
        again = store.reproduce(first.id, svc, ANA).result(TIMEOUT).images[0]
        assert open(again.path, "rb").read() == rec.path.read_bytes()
        v = store.verify(first.id, svc)
        assert (v.verdict, v.fingerprint_diff) == ("exact", {})
    store.close()


def test_sdxl_weights_long_prompts_and_its_own_lora_with_two_text_encoders(tmp_path):
    """SDXL's two text encoders go through compel too (pooled text from the first chunk); an
    SDXL LoRA loads on it; the same request twice is the same picture."""
    from core.generator import Generator
    from core.loader import load_model
    from core.lora import LoraLibrary
    from core.service import InProcessJobService
    from tests.lora_fixture import make_lora
    from tests.tiny_model import build_tiny_sdxl

    folder = build_tiny_sdxl(tmp_path / "tiny-sdxl")
    make_lora(folder, tmp_path / "loras" / "xl.safetensors", "peft")
    model = load_model(str(folder), device="cpu")
    svc = InProcessJobService(Generator(model), None, loras=LoraLibrary(tmp_path / "loras", model))
    try:
        req = GenerationRequest(LONG + " BREAK (apple:1.4)", negative_prompt="[blue]", seed=2, steps=2)
        first, again = (svc.submit(req, ANA).result(TIMEOUT) for _ in range(2))
        assert np.array_equal(pixels(first), pixels(again))
        assert "in 3 chunks" in first.fingerprint["prompt_chunks"]
        plain = svc.submit(GenerationRequest("red cat", seed=2, steps=2), ANA).result(TIMEOUT)
        with_lora = svc.submit(GenerationRequest("red cat <lora:xl:1>", seed=2, steps=2), ANA).result(TIMEOUT)
        assert with_lora.request.loras[0][0] == "xl" and not np.array_equal(pixels(plain), pixels(with_lora))
    finally:
        svc.close()
