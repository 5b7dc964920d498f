"""SparseVLM: text-guided visual-token pruning at several language-model layers, with token recycling."""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from mmaccel.errors import ConfigError
from mmaccel.methods.base import LayerReduction, LayerTokens, Needs, Stage, TokenMethod, check_positions, layer_average
from mmaccel.methods.registry import register_method
from mmaccel.ops.cluster import dpc_knn
from mmaccel.ops.select import topk_keep

if TYPE_CHECKING:
    from mmaccel.models.base import ModelAdapter

REFERENCE_LAYERS = (2, 6, 15)
REFERENCE_IMAGE_TOKENS = 576
REFERENCE_DEPTH = 32  # LLaVA-1.5-7B, whose "Equal Tokens" the tables are tuned to
# Visual tokens kept at layers 2, 6 and 15 for the budgets of the paper tables (score.py, sparse_token_list_*).
REFERENCE_SCHEDULES = {
    "1.5": {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)},
    "2.0": {192: (300, 200, 118), 128: (238, 108, 60), 96: (246, 54, 28), 64: (66, 34, 20)},
}
RECYCLE_FRACTION = 0.3  # the highest-scoring 30 % (+1) of the pruned tokens are recycled
CLUSTER_DIVISOR = 10  # into int(recycled / 10) + 1 clusters
PATH_STEPS = 256  # schedules tried per leg of the path through the reference tables
RHO_STEPS = 4096  # decay rates tried on other geometries


def recycled_count(n_pruned: int) -> int:
    """Tokens that recycling adds back when ``n_pruned`` visual tokens were pruned (v1.x)."""
    return int((int(n_pruned * RECYCLE_FRACTION) + 1) / CLUSTER_DIVISOR) + 1 if n_pruned > 0 else 0


def simulate(n_tokens: int, n_layers: int, layers: tuple[int, ...], counts: tuple[int, ...], recycle: bool):
    """Visual tokens of one image that each decoder layer processes, for ``counts`` kept after ``layers``."""
    current, plan, after = n_tokens, [], dict(zip((layer + 1 for layer in layers), counts))
    for layer in range(n_layers):
        if layer in after and current > 0:
            kept = min(after[layer], current - 1)
            current = kept + (recycled_count(current - kept) if recycle else 0)
        plan.append(current)
    return plan


def equal_tokens(plan: list[int]) -> float:
    """The reference log's "Equal Tokens" of a plan: the layer average with every layer counted after the
    pruning its attention scores (the tokens entering the next layer; the last layer its own)."""
    return layer_average(plan, "after_pruning")


def schedule_path(n_tokens: int, layers: tuple[int, ...], version: str) -> list[tuple[int, ...]]:
    """Candidate schedules (counts kept after each of ``layers``), from the fewest tokens to the most.

    On the reference geometry (576 tokens, layers 2, 6, 15) the path runs through the reference tables: from
    one token per stage through the 64, 96, 128 and 192 entries to n - 1, each leg first lowering the counts
    the next entry has fewer of (a table entry can keep fewer tokens at one stage than the entry below it:
    v1.5 128 -> 192 at layer 2, v2.0 96 -> 128), then raising the others, linearly. Elsewhere it is
    round(n * rho^i) for rho in (0, 1], every count growing with rho.
    """
    if n_tokens == REFERENCE_IMAGE_TOKENS and layers == REFERENCE_LAYERS:
        table = REFERENCE_SCHEDULES[version]
        anchors = [(1,) * len(layers), *(table[b] for b in sorted(table)), (n_tokens - 1,) * len(layers)]
        path = [anchors[0]]
        for start, end in itertools.pairwise(anchors):
            lowered = tuple(min(a, b) for a, b in zip(start, end))
            for leg_start, leg_end in ((start, lowered), (lowered, end)):
                for step in range(1, PATH_STEPS + 1):
                    t = step / PATH_STEPS
                    point = tuple(round(a + t * (b - a)) for a, b in zip(leg_start, leg_end))
                    if point != path[-1]:
                        path.append(point)
        return path
    path = []
    for step in range(1, RHO_STEPS + 1):
        rho = step / RHO_STEPS
        point = tuple(max(1, round(n_tokens * rho ** (i + 1))) for i in range(len(layers)))
        if not path or point != path[-1]:
            path.append(point)
    return path


@functools.lru_cache(maxsize=256)
def solve_schedule(
    n_tokens: int, n_layers: int, layers: tuple[int, ...], target: float, recycle: bool, version: str = "1.5"
) -> tuple[int, ...]:
    """The schedule on :func:`schedule_path` whose "Equal Tokens" (recycled tokens included) come closest to
    ``target``, the first one on ties. Schedules that leave an image no token, and those that average fewer
    tokens than an earlier one (a leg lowering counts), are skipped, so the chosen point, and with it every
    layer's count, never decreases as ``target`` grows, but where the reference tables themselves decrease."""
    best: tuple[float, tuple[int, ...]] | None = None
    highest = -1.0
    for counts in schedule_path(n_tokens, layers, version):
        plan = simulate(n_tokens, n_layers, layers, counts, recycle)
        average = equal_tokens(plan)
        if min(plan) < 1 or average < highest:
            continue
        highest = average
        error = abs(average - target)
        if best is None or error < best[0]:
            best = (error, counts)
    if best is None:
        raise ConfigError(f"sparsevlm: {len(layers)} pruning layers cannot keep a {n_tokens}-token image alive")
    return best[1]


@register_method("sparsevlm")
@dataclass
class SparseVLM(TokenMethod):
    """In-LLM pruning at several layers, scored by the text tokens that rate the image (prefill only).

    Raters (once per prompt, on the layer-0 input): V = the row's visual tokens, T = the real text tokens after
    its first image; m = mean over V of softmax(V T^T) over T; raters = the text tokens with m above its mean.
    After each layer l in ``layers`` (default 2, 6, 15; on models of fewer than 17 layers those positions scaled
    to the depth, e.g. 0, 1, 2 of 4), the probe computes the raters' attention rows at layer l from its own
    post-RoPE q/k (B, H, R, L); score of a visual token = mean over heads and raters. Each image keeps the top
    min(count, n - 1) of its n current visual tokens for layers l + 1 on.

    Recycling (v1.5): of the pruned tokens, the int(0.3 P) + 1 highest-scoring are clustered by DPC-KNN into
    int(C / 10) + 1 tokens (cluster means of the hidden states entering layer l + 1), inserted right after the
    image's kept tokens; they count as visual tokens at the next pruning layer. Positions (v1.5): renumbered
    0..L'-1 after each pruning layer, and decode positions in a layer continue from that layer's cache length.

    v2.0 ("SparseVLM+", ``version="2.0"``): the rater attention is divided by the RoPE-only logits (q = k = 1
    rotated to the tokens' positions, / sqrt(d)), the ``priority_heads`` heads with the largest rater-to-image
    attention are averaged, nothing is recycled and original positions are kept.

    Budget: the layer-averaged visual tokens per image in the reference log's "Equal Tokens" convention, every
    layer counted after the pruning its attention scores (layer l holds the tokens entering l + 1; recycled
    tokens counted; docs/budgets.md). For 576-token images at layers (2, 6, 15) of a 32-layer model, a budget
    of 192, 128, 96 or 64 gives the reference tables (v1.5: Equal Tokens 192.0, 128.6, 96.9, 64.8; the tokens
    the layers process average 206.5, 145.4, 114.1, 82.2). Other budgets take the schedule closest to them on a
    path through the table entries (576 tokens at layers 2, 6, 15, any depth) or, elsewhere, on round(n rho^i)
    for rho in (0, 1]; every layer's count grows with the budget, except between the table entries that keep
    fewer tokens at layer 2 than the entry below them (v1.5 128 -> 192: 303 -> 300; v2.0 96 -> 128: 246 -> 238).
    ``schedule`` sets the counts directly. Stats report ``achieved_tokens`` (Equal Tokens), ``equivalent_tokens``
    (the processed layer average) and ``llm_input_tokens`` (all of them).

    Paper: "SparseVLM: Visual Token Sparsification for Efficient Vision-Language Model Inference", arXiv
    2410.04417 (ICML 2025); SparseVLM+ is the repository's v2.0.
    Reference: Gumpest/SparseVLMs:llava/model/language_model/modelling_sparse_llama.py (``LlamaDynamicvitModel``),
    score.py (``attn_postprocess_topk``, ``select_attn_head_by_sum``, schedules) and utils.py
    (``cluster_and_merge``), commit 26a5f48.

    Differences from reference:
    - Rater rows come from the probe on the layer's own q/k (R x L per head); the reference replaces SDPA with a
      hand-written attention that materialises the full softmax matrix in every layer.
    - Batched, with several images per prompt: raters per row, pruning, recycling and the schedule per image;
      the reference handles batch 1 with one image (``mask[0]``, ``t_token_idx[1]``, one span at offset 35).
    - DPC-KNN breaks density ties by index instead of adding random noise (1e-6), so runs are deterministic;
      distances and cluster means are computed in float32.
    - Rater scores are computed in float32 (the reference: the model dtype). A row whose text gives no rater
      above the mean uses all its text tokens; a row with no text after its image uses its last token.
    - v2.0 picks priority heads per image (the reference: over its one image, batch 0).
    - Budgets other than the table entries get a solved schedule (the reference accepts only 192/128/96/64).
    - The tables apply as they are only on 32 layers, the depth their Equal Tokens are tuned to; on other
      depths (LLaVA-1.5-13B: 40) the budget is solved on the same path (the reference reuses the 7B tables,
      whose 192 entry averages 176.5 Equal Tokens on 40 layers); ``schedule=(300, 200, 110)`` runs them as is.
    """

    stage = Stage.LLM_PREFILL
    needs = Needs(llm_attention_rows=True, llm_query_tokens=True)
    has_positions_option = True
    budget_convention = "after_pruning"

    version: str = "1.5"
    layers: tuple[int, ...] | None = None  # default: (2, 6, 15), scaled to models of fewer than 17 layers
    schedule: tuple[int, ...] | None = None
    positions: str | None = None  # default: "contiguous" for v1.5, "original" for v2.0
    recycle: bool | None = None  # default: True for v1.5, False for v2.0
    priority_heads: int = 14

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.version not in REFERENCE_SCHEDULES:
            raise ConfigError(f"sparsevlm: version={self.version!r} is not allowed; use '1.5' or '2.0'")
        if self.positions is None:
            self.positions = "contiguous" if self.version == "1.5" else "original"
        check_positions(self, self.positions)
        if self.recycle is None:
            self.recycle = self.version == "1.5"
        if self.layers is not None:
            self.layers = _int_tuple("layers", self.layers, minimum=0)
            if any(b <= a for a, b in zip(self.layers, self.layers[1:])):
                raise ConfigError(f"sparsevlm: layers={self.layers} must be strictly increasing")
        if self.schedule is not None:
            self.schedule = _int_tuple("schedule", self.schedule, minimum=1)
            if self.layers is not None and len(self.schedule) != len(self.layers):
                raise ConfigError(
                    f"sparsevlm: schedule={self.schedule} needs one count per pruning layer {self.layers}"
                )
        (self.priority_heads,) = _int_tuple("priority_heads", (self.priority_heads,), minimum=1)

    def validate(self, adapter: ModelAdapter) -> None:
        super().validate(adapter)
        n_layers = adapter.num_text_layers()
        if n_layers < 2:
            raise ConfigError(f"sparsevlm needs a language model of at least 2 layers; this one has {n_layers}")
        layers = self.pruning_after(n_layers)
        if layers[-1] > n_layers - 2:
            raise ConfigError(
                f"sparsevlm: layers={layers} is out of range; the language model has {n_layers} layers, "
                f"so pruning layers must be in [0, {n_layers - 2}]"
            )
        if self.schedule is not None and len(self.schedule) != len(layers):
            raise ConfigError(f"sparsevlm: schedule={self.schedule} needs one count per pruning layer {layers}")

    def pruning_after(self, n_layers: int) -> tuple[int, ...]:
        """The layers whose attention scores a pruning of their output: ``layers``, or the reference's (2, 6, 15)
        on models of 17 layers or more, else those positions scaled to the depth (4 layers: 0, 1, 2)."""
        if self.layers is not None:
            return self.layers
        if n_layers >= REFERENCE_LAYERS[-1] + 2:
            return REFERENCE_LAYERS
        scaled: list[int] = []
        for layer in REFERENCE_LAYERS:
            position = min(round(layer * n_layers / 32), n_layers - 2)
            if not scaled or position > scaled[-1]:
                scaled.append(position)
        return tuple(scaled)

    # -- budget -------------------------------------------------------------------------------------------------
    def keeps_all(self, n_tokens: int) -> bool:
        return self.schedule is None and super().keeps_all(n_tokens)

    def stage_counts(self, n_tokens: int, n_layers: int) -> tuple[int, ...]:
        """Visual tokens an image of ``n_tokens`` keeps after each pruning layer (before recycling)."""
        if self.schedule is not None:
            return self.schedule
        table = REFERENCE_SCHEDULES[self.version]
        layers = self.pruning_after(n_layers)
        reference = n_tokens == REFERENCE_IMAGE_TOKENS and layers == REFERENCE_LAYERS and n_layers == REFERENCE_DEPTH
        if reference and isinstance(self.budget, int) and self.budget in table:
            return table[self.budget]
        target = self.budget_tokens(n_tokens)
        return solve_schedule(n_tokens, n_layers, layers, target, bool(self.recycle), self.version)

    def layer_plan(self, n_tokens: int, n_layers: int) -> list[int]:
        """Visual tokens of one image of ``n_tokens`` that each decoder layer processes in prefill."""
        if self.keeps_all(n_tokens):
            return [n_tokens] * n_layers
        counts = self.stage_counts(n_tokens, n_layers)
        return simulate(n_tokens, n_layers, self.pruning_after(n_layers), counts, bool(self.recycle))

    def prune_layers(self, n_layers: int) -> tuple[int, ...]:
        return tuple(layer + 1 for layer in self.pruning_after(n_layers))

    def requested_tokens(self, n_tokens: int, n_layers: int) -> float | None:
        """The budget itself: an "Equal Tokens" layer average (None when ``schedule`` sets the counts)."""
        if self.schedule is not None:
            return None
        return float(n_tokens) if self.keeps_all(n_tokens) else self.budget_tokens(n_tokens)

    def planned_layer_tokens(self, n_tokens: int, n_layers: int) -> list[int] | None:
        return self.layer_plan(n_tokens, n_layers)

    # -- raters ---------------------------------------------------------------------------------------------------
    def select_queries(self, tokens: LayerTokens) -> torch.Tensor:
        batch, length, _ = tokens.hidden.shape
        raters = torch.zeros(batch, length, dtype=torch.bool, device=tokens.hidden.device)
        positions = torch.arange(length, device=tokens.hidden.device)
        for row in range(batch):
            visual = torch.nonzero(tokens.visual_index[row] >= 0).flatten()  # (V,)
            if visual.numel() == 0:
                continue
            text = torch.nonzero((positions > visual[0]) & (tokens.visual_index[row] < 0) & tokens.valid[row])
            text = text.flatten()  # (T,)
            if text.numel() == 0:
                raters[row, torch.nonzero(tokens.valid[row]).flatten()[-1]] = True
                continue
            relation = tokens.hidden[row, visual].float() @ tokens.hidden[row, text].float().T  # (V, T)
            rating = relation.softmax(dim=-1).mean(dim=0)  # (T,)
            chosen = text[rating > rating.mean()]
            raters[row, chosen if chosen.numel() else text] = True
        return raters

    # -- pruning --------------------------------------------------------------------------------------------------
    def prune_layer(self, tokens: LayerTokens) -> LayerReduction:
        assert tokens.attention is not None and tokens.query_rows is not None and tokens.entry_counts is not None
        assert tokens.n_layers is not None
        n_layers = tokens.n_layers
        stage = self.prune_layers(n_layers).index(tokens.layer)
        keep, weights, before, source = [], [], [], []
        for row in range(tokens.hidden.shape[0]):
            visual_index = tokens.visual_index[row]  # (L,)
            kept = [torch.nonzero(visual_index < 0).flatten()]
            row_weights, row_before, row_source = [], [], []
            rows = tokens.query_rows[row] >= 0  # (R,) real rater rows
            for image in visual_index.unique().tolist():
                if image < 0:
                    continue
                members = torch.nonzero(visual_index == image).flatten()  # (n,) current visual tokens
                entry = int(tokens.entry_counts[row, image])
                if self.keeps_all(entry):  # a unit within the budget (a small tile or video frame) stays whole
                    kept.append(members)
                    continue
                scores = self._scores(tokens, row, rows, members)  # (n,)
                n_keep = min(self.stage_counts(entry, n_layers)[stage], members.numel() - 1)
                chosen = topk_keep(scores[None], n_keep)[0] if n_keep > 0 else members.new_zeros(0)
                kept.append(members[chosen])
                if self.recycle:
                    merged = self._recycle(tokens.hidden[row], members, scores, chosen)
                    if merged is not None:
                        row_weights.append(merged[0])
                        row_before.append(torch.full_like(merged[1], int(members[-1]) + 1))
                        row_source.append(merged[1])
            keep.append(torch.cat(kept).sort().values)
            dim_l = tokens.hidden.shape[1]
            weights.append(torch.cat(row_weights) if row_weights else tokens.hidden.new_zeros(0, dim_l))
            before.append(torch.cat(row_before) if row_before else keep[-1].new_zeros(0))
            source.append(torch.cat(row_source) if row_source else keep[-1].new_zeros(0))
        return LayerReduction(keep=keep, weights=weights, before=before, source=source)

    def _scores(self, tokens: LayerTokens, row: int, rows: torch.Tensor, members: torch.Tensor) -> torch.Tensor:
        """Mean rater attention to each of ``members`` (n,) in ``row``; v2.0 corrects it and picks heads."""
        assert tokens.attention is not None and tokens.query_rows is not None
        attention = tokens.attention[row][:, rows][:, :, members]  # (H, R, n)
        if self.version == "1.5":
            return attention.mean(dim=0).mean(dim=0)  # (n,)
        assert tokens.position_embeddings is not None
        cos, sin = (x[row if x.shape[0] > 1 else 0].float() for x in tokens.position_embeddings)  # (L, d)
        half = cos.shape[-1] // 2
        sign = torch.cat([-torch.ones(half), torch.ones(cos.shape[-1] - half)]).to(cos.device)
        rotated = cos + sign * sin  # (L, d): q = k = 1 after RoPE
        query_positions = tokens.query_rows[row][rows]  # (R,)
        rope_logits = rotated[query_positions] @ rotated[members].T / cos.shape[-1] ** 0.5  # (R, n)
        corrected = attention / rope_logits  # (H, R, n)
        n_heads = min(self.priority_heads, corrected.shape[0])
        heads = torch.sort(corrected.sum(dim=(1, 2)), descending=True, stable=True).indices[:n_heads]
        return corrected[heads].mean(dim=0).mean(dim=0)  # (n,)

    @staticmethod
    def _recycle(hidden: torch.Tensor, members: torch.Tensor, scores: torch.Tensor, chosen: torch.Tensor):
        """Cluster the best pruned tokens: (weights (C', L), source positions (C',)) or None if none pruned."""
        is_kept = torch.zeros(members.numel(), dtype=torch.bool, device=members.device)
        is_kept[chosen] = True
        pruned = torch.nonzero(~is_kept).flatten()  # (P,) ascending
        if pruned.numel() == 0:
            return None
        n_recycled = int(pruned.numel() * RECYCLE_FRACTION) + 1
        best = torch.sort(scores[pruned], descending=True, stable=True).indices[:n_recycled]
        positions = members[pruned[best]]  # (C,) in descending score order
        clusters = dpc_knn(hidden[positions], int(n_recycled / CLUSTER_DIVISOR) + 1)
        weights = hidden.new_zeros(clusters.weights.shape[0], hidden.shape[0])  # (C', L)
        weights[:, positions] = clusters.weights.to(hidden.dtype)
        return weights, positions[clusters.centres]


def _int_tuple(name: str, value: object, minimum: int) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else None
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in items):
        raise ConfigError(f"sparsevlm: {name} must be ints >= {minimum}, got {value!r}")
    return items
