"""The runner's FLOPs and KV bytes on an anyres model: every tile through the tower, newlines in the LLM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tiled_models
import tiny_processors
from mmaccel.eval.runner import ProgressHook, evaluate
from mmaccel.models.shape import describe

CHAT_TEMPLATE = (
    "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> "
    "{% else %}{{ c['text'] }} {% endif %}{% endfor %}{% endfor %}w7"
)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    from mmaccel.eval.config import EvalConfig

    model = tiled_models.NEXT.build()
    processor = tiny_processors.llava_next_processor(model)
    processor.chat_template = CHAT_TEMPLATE
    root = tmp_path_factory.mktemp("tiles")
    config = EvalConfig(
        benchmarks=["shapes-gqa"], methods=["none", "fastv"], budgets=[0.5], limit=1, batch_size=2,
        max_new_tokens=2, out=str(root / "out"), data=str(root / "data"), timing=False,
    )  # fmt: skip
    results = evaluate(config, ProgressHook(), loaded_model=(model, processor))
    by_method = {}
    for result in results:
        lines = (Path(config.out) / result["run"] / "predictions.jsonl").read_text().splitlines()
        by_method[result["run"].split("/")[1].split("-")[0]] = [json.loads(line)["efficiency"] for line in lines]
    return describe(model), by_method


def test_kv_bytes_hold_every_prompt_token_newlines_included(records):
    shape, by_method = records
    per_token = 2 * shape.decoder.kv_heads * shape.decoder.head_dim * 4  # float32 keys and values
    for base, fastv in zip(by_method["none"], by_method["fastv"]):
        prompt = base["text_tokens"] + base["tokens"]["visual_tokens"]
        assert fastv["text_tokens"] + fastv["tokens"]["visual_tokens"] == prompt  # same prompt, either convention
        decoded = base["new_tokens"] - 1
        assert base["kv_bytes"] == shape.decoder.layers * (prompt + decoded) * per_token
        layer_tokens = fastv["tokens"]["layer_tokens"]
        dropped = sum(layer_tokens[0] - n for n in layer_tokens)
        assert dropped > 0
        fastv_decoded = fastv["new_tokens"] - 1
        assert fastv["kv_bytes"] == (shape.decoder.layers * (prompt + fastv_decoded) - dropped) * per_token


def test_prefill_flops_count_every_tile(records):
    shape, by_method = records
    assert shape.image_work is None  # anyres: the tower work comes from each sample's image size
    for base, fastv in zip(by_method["none"], by_method["fastv"]):
        llm = 2.0 * sum(shape.decoder.layer_macs(base["text_tokens"] + n) for n in base["tokens"]["layer_tokens"])
        vision = base["prefill_flops"] - llm - 2.0 * shape.decoder.hidden * shape.vocab
        tile = 17  # 4 x 4 patches + CLS
        tower_per_tile = 2.0 * (shape.vision.layers * shape.vision.layer_macs(tile) + 16 * shape.patch_macs)
        per_tile = tower_per_tile + shape.projector_flops(16)
        tiles = round(vision / per_tile)
        assert tiles > 1 and vision == pytest.approx(tiles * per_tile)  # base tile and high-resolution tiles
        assert fastv["prefill_flops"] < base["prefill_flops"]


def test_baseline_and_method_rows_count_visual_tokens_alike(records):
    _, by_method = records
    for base, fastv in zip(by_method["none"], by_method["fastv"]):
        assert base["tokens"]["visual_tokens"] == fastv["tokens"]["visual_tokens"]  # newlines are text in both
        assert base["text_tokens"] == fastv["text_tokens"]
