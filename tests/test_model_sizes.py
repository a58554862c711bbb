"""Size limits come from the loaded model in one place (ModelLimits), also for models whose
native size is at or below the core's usual 64 px minimum side (issue 12, bug 3)."""

from __future__ import annotations

import pytest

from core.request import ANY_MODEL, GenerationRequest, InvalidRequest, ModelLimits
from tests.test_cli import statuary
from tests.tiny_model import build_tiny_model


@pytest.mark.parametrize("limits, low", [
    (ModelLimits(512, 1024, 8), 64),   # SD 1.x: unchanged
    (ModelLimits(64, 128, 8), 64),     # native size equal to the minimum
    (ModelLimits(64, 64, 8), 32),      # largest side equal to it: still a range to choose from
    (ModelLimits(32, 64, 8), 32),      # native size below it
])
def test_min_side_allows_the_native_size_and_leaves_a_range(limits, low):
    assert limits.min_side == low
    assert limits.allows(limits.native_size) and limits.min_side < limits.max_side
    GenerationRequest(prompt="cat").resolve(limits)  # the default size is valid
    with pytest.raises(InvalidRequest, match=f"from {low} to {limits.max_side}"):
        GenerationRequest(prompt="cat", width=low - limits.multiple).validate(limits)
    assert limits.fit(10_000) == limits.max_side and limits.fit(1) == low and limits.fit(low + 3) == low


def test_without_a_model_only_impossible_sizes_are_refused():
    GenerationRequest(prompt="cat", width=32, height=16).validate()
    assert ANY_MODEL.allowed_sizes == "use a multiple of 8 from 8 to 4096"
    with pytest.raises(InvalidRequest, match="multiple of 8"):
        GenerationRequest(prompt="cat", width=33).validate()


@pytest.fixture(scope="module")
def model32(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-32", sample_size=4)


def test_cli_generates_reproduces_and_verifies_on_a_32px_model(tmp_path, model32):
    out = tmp_path / "small.png"
    r = statuary(["--model", str(model32), "generate", "a cat", "--seed", "4", "--steps", "2",
                  "--width", "32", "--height", "32", "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    image_id = r.stdout.split(" id ")[1].split()[0]
    r = statuary(["--model", str(model32), "verify", image_id], tmp_path)
    assert r.returncode == 0 and "exact" in r.stdout.lower(), r.stdout + r.stderr
    r = statuary(["--model", str(model32), "generate", "a cat", "--width", "24", "--steps", "2"], tmp_path)
    assert r.returncode == 2 and "use a multiple of 8 from 32 to 64" in r.stderr and "Traceback" not in r.stderr


def test_cli_states_the_models_own_size_range_for_a_side_no_model_takes(tmp_path, model32):
    """`--width 65` was refused by the model-free pre-check with the range any model could take (8
    to 4096); a user who followed it typed 4096 next and was refused again with another range. The
    sentence must name what this model takes (32 to 64), as the web UI and the bot do."""
    r = statuary(["--model", str(model32), "generate", "a cat", "--width", "65", "--steps", "2"], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "width: 65 is not allowed; use a multiple of 8 from 32 to 64" in r.stderr, r.stderr
    assert "4096" not in r.stderr
