"""`mmaccel eval` refuses what it cannot run before --out is created or changed: a budget above the image's
tokens, hyper-parameters out of the model's range, a model folder that does not load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmaccel.cli import main

BASE = ["eval", "--benchmark", "shapes-gqa", "--limit", "1", "--no-timing", "--no-report"]


def _tree(root: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def _yaml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "options.yaml"
    path.write_text(text)
    return str(path)


def _bad_model(tmp_path: Path) -> str:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {"model_type": "nope"}}))
    return str(folder)


CASES = {
    # the toy model makes 64 visual tokens per image
    "budget above the image's tokens": (lambda tmp: ["--method", "visionzip", "--budget", "100"], "[1, 64]"),
    "option out of range": (
        lambda tmp: ["--method", "fastv", "--config", _yaml(tmp, "method_options: {fastv: {k: 100}}")],
        "k=100",
    ),
    "model folder that does not load": (
        lambda tmp: ["--method", "none", "--model", _bad_model(tmp)],
        "model directory",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_before_out_is_created(capsys, tmp_path, case):
    flags, expected = CASES[case]
    out = tmp_path / "out"
    code = main([*BASE, *flags(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("case", list(CASES))
def test_refused_without_changing_an_existing_out(capsys, tmp_path, case):
    out = tmp_path / "out"
    assert main([*BASE, "--method", "none", "--out", str(out)]) == 0
    before = _tree(out)
    flags, expected = CASES[case]
    code = main([*BASE, *flags(tmp_path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and expected in err
    assert _tree(out) == before
