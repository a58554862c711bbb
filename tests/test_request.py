"""Validation: every bad value is refused with a message naming the field, the value and what is allowed."""

import io
import math

import pytest
from PIL import Image

from core.request import GenerationRequest, InvalidRequest, ModelLimits


def png(size=(64, 64), color=(200, 100, 50), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


LIMITS = ModelLimits(native_size=512, max_side=1024, multiple=8)

BAD = [
    ("empty prompt", dict(prompt=""), "prompt", "write a few words"),
    ("blank prompt", dict(prompt="   "), "prompt", "write a few words"),
    ("over-long prompt", dict(prompt="cat " * 400), "prompt", "at most 1000 characters"),
    ("control characters", dict(prompt="a cat\x00\x1b[31m"), "prompt", "control characters"),
    ("bidi override", dict(prompt="a cat\u202e"), "prompt", "control characters"),
    ("control in negative", dict(negative_prompt="x\x07"), "negative_prompt", "control characters"),
    ("steps 0", dict(steps=0), "steps", "from 1 to 150"),
    ("steps 10^6", dict(steps=10**6), "steps", "from 1 to 150"),
    ("steps float", dict(steps=2.5), "steps", "whole number"),
    ("guidance NaN", dict(guidance=math.nan), "guidance", "finite number"),
    ("guidance inf", dict(guidance=math.inf), "guidance", "finite number"),
    ("guidance negative", dict(guidance=-1.0), "guidance", "from 0 to 30"),
    ("width not multiple of 8", dict(width=500), "width", "multiple of 8"),
    ("height beyond the model", dict(height=2048), "height", "to 1024"),
    ("width tiny", dict(width=8), "width", "from 64"),
    ("unknown sampler", dict(sampler="k_lms_turbo"), "sampler", "one of dpmpp_2m_karras"),
    ("negative seed", dict(seed=-1), "seed", "from 0 to 4294967295"),
    ("huge seed", dict(seed=2**32), "seed", "from 0 to 4294967295"),
    ("bool seed", dict(seed=True), "seed", "whole number"),
    ("count 0", dict(count=0), "count", "from 1 to 4"),
    ("count 5", dict(count=5), "count", "from 1 to 4"),
    ("variation strength > 1", dict(variation_strength=1.5), "variation_strength", "from 0 to 1"),
    ("variation seed negative", dict(variation_seed=-5, variation_strength=0.5), "variation_seed", "from 0 to 4294967295"),
    ("strength nan", dict(strength=math.nan), "strength", "finite"),
    ("mask without image", dict(mask=png()), "mask", "needs an init_image"),
    ("mask of a different size", dict(init_image=png((64, 64)), mask=png((32, 48), 255, "L")), "mask", "must be the init image's size, 64x64"),
    ("unreadable image", dict(init_image=b"\x89PNG\r\n\x1a\nnot really"), "init_image", "readable PNG"),
    ("truncated image", dict(init_image=png((64, 64))[:60]), "init_image", "readable PNG"),
    ("image not bytes", dict(init_image="/etc/passwd"), "init_image", "image file's bytes"),
    ("img2img strength 0", dict(init_image=png(), strength=0.0), "strength", "above 0"),
]


@pytest.mark.parametrize("label, fields, field, allowed", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_a_clear_message(label, fields, field, allowed):
    kwargs = {"prompt": "a cat"} | fields
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(**kwargs).validate(LIMITS)
    fields_named = [e.field for e in info.value.errors]
    assert field in fields_named, str(info.value)
    message = str(info.value)
    assert field in message and allowed in message, message
    assert "Traceback" not in message


def test_all_errors_are_reported_at_once():
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest("", steps=0, sampler="nope").validate(LIMITS)
    assert {e.field for e in info.value.errors} == {"prompt", "steps", "sampler"}


def test_good_request_passes_and_resolve_records_seeds_and_size():
    r = GenerationRequest("a cat on a blue background", variation_strength=0.3)
    r.validate(LIMITS)
    resolved = r.resolve(LIMITS)
    assert 0 <= resolved.seed < 2**32 and 0 <= resolved.variation_seed < 2**32
    assert (resolved.width, resolved.height) == (512, 512)
    assert resolved.resolve(LIMITS) == resolved  # already concrete: nothing changes


def test_resolve_takes_init_image_aspect_on_the_model_grid():
    r = GenerationRequest("a cat", init_image=png((300, 200))).resolve(LIMITS)
    assert (r.width, r.height) == (296, 200)


def test_newlines_and_emoji_are_fine():
    GenerationRequest("a cat\nwith a hat 🐱 — “quoted”", negative_prompt="blurry\tugly").validate(LIMITS)


def test_seed_rule_and_image_request():
    r = GenerationRequest("a cat", seed=2**32 - 1, count=3).resolve(LIMITS)
    assert [r.image_seed(k) for k in range(3)] == [2**32 - 1, 0, 1]
    one = r.image_request(2)
    assert (one.count, one.seed) == (1, 1)
    v = GenerationRequest("a cat", seed=7, variation_seed=100, variation_strength=0.2, count=2).resolve(LIMITS)
    assert [v.image_seed(k) for k in range(2)] == [7, 7]  # variations keep the picture's seed
    assert [v.image_variation_seed(k) for k in range(2)] == [100, 101]


def test_dict_round_trip_checks_image_hashes():
    init, mask = png(), png(color=255, mode="L")
    r = GenerationRequest("a cat", seed=1, init_image=init, mask=mask)
    d = r.to_dict()
    assert "init_image" not in d and d["init_image_sha256"] and d["mask_sha256"]
    assert GenerationRequest.from_dict(d, init_image=init, mask=mask) == r
    with pytest.raises(InvalidRequest, match="does not match"):
        GenerationRequest.from_dict(d, init_image=png(color=(1, 2, 3)), mask=mask)
    with pytest.raises(InvalidRequest, match="not a request field"):
        GenerationRequest.from_dict({**d, "evil": 1}, init_image=init, mask=mask)


@pytest.mark.parametrize("fields, sentence", [
    (dict(prompt="cat " * 400), "prompt: a text of 1600 characters is not allowed; use at most 1000 characters."),
    (dict(prompt="a cat\x07"), "prompt: a text with U+0007 is not allowed; remove control characters"),
    (dict(variation_chain=((1, 0.5),) * 70), "variation_chain: a walk of 70 earlier variations is not allowed; "),
], ids=["long prompt", "control character", "long variation walk"])
def test_a_value_too_long_to_show_is_described_in_words_not_as_a_quoted_placeholder(fields, sentence):
    """Every front-end shows str(InvalidRequest) as it is: a described value reads as words, with
    no quotes or angle brackets around it (the bot used to say "prompt: '<1600 characters>'")."""
    with pytest.raises(InvalidRequest) as info:
        GenerationRequest(**({"prompt": "a cat"} | fields)).validate(LIMITS)
    assert sentence in str(info.value), str(info.value)
