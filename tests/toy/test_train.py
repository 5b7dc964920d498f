"""A few training steps on a tiny configuration: losses go down, runs reproduce, and the output loads."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmaccel.toy.tokenizer import build_tokenizer
from mmaccel.toy.training.train import TrainConfig, run

TINY = {"vision_hidden": 32, "vision_layers": 2, "text_hidden": 64, "text_layers": 2, "text_heads": 4}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def _config(**overrides) -> TrainConfig:
    values = dict(
        threads=1,
        steps_vision=12,
        steps_llm=12,
        batch_vision=8,
        batch_llm=4,
        turns=3,
        warmup_llm=2,
        lr_vision=3e-3,
        lr_llm=3e-3,
        model_kwargs=TINY,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_smoke_training_learns_and_saves_a_loadable_checkpoint(tmp_path, tokenizer):
    summary = run(_config(), tmp_path, tokenizer=tokenizer)
    torch.set_num_threads(1)
    vision = [record["loss"] for record in summary["curve"] if record["stage"] == "vision"]
    llm = [record["loss"] for record in summary["curve"] if record["stage"] == "llm"]
    assert vision[-1] < vision[0]
    assert llm[-1] < llm[0]
    assert json.loads((tmp_path / "curve.json").read_text())["config"]["steps_llm"] == 12
    model = AutoModelForImageTextToText.from_pretrained(tmp_path, local_files_only=True)
    processor = AutoProcessor.from_pretrained(tmp_path, local_files_only=True)
    assert model.config.image_seq_length == 64
    assert processor.tokenizer.get_vocab() == tokenizer.get_vocab()


def test_training_reproduces_from_the_seed(tmp_path, tokenizer):
    first = run(_config(steps_vision=3, steps_llm=3), tmp_path / "a", tokenizer=tokenizer)
    second = run(_config(steps_vision=3, steps_llm=3), tmp_path / "b", tokenizer=tokenizer)
    torch.set_num_threads(1)
    assert [r["loss"] for r in first["curve"]] == [r["loss"] for r in second["curve"]]
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    b = (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a == b


def test_curve_line_logs_losses_and_held_out_accuracy_per_type():
    from mmaccel.cli.toy import _curve_line

    record = {
        "stage": "llm",
        "step": 250,
        "loss": 1.25,
        "token_acc": 0.5,
        "guide_focus": 0.0431,
        "heldout": {"color": 95.0, "color/color": 95.0, "all": 51.1},
    }
    assert _curve_line(record) == "loss 1.250 guide_focus 0.043 | held-out color 95.0 all 51.1"


def test_learning_curve_plot_draws_the_guidance_terms(tmp_path):
    pytest.importorskip("matplotlib")
    from mmaccel.toy.training.plot import plot_curve

    curve = [
        {"stage": "vision", "step": 1, "minutes": 0.1, "loss": 3.0, "acc_color": 0.2, "acc_shape": 0.3,
         "acc_character": 0.1},
        {"stage": "llm", "step": 1, "minutes": 0.1, "loss": 4.0, "token_acc": 0.1, "guide_focus": 2.0},
        {"stage": "llm", "step": 2, "minutes": 0.2, "loss": 2.0, "token_acc": 0.4, "guide_focus": 0.5,
         "heldout": {"all": 40.0}},
    ]  # fmt: skip
    plot_curve(curve, tmp_path / "curve.png")
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
