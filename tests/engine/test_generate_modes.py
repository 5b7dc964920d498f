"""``model.generate`` under a method in every generation mode: it works, or it is refused before the model runs.

The matrix is (method x mode) on the tiny LLaVA (every method), and one pre-LLM and one in-LLM method on the
tiny Qwen2-VL and LLaVA-NeXT. A working cell is checked against a reference run of the same session:

* beam search on a batch of two prompts equals beam search on each prompt alone (each prompt's copies are
  reduced like the prompt), and the best of ``num_return_sequences`` beams is the beam-search answer;
* ``use_cache=False`` (the whole sequence re-run at every step) equals the cached greedy run, logits included;
* sampling: a seed repeats; ``top_k=1`` with two return sequences gives the greedy answer on every copy;
* prompt-lookup decoding equals greedy decoding.

A refused cell raises ``NotSupportedError`` naming the mode, before any module of the model runs, and leaves
the session usable.
"""

from __future__ import annotations

import pytest
import torch

import mmaccel
from mmaccel.errors import NotSupportedError
from mmaccel.methods.base import Stage
from mmaccel.methods.registry import get_method
from tests.method_matrix import METHOD_MATRIX
from tests.tiny_models import FAMILIES, GENERATE_KWARGS

BUDGET = 6  # visual tokens kept per image (of 16), per tile on LLaVA-NeXT
ROWS = [(1, 0), (2, 1)]  # two prompts: one image, then two (different seeds)
STEPS = dict(max_new_tokens=3, **GENERATE_KWARGS)
LLAVA_METHODS = sorted(m for m in METHOD_MATRIX if get_method(m).stage != Stage.FRAMES)
OTHER_FAMILIES = [(family, method) for family in ("qwen2_vl", "llava_next") for method in ("visionzip", "fastv")]


@pytest.fixture(scope="module")
def models() -> dict:
    return {}


def _model(models: dict, family: str):
    if family not in models:
        models[family] = FAMILIES[family].build()
    return models[family]


def _generate(model, inputs, **mode):
    return model.generate(**inputs, **{**STEPS, **mode})


def _untouched(model) -> bool:
    """No mmaccel hook, wrapper or attention implementation left on the model."""
    hooks = [
        hook
        for m in model.modules()
        for hook in [*m._forward_pre_hooks.values(), *m._forward_hooks.values()]
        if getattr(hook, "__module__", "").startswith("mmaccel")
    ]
    wrapped = {"get_image_features", "get_video_features"} & set(vars(model.model)) or "generate" in vars(model)
    names = (model.config.text_config._attn_implementation, model.config.vision_config._attn_implementation)
    return not hooks and not wrapped and not any(name.startswith("mmaccel") for name in names)


class _ModuleCalls:
    """Counts every module forward run while it is active (a global pre-hook)."""

    def __enter__(self):
        self.count = 0

        def count(module, args):
            self.count += 1

        self._handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
        return self

    def __exit__(self, *exc_info) -> None:
        self._handle.remove()


def _check_working_modes(model, family: str, method: str) -> None:
    batch = FAMILIES[family].inputs(model, ROWS)
    singles = [FAMILIES[family].inputs(model, [row]) for row in ROWS]
    length = batch["input_ids"].shape[1]
    with mmaccel.apply(model, method, budget=BUDGET, **METHOD_MATRIX[method]) as session:
        greedy = _generate(model, batch, output_logits=True, return_dict_in_generate=True)

        no_cache = _generate(model, batch, use_cache=False, output_logits=True, return_dict_in_generate=True)
        assert len(session.calls) == 2, "use_cache=False: one prefill, then steps that continue it"
        assert session.last_call.decode_steps == STEPS["max_new_tokens"] - 1
        assert torch.equal(no_cache.sequences, greedy.sequences), "use_cache=False"
        for cached, recomputed in zip(greedy.logits, no_cache.logits, strict=True):
            torch.testing.assert_close(recomputed, cached, atol=1e-5, rtol=1e-5)

        beams = _generate(model, batch, num_beams=3)
        assert session.last_call.stats[0].visual_tokens > 0 and len(session.last_call.stats) == 3 * len(ROWS)
        for row, single in enumerate(singles):
            alone = _generate(model, single, num_beams=3)
            assert torch.equal(beams[row, length:], alone[0, single["input_ids"].shape[1] :]), f"beams, row {row}"
        best_of_two = _generate(model, batch, num_beams=3, num_return_sequences=2)
        assert torch.equal(best_of_two[::2], beams), "num_beams=3, num_return_sequences=2"

        torch.manual_seed(7)
        sampled = _generate(model, batch, do_sample=True)
        torch.manual_seed(7)
        assert torch.equal(_generate(model, batch, do_sample=True), sampled), "do_sample with a seed"
        copies = _generate(model, batch, do_sample=True, top_k=1, num_return_sequences=2)
        expected = greedy.sequences.repeat_interleave(2, dim=0)
        assert torch.equal(copies, expected), "do_sample, top_k=1, num_return_sequences=2"

        lookup = _generate(model, singles[1], prompt_lookup_num_tokens=2, max_matching_ngram_size=1)
        assert torch.equal(lookup, _generate(model, singles[1])), "prompt_lookup_num_tokens"
    assert _untouched(model)


@pytest.mark.parametrize("method", LLAVA_METHODS)
def test_llava_generation_modes_work(models, method):
    _check_working_modes(_model(models, "llava"), "llava", method)


@pytest.mark.parametrize(("family", "method"), OTHER_FAMILIES)
def test_other_families_generation_modes_work(models, family, method):
    _check_working_modes(_model(models, family), family, method)


def _refused_modes(model) -> dict[str, dict]:
    """Mode name -> generate arguments that a session refuses."""
    assistant = FAMILIES["llava"].build(seed=1)
    return {
        "assistant_model": {"assistant_model": assistant},
        "cache_implementation": {"cache_implementation": "static"},
        "prefill_chunk_size": {"prefill_chunk_size": 4},
    }


@pytest.mark.parametrize("method", LLAVA_METHODS)
def test_unsupported_modes_are_refused_before_the_model_runs(models, method):
    model = _model(models, "llava")
    inputs = FAMILIES["llava"].inputs(model, ROWS[:1])
    with mmaccel.apply(model, method, budget=BUDGET, **METHOD_MATRIX[method]) as session:
        for name, mode in _refused_modes(model).items():
            with _ModuleCalls() as calls, pytest.raises(NotSupportedError, match=name) as error:
                _generate(model, inputs, **mode)
            assert calls.count == 0, name
            assert repr(method) in str(error.value) and "Supported:" in str(error.value)
        assert session.calls == []
        _generate(model, inputs)  # the session still works
        assert len(session.calls) == 1
    assert _untouched(model)


def test_a_static_cache_object_is_refused_before_the_model_runs(models):
    from transformers import StaticCache

    model = _model(models, "llava")
    inputs = FAMILIES["llava"].inputs(model, ROWS[:1])
    cache = StaticCache(config=model.config.text_config, max_cache_len=64)
    session = mmaccel.apply(model, "fastv", budget=BUDGET, **METHOD_MATRIX["fastv"])
    with session, _ModuleCalls() as calls, pytest.raises(NotSupportedError, match="static cache"):
        _generate(model, inputs, past_key_values=cache)
    assert calls.count == 0


def test_greedy_return_sequences_are_refused_by_transformers_before_the_model_runs(models):
    """Greedy decoding with ``num_return_sequences > 1`` (no beams) is transformers' own refusal."""
    model = _model(models, "llava")
    inputs = FAMILIES["llava"].inputs(model, ROWS[:1])
    session = mmaccel.apply(model, "visionzip", budget=BUDGET)
    with session, _ModuleCalls() as calls, pytest.raises(ValueError, match="num_return_sequences"):
        _generate(model, inputs, num_return_sequences=2)
    assert calls.count == 0


def test_a_method_that_changes_nothing_runs_every_mode_unchanged(models):
    """The full budget keeps everything: a refused mode is still refused, a working one is bit-identical."""
    model = _model(models, "llava")
    inputs = FAMILIES["llava"].inputs(model, ROWS)
    expected = _generate(model, inputs, num_beams=3)
    with mmaccel.apply(model, "visionzip", budget=1.0):
        assert torch.equal(_generate(model, inputs, num_beams=3), expected)
        with pytest.raises(NotSupportedError, match="static"):
            _generate(model, inputs, cache_implementation="static")


def test_expanded_rows_keep_the_reduction_of_their_prompt(models):
    """Every copy of a prompt keeps the visual tokens the prompt keeps alone (random: seeded per unit)."""
    model = _model(models, "llava")
    batch = FAMILIES["llava"].inputs(model, ROWS)
    with mmaccel.apply(model, "random", budget=BUDGET, **METHOD_MATRIX["random"]) as session:
        _generate(model, batch, num_beams=3)
        expanded = [keep.clone() for keep in session.last_call.visual_keep]  # per item, 3 copies per prompt
        _generate(model, batch)
        alone = session.last_call.visual_keep  # per item: image of row 0, two images of row 1
    assert len(expanded) == 3 * len(alone)
    copies = [alone[0]] * 3 + [alone[1], alone[2]] * 3
    assert all(torch.equal(a, b) for a, b in zip(expanded, copies, strict=True))
