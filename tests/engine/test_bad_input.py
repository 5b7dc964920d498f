"""Bad input raises a clear error naming the argument and the allowed range, before the model is touched."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import mmaccel
from mmaccel.errors import ConfigError, NotSupportedError
from tests.tiny_models import siglip_llava, single_inputs, tiny_llava


@pytest.fixture(scope="module")
def model():
    return tiny_llava()


def _untouched(model) -> bool:
    hooks = [
        hook
        for m in model.modules()
        for hook in [*m._forward_pre_hooks.values(), *m._forward_hooks.values()]
        if getattr(hook, "__module__", "").startswith("mmaccel")
    ]
    return not hooks and model.config.text_config._attn_implementation == "sdpa"


def test_unknown_method_lists_known_ones(model):
    with pytest.raises(ConfigError, match=r"unknown method 'fastvv'.*fastv.*visionzip"):
        mmaccel.apply(model, "fastvv", budget=4)
    assert _untouched(model)


@pytest.mark.parametrize(
    ("budget", "message"),
    [
        (0, r"budget=0 is out of range.*>= 1"),
        (-3, r"budget=-3 is out of range"),
        (1.5, r"budget=1.5 is out of range.*\(0, 1\]"),
        (0.0, r"budget=0.0 is out of range"),
        (True, r"budget must be an int"),
        ("64", r"budget must be an int"),
        (17, r"budget=17 asks for more visual tokens than an image has.*16.*\[1, 16\]"),
    ],
)
@pytest.mark.parametrize("method", ["fastv", "visionzip", "random"])
def test_budget_out_of_range(model, method, budget, message):
    with pytest.raises(ConfigError, match=message):
        mmaccel.apply(model, method, budget=budget)
    assert _untouched(model)


@pytest.mark.parametrize("k", [0, 4, -1])
def test_fastv_layer_out_of_range(model, k):
    with pytest.raises(ConfigError, match=rf"k={k} is out of range.*4 layers.*\[1, 3\]"):
        mmaccel.apply(model, "fastv", budget=4, k=k)
    assert _untouched(model)


def test_unknown_hyperparameter_and_bad_positions(model):
    with pytest.raises(ConfigError, match=r"no hyper-parameter layer; allowed: budget, k, positions"):
        mmaccel.apply(model, "fastv", budget=4, layer=2)
    with pytest.raises(ConfigError, match=r"positions='first' is not allowed"):
        mmaccel.apply(model, "visionzip", budget=4, positions="first")
    assert _untouched(model)


def test_unsupported_model_class():
    llm = LlamaForCausalLM(
        LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(NotSupportedError, match=r"LlamaForCausalLM is not supported; supported: .*Llava"):
        mmaccel.apply(llm, "fastv", budget=4)


@pytest.mark.parametrize("method", ["visionzip", "fastervlm"])
def test_cls_method_on_a_tower_without_cls(method):
    siglip = siglip_llava()
    with pytest.raises(NotSupportedError, match=rf"{method}.*needs a CLS token.*has none"):
        mmaccel.apply(siglip, method, budget=4)
    with mmaccel.apply(siglip, "pool", budget=4):  # methods that need no CLS still run
        pass


def test_nested_sessions_are_refused(model):
    with mmaccel.apply(model, "fastv", budget=4):
        assert not _untouched(model)
        with pytest.raises(NotSupportedError, match="cannot be nested"):
            mmaccel.apply(model, "visionzip", budget=4)
    assert _untouched(model)


def test_method_instance_with_extra_budget_is_refused(model):
    from mmaccel.methods import FastV

    with pytest.raises(ConfigError, match="either to the method instance or by name"):
        mmaccel.apply(model, FastV(budget=4), budget=8)


def test_chunked_prefill_is_refused(model):
    inputs = single_inputs(n_images=1)
    with mmaccel.apply(model, "fastv", budget=4), pytest.raises(NotSupportedError, match="prefill_chunk_size"):
        model.generate(**inputs, max_new_tokens=2, prefill_chunk_size=8, do_sample=False)
    assert _untouched(model)
    with torch.no_grad():
        model(**inputs)
