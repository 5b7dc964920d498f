"""SparseVLM against a straightforward re-computation of the reference algorithm (Gumpest/SparseVLMs).

The reference functions below follow the reference code for one prompt with one image: full (1, H, L, L)
attention matrices, one visual span, index arithmetic on that span. DPC-KNN's random tie-breaking noise is left
out (the method breaks ties by index; random tensors have no ties).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

import mmaccel
from mmaccel.engine.budget_check import record_budget
from mmaccel.engine.context import SampleStats, TokenContext
from mmaccel.engine.layers import LayerStage
from mmaccel.errors import ConfigError
from mmaccel.methods import LayerTokens, SparseVLM, Stage, TokenMethod
from mmaccel.methods.base import LayerReduction
from mmaccel.methods.sparsevlm import MONOTONE_SCHEDULES, REFERENCE_SCHEDULES, equal_tokens
from tests.tiny_models import GENERATE_KWARGS, IMAGE_TOKEN, batch_inputs, prompt_ids, single_inputs, tiny_llava

TABLE = (192, 128, 96, 64)

# -- the reference, re-computed ----------------------------------------------------------------------------------


def reference_raters(hidden, v_start, v_num):
    """Text raters from the layer-0 input: positions relative to the text start (``t_token_idx[1]``)."""
    v_t = hidden[:, v_start : v_start + v_num]
    t_t = hidden[:, v_start + v_num :]
    m_v_t = (v_t @ t_t.transpose(1, 2)).softmax(2).mean(1)  # (1, Lt)
    return torch.where(m_v_t > m_v_t.mean())[1]


def reference_cluster_and_merge(x, cluster_num):
    """utils.py ``cluster_and_merge`` for one batch row, without the tie-breaking noise."""
    _, n, c = x.shape
    dist_matrix = (x[:, :, None, :] - x[:, None, :, :]).norm(dim=-1, p=2) / c**0.5  # (1, N, N)
    dist_nearest = torch.topk(dist_matrix, k=cluster_num, dim=-1, largest=False).values
    density = (-(dist_nearest**2).mean(dim=-1)).exp()  # (1, N)
    mask = (density[:, None, :] > density[:, :, None]).type(x.dtype)
    dist_max = dist_matrix.flatten(1).max(dim=-1)[0][:, None, None]
    dist = (dist_matrix * mask + dist_max * (1 - mask)).min(dim=-1)[0]
    index_down = torch.topk(dist * density, k=cluster_num, dim=-1).indices  # (1, C)
    idx_cluster = dist_matrix[0, index_down[0]].argmin(dim=0)  # (N,)
    idx_cluster[index_down[0]] = torch.arange(cluster_num)
    all_weight = torch.zeros(cluster_num, 1).index_add_(0, idx_cluster, torch.ones(n, 1)) + 1e-6
    merged = torch.zeros(cluster_num, c).index_add_(0, idx_cluster, x[0] / all_weight[idx_cluster])
    return merged[None]


def reference_rope_weights(positions, heads, head_dim):
    """SparseVLM+ gravity correction: q = k = ones rotated to ``positions``, q k^T / sqrt(d): (1, H, L, L)."""
    rotary = LlamaRotaryEmbedding(LlamaConfig(hidden_size=heads * head_dim, num_attention_heads=heads))
    ones = torch.ones(1, heads, positions.numel(), head_dim)
    cos, sin = rotary(ones, positions[None])
    query, key = apply_rotary_pos_emb(ones, ones, cos, sin)
    return query @ key.transpose(2, 3) / head_dim**0.5, (cos, sin)


def reference_stage(attn, hidden, v_start, v_num, raters, count, version="1.5", rope=None, n_heads=14):
    """One pruning layer: attn (1, H, L, L) probabilities of the layer, hidden (1, L, D) its output, raters
    absolute positions. Returns (kept visual positions, recycled tokens (1, C', D), the new hidden states)."""
    if version == "2.0":
        attn = attn / rope
        per_head = attn[0][:, raters, v_start : v_start + v_num].sum((1, 2))  # select_attn_head_by_sum
        attn = attn[:, per_head.topk(n_heads)[1]]
    relation = attn.mean(1)[:, raters, v_start : v_start + v_num].mean(1)  # (1, n)
    mask = torch.zeros_like(relation, dtype=torch.bool)
    mask[0][torch.topk(relation, min(count, v_num - 1), dim=1).indices] = True
    kept = torch.where(mask[0])[0] + v_start
    merged = hidden.new_zeros(1, 0, hidden.shape[-1])
    if version == "1.5":
        pruned = torch.where(~mask[0])[0]
        stage1 = relation[0][pruned]
        stage2 = stage1.topk(int(pruned.numel() * 0.3) + 1)[1]
        tokens = hidden[:, v_start + pruned[stage2]]
        merged = reference_cluster_and_merge(tokens, int(tokens.shape[1] / 10) + 1)
    new_hidden = torch.cat([hidden[:, :v_start], hidden[:, kept], merged, hidden[:, v_start + v_num :]], dim=1)
    return kept, merged, new_hidden


# -- fixed tensors -------------------------------------------------------------------------------------------------


def _fixed(heads=4, length=40, v_start=5, v_num=24, dim=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, heads, length, length, generator=generator)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    attn = logits.masked_fill(~causal, float("-inf")).softmax(-1)
    hidden = torch.randn(1, length, dim, generator=generator)
    visual_index = torch.full((1, length), -1)
    visual_index[0, v_start : v_start + v_num] = 0
    return attn, hidden, visual_index


def _layer_tokens(attn, hidden, visual_index, raters, rope=None):
    v_num = int((visual_index >= 0).sum())
    return LayerTokens(
        layer=1,
        hidden=hidden,
        visual_index=visual_index,
        valid=torch.ones_like(visual_index, dtype=torch.bool),
        attention=attn[:, :, raters],
        query_rows=raters[None],
        origin=torch.arange(hidden.shape[1])[None],
        entry_counts=torch.tensor([[v_num]]),
        position_embeddings=rope,
        n_layers=4,
    )


def test_raters_match_reference():
    _, hidden, visual_index = _fixed(length=60, v_start=7, v_num=30)
    tokens = _layer_tokens(torch.zeros(1, 1, 60, 60), hidden, visual_index, torch.tensor([0]))
    raters = SparseVLM(budget=8).select_queries(tokens)
    expected = reference_raters(hidden, 7, 30) + 37
    assert 0 < expected.numel() < 23
    assert torch.nonzero(raters[0]).flatten().tolist() == expected.tolist()


@pytest.mark.parametrize("count", [12, 5, 1])
def test_v15_stage_keeps_and_recycles_as_reference(count):
    attn, hidden, visual_index = _fixed()
    raters = torch.tensor([30, 33, 34, 38])
    kept, merged, new_hidden = reference_stage(attn, hidden, 5, 24, raters, count)
    method = SparseVLM(schedule=(count,), layers=(0,))
    reduction = method.prune_layer(_layer_tokens(attn, hidden, visual_index, raters))
    text = torch.cat([torch.arange(5), torch.arange(29, 40)])
    assert reduction.keep[0].tolist() == torch.cat([text, kept]).sort().values.tolist()
    torch.testing.assert_close(reduction.weights[0] @ hidden[0], merged[0])
    order, extra, _ = LayerStage._order(reduction.keep, reduction, hidden)
    torch.testing.assert_close(torch.cat([hidden, extra], dim=1)[0, order[0]], new_hidden[0])


def test_v20_stage_corrects_by_rope_and_selects_heads_as_reference():
    heads, head_dim = 32, 8
    attn, hidden, visual_index = _fixed(heads=heads)
    positions = torch.tensor([*range(5), *range(9, 33), *range(40, 51)])  # original positions after a pruning
    rope, (cos, sin) = reference_rope_weights(positions, heads, head_dim)
    raters = torch.tensor([29, 31, 35, 39])
    kept, _, _ = reference_stage(attn, hidden, 5, 24, raters, 10, version="2.0", rope=rope)
    method = SparseVLM(schedule=(10,), layers=(0,), version="2.0")
    reduction = method.prune_layer(_layer_tokens(attn, hidden, visual_index, raters, rope=(cos, sin)))
    assert reduction.keep[0][5:-11].tolist() == kept.tolist()
    assert all(w.shape[0] == 0 for w in reduction.weights)  # v2.0 recycles nothing


def test_dpc_knn_matches_reference_cluster_and_merge():
    from mmaccel.ops.cluster import dpc_knn

    tokens = torch.randn(1, 23, 12, generator=torch.Generator().manual_seed(4))
    clusters = dpc_knn(tokens[0], 3)
    torch.testing.assert_close(clusters.merged, reference_cluster_and_merge(tokens, 3)[0])
    assert sorted(clusters.assignment.unique().tolist()) == [0, 1, 2]
    assert clusters.assignment[clusters.centres].tolist() == [0, 1, 2]


# -- end to end on the tiny model ---------------------------------------------------------------------------------


def _reference_prefill(model, embeds, v_start, v_num, layers, counts, version, n_heads):
    """The reference prefill, layer by layer, with full eager attention matrices (batch 1, one image)."""
    lm = model.model.language_model
    hidden, positions = embeds, torch.arange(embeds.shape[1])
    text_start = v_start + v_num
    raters_rel = reference_raters(embeds, v_start, v_num)
    log = {}
    for index, layer in enumerate(lm.layers):
        length = hidden.shape[1]
        cos, sin = lm.rotary_emb(hidden, positions[None])
        mask = torch.full((length, length), torch.finfo(hidden.dtype).min).triu(1)[None, None]
        attn_out, attn = layer.self_attn(
            layer.input_layernorm(hidden), position_embeddings=(cos, sin), attention_mask=mask
        )
        hidden = hidden + attn_out
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        if index in layers:
            raters = raters_rel + text_start
            rope = None
            if version == "2.0":
                head_dim = cos.shape[-1]
                rope = reference_rope_weights(positions, attn.shape[1], head_dim)[0]
            count = counts[layers.index(index)]
            kept, merged, hidden = reference_stage(attn, hidden, v_start, v_num, raters, count, version, rope, n_heads)
            if version == "2.0":
                positions = torch.cat([positions[:v_start], positions[kept], positions[text_start:]])
            else:
                positions = torch.arange(hidden.shape[1])
            log[index] = (raters, kept, hidden, text_start)
            v_num = kept.numel() + merged.shape[1]
            text_start = v_start + v_num
    return model.lm_head(lm.norm(hidden))[:, -1], log


@pytest.mark.parametrize(("version", "n_heads"), [("1.5", 14), ("2.0", 2)])
def test_prefill_matches_reference_layer_by_layer(version, n_heads):
    model = tiny_llava(attn="eager")
    inputs = single_inputs(n_images=1)
    v_start = int(torch.nonzero(inputs["input_ids"][0] == IMAGE_TOKEN)[0])
    lm = model.model.language_model
    captured = {}
    handle = lm.register_forward_pre_hook(
        lambda m, a, kw: captured.update(embeds=kw["inputs_embeds"]), with_kwargs=True
    )
    with torch.no_grad():
        model(**inputs)
    handle.remove()
    method = SparseVLM(budget=6, layers=(0, 1, 2), version=version, priority_heads=n_heads)
    counts = method.stage_counts(16, 4)
    with torch.no_grad():
        expected_logits, log = _reference_prefill(
            model, captured["embeds"], v_start, 16, [0, 1, 2], counts, version, n_heads
        )

    entering = {}
    with mmaccel.apply(model, method) as session, torch.no_grad():
        handles = [
            lm.layers[i + 1].register_forward_pre_hook(
                lambda m, a, kw, i=i: entering.update({i: a[0] if a else kw["hidden_states"]}), with_kwargs=True
            )
            for i in range(3)
        ]
        logits = model(**inputs).logits[:, -1]
        for h in handles:
            h.remove()
    call = session.last_call
    for index, (raters, kept, hidden, text_start) in log.items():
        assert call.llm_queries[index][0].tolist() == raters.tolist()
        keep = call.llm_keep[index + 1][0]
        assert keep[(keep >= v_start) & (keep < text_start)].tolist() == kept.tolist()
        torch.testing.assert_close(entering[index], hidden, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits, expected_logits, atol=1e-5, rtol=1e-5)


# -- the KV cache ----------------------------------------------------------------------------------------------------


@dataclass
class ReplayReductions(TokenMethod):
    """Re-applies recorded SparseVLM reductions to a longer sequence (the prompt plus generated tokens)."""

    stage = Stage.LLM_PREFILL
    has_positions_option = True

    reductions: dict[int, LayerReduction] = field(default_factory=dict)
    positions: str = "contiguous"

    def keeps_all(self, n_tokens: int) -> bool:
        return False

    def prune_layers(self, n_layers: int) -> tuple[int, ...]:
        return tuple(self.reductions)

    def prune_layer(self, tokens: LayerTokens) -> LayerReduction:
        recorded = self.reductions[tokens.layer]
        length = tokens.hidden.shape[1]
        prompt = recorded.weights[0].shape[1]
        tail = torch.arange(prompt, length)
        return LayerReduction(
            keep=[torch.cat([k, tail]) for k in recorded.keep],
            weights=[torch.nn.functional.pad(w, (0, length - prompt)) for w in recorded.weights],
            before=recorded.before,
            source=recorded.source,
        )


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("version", ["1.5", "2.0"])
def test_cached_decode_equals_no_cache_recompute(attn, version):
    model = tiny_llava(attn=attn)
    prompts = [prompt_ids(1, text_before=1, seed=3), prompt_ids(2, text_before=4, seed=4)]
    inputs = batch_inputs(prompts, [1, 2], seed=2)
    prompt_length = inputs["input_ids"].shape[1]
    with mmaccel.apply(model, "sparsevlm", budget=5, layers=(0, 1, 2), version=version) as session:
        out = model.generate(
            **inputs, max_new_tokens=5, output_logits=True, return_dict_in_generate=True, **GENERATE_KWARGS
        )
    reductions = session.last_call.llm_merges
    assert sorted(reductions) == [1, 2, 3]
    replay = ReplayReductions(reductions=reductions, positions=session.method.positions)
    for step, step_logits in enumerate(out.logits):
        sequence = out.sequences[:, : prompt_length + step]
        mask = torch.cat([inputs["attention_mask"], torch.ones(2, step, dtype=torch.long)], dim=1)
        with mmaccel.apply(model, replay), torch.no_grad():
            logits = model(
                input_ids=sequence, attention_mask=mask, pixel_values=inputs["pixel_values"], use_cache=False
            ).logits
        torch.testing.assert_close(step_logits, logits[:, -1], atol=1e-5, rtol=1e-5)


def test_cache_lengths_follow_the_schedule():
    model = tiny_llava()
    inputs = single_inputs(n_images=1)
    prompt_length = inputs["input_ids"].shape[1]
    method = SparseVLM(budget=6, layers=(0, 1, 2))
    with mmaccel.apply(model, method), torch.no_grad():
        out = model(**inputs, use_cache=True)
    plan = method.layer_plan(16, 4)
    text = prompt_length - 16
    assert [out.past_key_values.get_seq_length(i) for i in range(4)] == [text + n for n in plan]


# -- schedules and bad input ---------------------------------------------------------------------------------------


def test_reference_tables_and_solved_budgets():
    for version, table in REFERENCE_SCHEDULES.items():
        for counts in table.values():
            assert SparseVLM(schedule=counts, version=version).stage_counts(576, 32) == counts
    # the official v1.5 192 schedule: 3 layers see 576, then 300 + 9 recycled, 200 + 4, 110 + 3
    plan = SparseVLM(schedule=REFERENCE_SCHEDULES["1.5"][192]).layer_plan(576, 32)
    assert plan == [576] * 3 + [309] * 4 + [204] * 9 + [113] * 16
    assert SparseVLM(budget=192).layer_plan(576, 32)[3:7] == [303 + 9] * 4  # the budget: 303, as 128 keeps
    for budget in (100, 0.3, 80):
        method = SparseVLM(budget=budget)
        target = budget * 576 if isinstance(budget, float) else budget
        assert equal_tokens(method.layer_plan(576, 32)) == pytest.approx(target, abs=0.5)


def test_table_entries_are_their_budgets_in_equal_tokens():
    # The reference log's "Equal Tokens": every layer counted after the pruning its attention scores.
    official = [equal_tokens(SparseVLM(schedule=REFERENCE_SCHEDULES["1.5"][b]).layer_plan(576, 32)) for b in TABLE]
    assert [round(a, 1) for a in official] == [192.0, 128.6, 96.9, 64.8]
    averages = [equal_tokens(SparseVLM(budget=b).layer_plan(576, 32)) for b in TABLE]
    assert [round(a, 1) for a in averages] == [192.4, 128.6, 96.9, 64.8]  # 192: 303 (not 300) after layer 2
    processed = [sum(SparseVLM(budget=b).layer_plan(576, 32)) / 32 for b in TABLE]
    assert [round(a, 1) for a in processed] == [206.9, 145.4, 114.1, 82.2]
    assert SparseVLM(budget=192).requested_tokens(576, 32) == 192.0


@pytest.mark.parametrize("version", ["1.5", "2.0"])
def test_budgets_use_the_tables_raised_to_a_running_maximum(version):
    official, used = REFERENCE_SCHEDULES[version], MONOTONE_SCHEDULES[version]
    raised = {b for b in TABLE if used[b] != official[b]}
    assert raised == {"1.5": {192}, "2.0": {128}}[version]  # the one entry below which the official table dips
    for budget in TABLE:
        assert SparseVLM(budget=budget, version=version).stage_counts(576, 32) == used[budget]
        assert all(u >= o for u, o in zip(used[budget], official[budget]))
    ordered = [used[b] for b in sorted(TABLE)]
    assert all(all(a <= b for a, b in zip(low, high)) for low, high in itertools.pairwise(ordered))


@pytest.mark.parametrize("version", ["1.5", "2.0"])
def test_more_budget_never_keeps_fewer_tokens_on_the_reference_geometry(version):
    # Budgets 60..200 cross the 64, 96, 128 and 192 table entries and the solved schedules between them.
    previous = None
    for budget in range(60, 201):
        plan = SparseVLM(budget=budget, version=version).layer_plan(576, 32)
        if previous is not None:
            assert all(now >= before for now, before in zip(plan, previous)), budget
        previous = plan
    # the report's example: 63, 64 and 65 used to keep 2, 18 and 2 tokens in the last 16 layers
    assert [SparseVLM(budget=b).layer_plan(576, 32)[-1] for b in (63, 64, 65)] == [17, 18, 18]


def test_table_applies_only_at_the_depth_it_was_tuned_for():
    # On 40 layers (LLaVA-1.5-13B) the 192 entry averages 176 Equal Tokens; the budget is solved instead.
    assert equal_tokens(SparseVLM(schedule=(300, 200, 110)).layer_plan(576, 40)) == pytest.approx(176.5, abs=0.5)
    assert equal_tokens(SparseVLM(budget=192).layer_plan(576, 40)) == pytest.approx(192, abs=0.5)


def test_unreachable_budget_gets_the_closest_plan_and_a_warning(caplog):
    # Layers 0-2 keep all 576 tokens and recycling keeps 18 after layer 2: no plan averages below 40 on 32 layers.
    method = SparseVLM(budget=30)
    plan = method.layer_plan(576, 32)
    assert plan[:3] == [576] * 3 and min(plan) >= 1
    assert equal_tokens(plan) == pytest.approx(40.0)
    context = TokenContext(stats=[SampleStats(images=1, visual_tokens=576, layer_tokens=[576] * 32)])
    record_budget(method, context, [[576]])
    assert context.stats[0].requested_tokens == 30.0
    assert "asks for 30.0 visual tokens per layer on average and gets 40.0" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "3"}, r"version='3' is not allowed; use '1.5' or '2.0'"),
        ({"layers": (6, 2)}, r"layers=\(6, 2\) must be strictly increasing"),
        ({"layers": ()}, r"layers must be ints >= 0"),
        ({"layers": (2, 6, 15), "schedule": (10, 5)}, r"schedule=\(10, 5\) needs one count per pruning layer"),
        ({"priority_heads": 0}, r"priority_heads must be ints >= 1"),
        ({"positions": "first"}, r"positions='first' is not allowed"),
    ],
)
def test_bad_configuration_is_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SparseVLM(budget=64, **kwargs)


def test_pruning_layer_beyond_the_model_is_refused():
    model = tiny_llava()
    with pytest.raises(ConfigError, match=r"layers=\(2, 6, 15\) is out of range.*4 layers.*\[0, 2\]"):
        mmaccel.apply(model, "sparsevlm", budget=6, layers=(2, 6, 15))
    with pytest.raises(ConfigError, match=r"schedule=\(9,\) needs one count per pruning layer \(0, 1, 2\)"):
        mmaccel.apply(model, "sparsevlm", schedule=(9,))
    assert model.config.text_config._attn_implementation == "sdpa"


def test_default_layers_are_the_reference_or_scaled_to_the_depth():
    method = SparseVLM(budget=64)
    assert method.prune_layers(32) == (3, 7, 16)
    assert method.prune_layers(40) == (3, 7, 16)
    assert method.pruning_after(4) == (0, 1, 2)
    assert method.pruning_after(8) == (0, 2, 4)
    assert method.pruning_after(2) == (0,)
