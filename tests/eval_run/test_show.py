"""``mmaccel show``: what a method did to each patch, and the PNG."""

from __future__ import annotations

import pytest

from mmaccel.cli import main


@pytest.fixture(scope="module")
def image():
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))


@pytest.mark.parametrize(
    ("method", "budget", "merges"), [("fastervlm", 16, False), ("fastv", 16, False), ("tome", 0.25, True)]
)
def test_token_map_matches_the_budget(toy, image, method, budget, merges):
    from mmaccel.eval.show import token_map

    model, processor = toy
    result = token_map(model, processor, image, "How many shapes are there?", method, budget, max_new_tokens=2)
    h, w = result.grid
    assert len(result.groups) == h * w
    outputs = {g for g in result.groups if g >= 0}
    if merges:  # every patch goes somewhere, into fewer tokens
        assert min(result.groups) >= 0 and result.merged and len(outputs) < h * w
    else:  # exactly the budget survives, each alone
        assert len(result.kept) == budget and not result.merged
    assert result.answer and result.baseline_answer


def test_cli_writes_a_png(tmp_path, image):
    path = tmp_path / "scene.png"
    image.save(path)
    out = tmp_path / "shown.png"
    assert main(["show", "--method", "fastervlm", "--budget", "0.25", "--image", str(path), "--out", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "nope", "--budget", "0.5"], "unknown method"),
        (["--method", "fastv", "--budget", "3.5"], "outside (0, 1]"),
        (["--method", "fastv", "--budget", "0.5,0.25"], "one budget"),
    ],
)
def test_bad_input(argv, message, capsys, tmp_path):
    assert main(["show", "--image", str(tmp_path / "missing.png"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_image(capsys, tmp_path):
    assert main(["show", "--method", "fastv", "--budget", "0.5", "--image", str(tmp_path / "x.png")]) == 2
    assert "no such file" in capsys.readouterr().err
