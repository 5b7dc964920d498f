"""Qwen2-VL and Qwen2.5-VL: adapter facts, the method contract, and M-RoPE positions after token reduction."""

from __future__ import annotations

import itertools

import pytest
import torch

import mmaccel
from mmaccel.engine.sequence import visual_layout
from mmaccel.errors import NotSupportedError
from mmaccel.models.registry import adapter_for
from mmaccel.models.tiny import (
    TINY_IMAGE_TOKEN,
    TINY_VIDEO_TOKEN,
    tiny_qwen2_5_vl,
    tiny_qwen2_vl,
    tiny_qwen_inputs,
)
from tests.method_matrix import METHOD_MATRIX

BUILDERS = {"qwen2_vl": tiny_qwen2_vl, "qwen2_5_vl": tiny_qwen2_5_vl}
FAMILIES = sorted(BUILDERS)
METHODS = sorted(METHOD_MATRIX)
BEFORE_PROCESSOR = {"downsample"}  # acts on the images: tests/methods/test_downsample.py
IN_TOWER = {"tome", "evit"}  # raise NotSupportedError in validate on this family
GRIDS = [(1, 8, 8), (1, 4, 8)]  # 16 and 8 language-model tokens
TOKENS = [16, 8]
BUDGET = 6
VIDEO_GRID = (2, 4, 4)  # 2 frames of 2 x 2 merged tokens
GENERATE_KWARGS = {"do_sample": False, "suppress_tokens": [100, 101, 102, 103], "pad_token_id": 0}
STEPS = 5

_MODELS: dict[tuple[str, str], torch.nn.Module] = {}


def build(family: str, attn: str = "sdpa"):
    if (family, attn) not in _MODELS:
        _MODELS[family, attn] = BUILDERS[family](attn=attn)
    return _MODELS[family, attn]


def batch(video: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    return tiny_qwen_inputs(batch=2, seed=seed, grids=GRIDS, video_grid=VIDEO_GRID if video else None)


def split_rows(inputs: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Each row of a left-padded batch as its own unpadded single-row input (images and videos sliced)."""
    rows, image_at, video_at = [], 0, 0
    for b in range(inputs["input_ids"].shape[0]):
        real = inputs["attention_mask"][b].bool()
        row = {key: inputs[key][b : b + 1, real] for key in ("input_ids", "attention_mask", "mm_token_type_ids")}
        for prefix, at in (("image", image_at), ("video", video_at)):
            grids = inputs.get(f"{prefix}_grid_thw")
            if grids is None:
                continue
            n_items = int((row["input_ids"] == (TINY_IMAGE_TOKEN if prefix == "image" else TINY_VIDEO_TOKEN)).any())
            starts = torch.cat([torch.zeros(1, dtype=torch.long), grids.prod(-1).cumsum(0)])
            key = "pixel_values" if prefix == "image" else "pixel_values_videos"
            row[key] = inputs[key][starts[at] : starts[at + n_items]]
            row[f"{prefix}_grid_thw"] = grids[at : at + n_items]
            if prefix == "image":
                image_at += n_items
            else:
                video_at += n_items
        rows.append(row)
    return rows


def hook_count(model) -> int:
    return sum(
        len(m._forward_pre_hooks) + len(m._forward_hooks) + len(m._forward_pre_hooks_with_kwargs)
        for m in model.modules()
    )


def logits_of(model, inputs):
    with torch.no_grad():
        return model(**inputs).logits


def generate(model, inputs, steps: int = STEPS):
    return model.generate(
        **inputs, max_new_tokens=steps, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
    )


# -- adapter facts ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_adapter_facts(family):
    model = build(family)
    adapter = adapter_for(model)
    assert adapter.name == family
    assert adapter.tokens_per_image() is None and not adapter.has_cls_token() and adapter.scores_without_cls()
    assert adapter.uses_mrope() and adapter.reduction_module() is None
    assert adapter.visual_token_ids() == {"image": TINY_IMAGE_TOKEN, "video": TINY_VIDEO_TOKEN}
    inputs = batch(video=True)
    image_layouts = adapter.visual_layouts("image", inputs, len(TOKENS))
    assert [layout.n_tokens for layout in image_layouts] == TOKENS
    assert all(len(layout.grids) == 1 and not layout.frames for layout in image_layouts)
    video_layouts = adapter.visual_layouts("video", inputs, 2)  # 2 frame groups of 2 x 2 merged tokens each
    assert [layout.n_tokens for layout in video_layouts] == [8, 8]
    assert all(layout.frames == {0: 0, 1: 1} and layout.unit.tolist() == [0] * 4 + [1] * 4 for layout in video_layouts)
    positions, deltas = adapter.rope_positions(inputs)
    reference, reference_deltas = model.model.get_rope_index(
        inputs["input_ids"],
        inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        video_grid_thw=inputs["video_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    assert torch.equal(positions, reference) and torch.equal(deltas, reference_deltas)


def test_qwen2_5_scores_come_from_the_last_full_attention_block():
    adapter = adapter_for(build("qwen2_5_vl"))
    assert adapter.score_block() == 1  # blocks 0 and 2 use window attention
    grids = torch.tensor([[1, 8, 8]])
    order = adapter.tower_group_order(grids)
    assert sorted(order.tolist()) == list(range(16)) and order.tolist() != list(range(16))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", sorted(IN_TOWER))
def test_in_tower_methods_raise_before_touching_the_model(family, method):
    model = build(family)
    hooks, vision = hook_count(model), model.config.vision_config._attn_implementation
    with pytest.raises(NotSupportedError, match="packed sequence"):
        mmaccel.apply(model, method, budget=BUDGET, **METHOD_MATRIX[method])
    assert hook_count(model) == hooks and model.config.vision_config._attn_implementation == vision


def test_cls_substitute_needs_per_image_attention_calls():
    adapter = adapter_for(build("qwen2_vl"))

    class FlashTower(type(adapter)):
        def attn_implementation(self, part: str) -> str:
            return "flash_attention_2" if part == "vision" else super().attn_implementation(part)

    with pytest.raises(NotSupportedError, match="FlashAttention"):
        mmaccel.methods.get_method("fastervlm")(budget=4).validate(FlashTower(adapter.model))


# -- budgets on items of different sizes (the rest of the contract: tests/engine/test_contract.py, with video) ------
def _apply(model, method, budget):
    return mmaccel.apply(model, method, budget=budget, **METHOD_MATRIX[method])


def _supported(method):
    if method in IN_TOWER:
        pytest.skip("raises NotSupportedError on this family (tested above)")
    if method in BEFORE_PROCESSOR:
        pytest.skip("acts on the images before the processor: tests/methods/test_downsample.py")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_kept_count_equals_budget_per_item(family, method):
    _supported(method)
    model = build(family)
    with _apply(model, method, BUDGET) as session:
        out = model.generate(**batch(), max_new_tokens=3, **GENERATE_KWARGS)
    assert out.shape[1] == batch()["input_ids"].shape[1] + 3
    for stats, n_image in zip(session.last_call.stats, TOKENS):
        assert stats.visual_tokens == n_image
        if hasattr(session.method, "layer_plan"):  # a layer-average budget: each layer as the method plans
            assert stats.layer_tokens == session.method.layer_plan(n_image, 4)
        elif method == "fastv":
            assert stats.layer_tokens == [n_image] * 2 + [BUDGET] * 2
        else:
            assert stats.stages["vision_output"] == (n_image, BUDGET)
            assert stats.layer_tokens == [BUDGET] * 4


# -- positions: reduced runs equal uncompressed runs whose 4-D mask hides the dropped tokens -------------------------
def _hidden_prompt_tokens(inputs, session, method) -> torch.Tensor:
    """(B, N) True for the prompt tokens the method dropped (before the language model, or at FastV's layer)."""
    ids = inputs["input_ids"]
    call = session.last_call
    if call.llm_keep:
        ((_, kept_rows),) = call.llm_keep.items()
        hidden = torch.ones_like(ids, dtype=torch.bool)
        for row, kept in enumerate(kept_rows):
            hidden[row, kept] = False
        return hidden
    counts = {TINY_IMAGE_TOKEN: [], TINY_VIDEO_TOKEN: []}
    for token in counts:
        counts[token] = [int(n) for n in (ids == token).sum(1).tolist() if n]
    layout = visual_layout(ids, {token: c for token, c in counts.items() if c})
    hidden = torch.zeros_like(ids, dtype=torch.bool)
    for item, (row, count) in enumerate(zip(layout.rows, layout.counts)):
        span = torch.nonzero(layout.index[row] == sum(1 for r in layout.rows[:item] if r == row)).flatten()
        assert span.numel() == count
        dropped = torch.ones(count, dtype=torch.bool)
        dropped[call.visual_keep[item]] = False
        hidden[row, span[dropped]] = True
    return hidden


def _reference_logits(model, inputs, generated, hidden, from_layer: int) -> torch.Tensor:
    """Last-position logits of the full sequence without cache, M-RoPE positions as the model numbers the full
    prompt, and a 4-D mask that hides ``hidden`` prompt tokens in decoder layers >= ``from_layer``."""
    adapter = adapter_for(model)
    mask = inputs["attention_mask"]
    positions, _ = adapter.rope_positions(inputs)  # (3, B, N)
    step = generated.shape[1]
    next_position = positions[:, :, -1].amax(0) + 1  # (B,)
    positions = torch.cat([positions, (next_position[:, None] + torch.arange(step)).expand(3, -1, -1)], dim=-1)
    length = positions.shape[-1]
    real = torch.cat([mask.bool(), torch.ones_like(generated, dtype=torch.bool)], dim=1)  # (B, L)
    hidden = torch.cat([hidden, torch.zeros_like(generated, dtype=torch.bool)], dim=1)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    diagonal = torch.eye(length, dtype=torch.bool)

    def as_mask(visible):  # (B, L) -> 4-D mask in the implementation's format
        allowed = (causal & visible[:, None, None, :]) | diagonal
        if model.config.text_config._attn_implementation == "eager":
            return torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min)
        return allowed

    def hide(module, args, kwargs):
        kwargs["attention_mask"] = as_mask(real & ~hidden)
        return args, kwargs

    layers = model.model.language_model.layers
    handles = [layers[i].register_forward_pre_hook(hide, with_kwargs=True) for i in range(from_layer, len(layers))]
    extra = {key: inputs[key] for key in ("pixel_values_videos", "video_grid_thw") if key in inputs}
    try:
        with torch.no_grad():
            out = model(
                input_ids=torch.cat([inputs["input_ids"], generated], dim=1),
                attention_mask={"full_attention": as_mask(real)},
                position_ids=positions,
                pixel_values=inputs["pixel_values"],
                image_grid_thw=inputs["image_grid_thw"],
                mm_token_type_ids=torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(generated).int()], dim=1),
                use_cache=False,
                **extra,
            )
    finally:
        for handle in handles:
            handle.remove()
    return out.logits[:, -1]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(("method", "kwargs"), [("random", {"seed": 1}), ("fastervlm", {}), ("fastv", {"k": 2})])
def test_prefill_and_every_decode_step_equal_a_masked_uncompressed_run(family, attn, method, kwargs):
    model = build(family, attn)
    inputs = batch(video=True, seed=4)
    with mmaccel.apply(model, method, budget=3, **kwargs) as session:
        out = generate(model, inputs)
    hidden = _hidden_prompt_tokens(inputs, session, method)
    # two images (16 and 8 tokens) and two videos of 2 frames x 4 tokens: 3 kept of each image and of each frame
    assert int(hidden.sum()) == (16 - 3) + (8 - 3) + 2 * 2 * (4 - 3)
    prompt_length = inputs["input_ids"].shape[1]
    for step, step_logits in enumerate(out.logits):
        generated = out.sequences[:, prompt_length : prompt_length + step]
        reference = _reference_logits(model, inputs, generated, hidden, from_layer=kwargs.get("k", 0))
        torch.testing.assert_close(step_logits, reference, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_video_items_carry_frame_ids_of_their_kept_tokens(family):
    model = build(family)
    inputs = batch(video=True)
    with mmaccel.apply(model, "fastervlm", budget=3) as session:
        logits_of(model, inputs)
    call = session.last_call
    assert sorted(call.visual_frames) == [0, 1, 2, 3]  # items: image, video of row 0; image, video of row 1
    for item in (1, 3):  # videos of 2 frames x 4 tokens
        assert torch.equal(call.visual_frames[item], call.visual_keep[item] // 4)
    for item in (0, 2):
        assert not call.visual_frames[item].any()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["visionzip", "fastv"])
def test_decode_loop_without_position_ids_equals_generate(family, method):
    model = build(family)
    inputs = batch(seed=6)
    prompt_length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, method, budget=4):
        out = generate(model, inputs)
        with torch.no_grad():
            step = model(**inputs, use_cache=True)
            torch.testing.assert_close(step.logits[:, -1], out.logits[0], atol=1e-5, rtol=1e-5)
            mask = inputs["attention_mask"]
            for t in range(1, len(out.logits)):
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                token = out.sequences[:, prompt_length + t - 1 : prompt_length + t]
                step = model(input_ids=token, attention_mask=mask, past_key_values=step.past_key_values)
                torch.testing.assert_close(step.logits[:, -1], out.logits[t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_rope_deltas_continue_a_reduced_prompt_after_the_session(family):
    model = build(family)
    inputs = split_rows(batch(seed=7))[0]
    inputs.pop("attention_mask")
    prompt_length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, "fastervlm", budget=5) as session:
        out = generate(model, inputs)
        with torch.no_grad():
            step = model(**inputs, use_cache=True)
    assert session.last_call.stats[0].llm_input_tokens == 5
    kept_length = prompt_length - 16 + 5
    positions, _ = adapter_for(model).rope_positions(inputs)
    assert model.model.rope_deltas.tolist() == [[int(positions.max()) + 1 - kept_length]]
    with torch.no_grad():  # decode steps outside the session: the model numbers them from rope_deltas
        for t in range(1, len(out.logits)):
            token = out.sequences[:, prompt_length + t - 1 : prompt_length + t]
            step = model(input_ids=token, past_key_values=step.past_key_values)
            torch.testing.assert_close(step.logits[:, -1], out.logits[t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_received_attention_scores_match_a_manual_recomputation(family):
    """The CLS substitute: attention received in the score block, mean over queries, summed per 2x2 merge group,
    in merged-token order (through Qwen2.5-VL's window permutation)."""
    from mmaccel.methods.fastervlm import FasterVLM

    model = build(family)
    adapter = adapter_for(model)
    block = model.model.visual.blocks[adapter.score_block()]
    module = __import__(type(block).__module__, fromlist=["apply_rotary_pos_emb_vision"])
    captured, seen = {}, []

    def capture(mod, args, kwargs):
        captured.update(hidden=args[0], cu_seqlens=kwargs["cu_seqlens"], rope=kwargs["position_embeddings"])

    class Recording(FasterVLM):
        def reduce_visual(self, tokens):
            seen.append(tokens.cls_attention[0].mean(dim=0))  # (P,)
            return super().reduce_visual(tokens)

    inputs = batch()
    handle = block.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with mmaccel.apply(model, Recording(budget=3)):
            logits_of(model, inputs)
    finally:
        handle.remove()
    attention = block.attn
    with torch.no_grad():
        x = block.norm1(captured["hidden"])  # (N, C) patches in the blocks' order
        q, k, _ = attention.qkv(x).reshape(x.shape[0], 3, attention.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        q, k = module.apply_rotary_pos_emb_vision(q, k, *captured["rope"])
        bounds = captured["cu_seqlens"].tolist()
        received = []
        for start, end in itertools.pairwise(bounds):
            logits = torch.einsum("qhd,khd->hqk", q[start:end], k[start:end]).float() * attention.scaling
            received.append(logits.softmax(dim=-1).mean(dim=1))  # (H, n)
        per_group = torch.cat(received, dim=1).mean(dim=0).view(-1, 4).sum(dim=-1)  # (G,) blocks' order
    expected = torch.empty_like(per_group)
    expected[adapter.tower_group_order(inputs["image_grid_thw"])] = per_group
    torch.testing.assert_close(torch.cat(seen), expected, atol=1e-6, rtol=1e-5)
