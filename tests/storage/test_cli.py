"""`statuary reproduce | vary | verify | info | history`, through core's command line."""

from __future__ import annotations

import pytest

from core.cli import build_parser, main
from core.jobs import Owner
from core.request import GenerationRequest
from storage import open_store
from tests.storage.test_pngmeta import A1111_SAMPLE, _png


def test_commands_are_registered():
    parser, _ = build_parser()
    args = parser.parse_args(["vary", "abcd2345", "--strength", "0.3", "--variation-seed", "5", "--count", "2"])
    assert (args.id, args.strength, args.variation_seed, args.count) == ("abcd2345", 0.3, 5, 2)
    args = parser.parse_args(["history", "--query", "red cat", "--page", "2", "--owner", "ana"])
    assert (args.query, args.page, args.owner) == ("red cat", 2, "ana")
    for argv in (["reproduce", "x"], ["verify", "x"], ["info", "x"]):
        assert callable(parser.parse_args(argv).func)


@pytest.fixture
def cli_env(monkeypatch, make_settings, tiny_model_dir):
    settings = make_settings()
    monkeypatch.chdir(settings.data_dir.parent)
    for k, v in {"STATUARY_DATA_DIR": str(settings.data_dir), "DATABASE_URL": settings.database_url,
                 "STATUARY_MODEL": str(tiny_model_dir), "STATUARY_DEVICE": "cpu", "STATUARY_THREADS": "2",
                 "STATUARY_PREVIEW_FRAMES": "3"}.items():
        monkeypatch.setenv(k, v)
    return settings


def test_cli_end_to_end(cli_env, service_factory, capsys, tmp_path):
    store = open_store(cli_env)
    result = service_factory(recorder=store).submit(GenerationRequest("red cat", seed=11, steps=3),
                                                    Owner("cli", "ana", "Ana")).result(120)
    image_id = result.images[0].id
    store.close()

    assert main(["info", image_id]) == 0
    out = capsys.readouterr().out
    assert f"image {image_id}" in out and "prompt: red cat" in out and "seed: 11" in out

    assert main(["info", result.images[0].path]) == 0
    assert "Statuary recipe" in capsys.readouterr().out
    a1111 = tmp_path / "a1111.png"
    a1111.write_bytes(_png(parameters=A1111_SAMPLE))
    assert main(["info", str(a1111)]) == 0
    assert "Seed: 3735928559" in capsys.readouterr().out

    assert main(["reproduce", image_id]) == 0
    assert "(identical file)" in capsys.readouterr().out
    assert main(["verify", image_id]) == 0
    assert f"{image_id}: exact" in capsys.readouterr().out
    assert main(["vary", image_id, "--strength", "0.2", "--variation-seed", "4", "--count", "2"]) == 0
    assert "variation seed 5" in capsys.readouterr().out
    assert main(["history", "--query", "cat"]) == 0
    captured = capsys.readouterr()
    assert captured.out.count("red cat") == 4 and "4 images" in captured.err  # original, reproduction, 2 variations

    assert main(["info", "nonsense"]) == 2
    assert "'nonsense' is not an image id" in capsys.readouterr().err
    assert main(["reproduce", "zzzzzzzz"]) == 2
    assert "no image with id zzzzzzzz" in capsys.readouterr().err
