"""The command line: listing, the demo, and user errors without tracebacks."""

from __future__ import annotations

from mmaccel.cli import main


def test_list_methods(capsys):
    assert main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    for name in ("fastv", "visionzip", "fastervlm", "random", "pool"):
        assert name in out
    assert "LLM_PREFILL" in out and "VISUAL_OUTPUT" in out


def test_list_models(capsys):
    assert main(["list", "models"]) == 0
    assert "LlavaForConditionalGeneration" in capsys.readouterr().out


def test_demo_runs_every_method(capsys):
    assert main(["demo", "--prompts", "1", "--budgets", "0.25"]) == 0
    out = capsys.readouterr().out
    for name in ("fastv", "visionzip", "fastervlm", "random", "pool"):
        assert name in out


def test_demo_rejects_bad_budget(capsys):
    assert main(["demo", "--budgets", "1.5"]) == 2
    assert "--budgets must be fractions in (0, 1]" in capsys.readouterr().err


def test_list_support_prints_the_matrix(capsys):
    assert main(["list", "support"]) == 0
    out = capsys.readouterr().out
    assert "| method | LLaVA-1.5" in out
    assert "| `downsample` | not supported: needs a model whose visual token count follows the image size" in out


def test_toy_train_rejects_a_negative_guidance_weight(capsys, tmp_path):
    assert main(["toy", "train", "--out", str(tmp_path / "run"), "--guide-loss", "-1"]) == 2
    assert "--guide-loss must be >= 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything is written
