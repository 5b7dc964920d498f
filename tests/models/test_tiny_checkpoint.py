"""``python -m mmaccel.models.tiny FAMILY OUT_DIR``: a complete checkpoint that loads offline and runs on an image."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import mmaccel
from mmaccel.models.registry import adapter_for
from mmaccel.models.tiny.__main__ import main
from mmaccel.models.tiny.checkpoint import CHECKPOINT_FAMILIES, write_checkpoint
from mmaccel.models.tiny.processors import byte_tokenizer

FAMILIES = list(CHECKPOINT_FAMILIES)
FILES = ("config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
         "tokenizer_config.json", "chat_template.jinja")  # fmt: skip


def _image(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (112, 96, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_byte_tokenizer_round_trips_any_text_and_keeps_the_placeholder_ids():
    tokenizer = byte_tokenizer("<|image_pad|>", "<|video_pad|>")
    text = "Is the ünïcode 'circle' red?\n<|vision_start|><|image_pad|><|vision_end|>"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert ids[-3:] == [102, 100, 103]
    assert max(ids) < 272 and tokenizer.convert_tokens_to_ids("<|video_pad|>") == 101


@pytest.mark.parametrize("family", FAMILIES)
def test_written_checkpoint_loads_and_runs_one_image(family, tmp_path):
    assert main([family, str(tmp_path / family)]) == 0
    out = tmp_path / family
    assert all((out / name).is_file() for name in FILES)
    model, processor = mmaccel.load(out)
    assert adapter_for(model).name == family
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What shape is it?"}]}]
    text = processor.apply_chat_template(prompt, add_generation_prompt=True)
    assert "What shape is it?" in text
    inputs = processor(images=[_image()], text=[text], return_tensors="pt")
    n_visual = int((inputs["input_ids"] == adapter_for(model).image_token_id).sum())
    assert n_visual > 0
    with torch.no_grad():
        logits = model(**inputs).logits  # [1, L, vocab]
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.get_text_config().vocab_size)
    assert torch.isfinite(logits).all()
    output = model.generate(**inputs, max_new_tokens=3)  # the checkpoint's generation config: greedy
    assert output.shape[1] == inputs["input_ids"].shape[1] + 3
    assert not set(output[0, inputs["input_ids"].shape[1] :].tolist()) & {100, 101, 102, 103}  # suppressed


def test_same_family_and_seed_give_the_same_weights(tmp_path):
    first = write_checkpoint("llava", tmp_path / "a")
    second = write_checkpoint("llava", tmp_path / "b", seed=0)
    assert (first / "model.safetensors").read_bytes() == (second / "model.safetensors").read_bytes()
    config = json.loads((first / "processor_config.json").read_text())
    assert config["processor_class"] == "LlavaProcessor"


def test_unknown_family_is_refused_by_name(tmp_path):
    with pytest.raises(SystemExit):
        main(["llama", str(tmp_path)])
    with pytest.raises(ValueError, match=r"family='llama'.*llava, llava_next"):
        write_checkpoint("llama", tmp_path)
