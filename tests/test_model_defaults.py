"""A model folder's defaults.json (core/model_defaults.py): the guidance a request that gives none
gets. A small model trained from scratch can want more than Stable Diffusion's 7: the default
model's judged grid read 28-29 subjects of 120 at guidance 5-7 and 37 at 14 (docs/training/RUNS.md)."""

from __future__ import annotations

import json
import shutil

import pytest

from core.request import DEFAULT_GUIDANCE, GenerationRequest
from tests.test_cli import statuary


@pytest.fixture(scope="module")
def model12(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("models") / "guided"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "defaults.json").write_text(json.dumps({"guidance": 12, "note": "the judged grid at 5, 7, 10, 14"}))
    return folder


def test_the_folder_says_the_guidance_a_request_without_one_gets(model12, tiny_model_dir):
    from core.loader import load_model

    limits = load_model(str(model12), device="cpu").limits
    assert limits.default_guidance == 12.0
    assert GenerationRequest("a cat", seed=1).resolve(limits).guidance == 12.0   # recorded as made
    assert GenerationRequest("a cat", seed=1, guidance=3).resolve(limits).guidance == 3   # one asked for stays
    assert GenerationRequest("a cat", seed=1, guidance=0).resolve(limits).guidance == 0
    # without the file (any Stable Diffusion checkpoint): 7, as before
    assert load_model(str(tiny_model_dir), device="cpu").limits.default_guidance == DEFAULT_GUIDANCE == 7.0


def test_a_request_made_by_hand_without_a_guidance_draws_with_the_models(model12):
    # The generator is used directly too (tests, scripts): an unresolved request leaves the guidance
    # to the model there as well, as it does the sampler.
    import numpy as np

    from core.generator import Generator
    from core.loader import load_model

    gen = Generator(load_model(str(model12), device="cpu"))
    pixels = lambda req: np.asarray(gen.generate(req)[0][1])  # noqa: E731
    base = dict(prompt="a cat", seed=1, steps=2, width=64, height=64)
    open_ = pixels(GenerationRequest(**base))
    assert np.array_equal(open_, pixels(GenerationRequest(**base, guidance=12)))
    assert not np.array_equal(open_, pixels(GenerationRequest(**base, guidance=7)))


@pytest.mark.parametrize("text, said", [
    ('{"guidance": 99}', "guidance 99 is not allowed; use a number from 0 to 30"),
    ('{"guidance": "high"}', 'guidance "high" is not allowed; use a number from 0 to 30'),
    ('{"guidance": true}', "guidance true is not allowed; use a number from 0 to 30"),
    ('{"guidence": 9}', "unknown keys guidence; use guidance, note"),
    ('[9]', 'not a JSON object; use {"key": value, ...} with guidance, note'),
    ('{"guidance": 9', "not readable JSON"),
])
def test_a_wrong_defaults_file_stops_the_load_with_a_sentence(tmp_path, tiny_model_dir, text, said):
    from core.loader import ModelError, load_model

    folder = tmp_path / "wrong"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "defaults.json").write_text(text)
    with pytest.raises(ModelError) as info:
        load_model(str(folder), device="cpu")
    assert str(info.value).startswith(f"{folder / 'defaults.json'}: ") and said in str(info.value)


def test_the_cli_uses_the_folders_guidance_and_says_what_is_wrong_with_the_file(model12, tmp_path):
    r = statuary(["--model", str(model12), "generate", "a cat", "--steps", "2", "--seed", "3",
                  "--out", str(tmp_path / "cat.png")], tmp_path)
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.split("  id ")[1].split()[0]
    r = statuary(["--model", str(model12), "info", image_id, "--json"], tmp_path)
    assert json.loads(r.stdout)["request"]["guidance"] == 12.0
    r = statuary(["--model", str(model12), "generate", "a cat", "--steps", "2", "--guidance", "4",
                  "--out", str(tmp_path / "cat4.png")], tmp_path)
    image_id = r.stdout.split("  id ")[1].split()[0]
    r = statuary(["--model", str(model12), "info", image_id, "--json"], tmp_path)
    assert json.loads(r.stdout)["request"]["guidance"] == 4.0
    assert "default: the model's" in statuary(["generate", "--help"], tmp_path).stdout

    wrong = tmp_path / "wrong"
    shutil.copytree(model12, wrong)
    (wrong / "defaults.json").write_text('{"guidance": -2}')
    r = statuary(["--model", str(wrong), "generate", "a cat", "--steps", "2"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == (f"statuary: {wrong / 'defaults.json'}: guidance -2 is not allowed; "
                                "use a number from 0 to 30")


def test_shipping_replaces_the_folders_defaults_with_the_evaluated_exports(tmp_path):
    # The evaluation ran at the export's guidance, so the shipped folder must not keep another's.
    from training.ship import copy_into

    shipped, export = tmp_path / "shipped", tmp_path / "export"
    shipped.mkdir(), export.mkdir()
    (shipped / "MODEL_CARD.md").write_text("card")
    (shipped / "defaults.json").write_text('{"guidance": 12}')
    (export / "training.json").write_text("{}")
    copy_into(export, shipped)
    assert sorted(p.name for p in shipped.iterdir()) == ["MODEL_CARD.md", "training.json"]
    (export / "defaults.json").write_text('{"guidance": 10}')
    copy_into(export, shipped)
    assert (shipped / "defaults.json").read_text() == '{"guidance": 10}'
