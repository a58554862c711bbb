"""Variations chain: a variation of a variation keeps every step, in the store, the PNG and `info` (issue 12, bug 2)."""

from __future__ import annotations

import argparse

import numpy as np
from PIL import Image

from core.jobs import Owner
from core.request import GenerationRequest, variation_text
from storage import read_recipe
from storage.cli import cmd_info

ANA = Owner("web", "ana", "Ana")
T = 120


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_a_walk_keeps_every_variation_and_reproduces_exactly(store, service_factory, capsys):
    service = service_factory(recorder=store)
    original = service.submit(GenerationRequest("red cat face", seed=21, steps=3), ANA).result(T).images[0]
    chosen = store.vary(original.id, service, ANA, 0.5, 77, count=2).result(T).images[1]  # variation seed 78
    assert chosen.variation_seed == 78

    # "use this one as the new source", strength 0: the chosen variation, not the original
    same = store.vary(chosen.id, service, ANA, 0.0).result(T).images[0]
    assert np.array_equal(pixels(same.path), pixels(chosen.path))
    assert not np.array_equal(pixels(same.path), pixels(store.get(original.id).path))

    # a step further: the recipe holds the seed, then each variation in order
    second = store.vary(chosen.id, service, ANA, 0.3, 500).result(T).images[0]
    d = store.get(second.id).image_request
    assert (d["seed"], d["variation_chain"], d["variation_seed"], d["variation_strength"]) == (21, [[78, 0.5]], 500, 0.3)
    assert read_recipe(store.get(second.id).path)["recipe"]["request"]["variation_chain"] == [[78, 0.5]]
    assert variation_text(d) == "seed 78 at strength 0.5, then seed 500 at strength 0.3"
    assert store.reproduce(second.id, service, ANA).result(T).images[0].sha256 == store.get(second.id).sha256
    third = store.vary(second.id, service, ANA, 0.0).result(T).images[0]
    assert np.array_equal(pixels(third.path), pixels(store.get(second.id).path))
    assert store.get(third.id).image_request["variation_chain"] == [[78, 0.5], [500, 0.3]]

    # an image that is no variation has no chain in its recipe (older recipes keep their bytes)
    assert "variation_chain" not in store.get(original.id).image_request

    cmd_info(argparse.Namespace(target=second.id, json=False), type("Ctx", (), {"store": lambda self: store})())
    out = capsys.readouterr().out
    assert "variations: seed 78 at strength 0.5, then seed 500 at strength 0.3" in out


def test_the_chain_is_validated_and_round_trips():
    req = GenerationRequest("cat", seed=1, variation_seed=3, variation_strength=0.2).varied(0.4, 9)
    assert req.variation_chain == ((3, 0.2),) and (req.variation_seed, req.variation_strength) == (9, 0.4)
    assert GenerationRequest.from_dict(req.to_dict()) == req
    bad = GenerationRequest("cat", variation_chain=((3, 0.0),))
    try:
        bad.validate()
    except ValueError as exc:
        assert "variation_chain" in str(exc) and "a strength above 0 and up to 1" in str(exc)
    else:
        raise AssertionError("a chain step of strength 0 was accepted")
