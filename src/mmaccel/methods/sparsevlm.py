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


def _monotone(table: dict[int, tuple[int, ...]]) -> dict[int, tuple[int, ...]]:
    """The tables with every entry raised to at least the counts of the entries below it (elementwise running
    maximum by budget), so that a larger budget never keeps fewer tokens at any stage."""
    out, floor = {}, None
    for budget in sorted(table):
        floor = table[budget] if floor is None else tuple(max(a, b) for a, b in zip(floor, table[budget]))
        out[budget] = floor
    return out


# What the budgets use: v1.5 192 keeps 303 (not 300) after layer 2, v2.0 128 keeps 246 (not 238).
MONOTONE_SCHEDULES = {version: _monotone(table) for version, table in REFERENCE_SCHEDULES.items()}
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

    On the reference geometry (576 tokens, layers 2, 6, 15) the path runs through the (monotone) reference
    tables: from one token per stage through the 64, 96, 128 and 192 entries to n - 1, linearly, every count
    growing. Elsewhere it is round(n * rho^i) for rho in (0, 1], every count growing with rho.
    """
    if n_tokens == REFERENCE_IMAGE_TOKENS and layers == REFERENCE_LAYERS:
        table = MONOTONE_SCHEDULES[version]
        anchors = [(1,) * len(layers), *(table[b] for b in sorted(table)), (n_tokens - 1,) * len(layers)]
        path = [anchors[0]]
        for start, end in itertools.pairwise(anchors):
            for step in range(1, PATH_STEPS + 1):
                t = step / PATH_STEPS
                point = tuple(round(a + t * (b - a)) for a, b in zip(start, end))
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
    tokens than an earlier one, are skipped, so the chosen point, and with it every layer's count, never
    decreases as ``target`` grows."""
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
    for rho in (0, 1]; every layer's count grows with the budget.
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
    - Two table entries keep fewer tokens at layer 2 than the entry below them (v1.5: 303 at 128, 300 at 192;
      v2.0: 246 at 96, 238 at 128), so a larger budget would hold fewer tokens in layers 3-6. The budgets use
      the tables raised to a running maximum (v1.5 192: 303, 200, 110; v2.0 128: 246, 108, 60; Equal Tokens
      192.4 and 129.0): more budget never gives fewer tokens. ``schedule=`` runs the official counts as they are.
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
        table = MONOTONE_SCHEDULES[self.version]
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
        hidden, visual_index, valid = tokens.hidden, tokens.visual_index, tokens.valid  # (B, L, D), (B, L), (B, L)
        batch, length, dim = hidden.shape
        positions = torch.arange(length, device=hidden.device)
        visual = visual_index >= 0  # (B, L)
        first = torch.where(visual, positions, length).amin(dim=1)  # (B,) first visual position (L: none)
        text = (positions > first[:, None]) & ~visual & valid  # (B, L) the text after the first image
        visual_at, visual_real = _pack(visual)  # (B, V)
        text_at, text_real = _pack(text)  # (B, T)

        def gather(at: torch.Tensor) -> torch.Tensor:  # (B, K) -> (B, K, D) float32
            return hidden.gather(1, at[..., None].expand(-1, -1, dim)).float()

        relation = gather(visual_at) @ gather(text_at).transpose(1, 2)  # (B, V, T)
        relation = relation.masked_fill(~text_real[:, None, :], float("-inf"))
        attended = relation.softmax(dim=-1).masked_fill(~visual_real[..., None], 0.0)  # (B, V, T)
        rating = attended.sum(dim=1) / visual_real.sum(dim=1, keepdim=True).clamp(min=1)  # (B, T) mean over V
        n_text = text_real.sum(dim=1, keepdim=True)  # (B, 1)
        mean = rating.masked_fill(~text_real, 0.0).sum(dim=1, keepdim=True) / n_text.clamp(min=1)
        chosen = (rating > mean) & text_real  # (B, T)
        chosen = torch.where(chosen.any(dim=1, keepdim=True), chosen, text_real)  # none above the mean: all text
        raters = torch.zeros(batch, length, dtype=torch.long, device=hidden.device)
        raters = raters.scatter_add(1, text_at, chosen.long()) > 0  # (B, L)
        last = torch.where(valid, positions, -1).amax(dim=1)  # (B,) last real token
        no_text = visual.any(dim=1) & (n_text[:, 0] == 0)  # rows with an image and no text after it
        return raters | ((positions == last[:, None]) & no_text[:, None])

    # -- pruning --------------------------------------------------------------------------------------------------
    def prune_layer(self, tokens: LayerTokens) -> LayerReduction:
        assert tokens.attention is not None and tokens.query_rows is not None and tokens.entry_counts is not None
        assert tokens.n_layers is not None
        visual_index, hidden = tokens.visual_index, tokens.hidden  # (B, L), (B, L, D)
        batch, length = visual_index.shape
        device = hidden.device
        stage = self.prune_layers(tokens.n_layers).index(tokens.layer)
        n_images = tokens.entry_counts.shape[1]
        members = visual_index[:, :, None] == torch.arange(n_images, device=device)  # (B, L, G)
        # Two host reads per batch: the schedule is solved on the host from each image's entry count.
        entry = tokens.entry_counts.tolist()  # (B, G)
        current = members.sum(dim=1).tolist()  # (B, G) visual tokens of each image entering this layer
        limits = [[self._keep_limit(n, now, stage, tokens.n_layers, length) for n, now in zip(*pair)] for pair in
                  zip(entry, current)]  # fmt: skip
        limit = torch.tensor(limits, dtype=torch.long, device=device).view(batch, n_images)  # (B, G)
        scores = self._scores(tokens, members)  # (B, L)
        order, rank = _rank_in_images(scores, visual_index)  # (B, L), (B, L)
        group = visual_index.clamp(min=0)
        kept = (visual_index < 0) | (rank < limit.gather(1, group))  # (B, L)
        lengths = kept.sum(dim=1).tolist()
        keep = list(torch.nonzero(kept)[:, 1].split(lengths))  # per row (L'_b,) ascending
        weights = [hidden.new_zeros(0, length) for _ in range(batch)]
        before = [keep[0].new_zeros(0) for _ in range(batch)]
        source = [keep[0].new_zeros(0) for _ in range(batch)]
        if self.recycle:
            self._recycle(tokens, members, order, limits, current, (weights, before, source))
        return LayerReduction(keep=keep, weights=weights, before=before, source=source)

    def _keep_limit(self, entry: int, current: int, stage: int, n_layers: int, length: int) -> int:
        """Tokens an image keeps at this pruning layer (``length``: all of them, a unit within the budget)."""
        if entry == 0 or current == 0 or self.keeps_all(entry):
            return length
        return max(0, min(self.stage_counts(entry, n_layers)[stage], current - 1))

    def _scores(self, tokens: LayerTokens, members: torch.Tensor) -> torch.Tensor:
        """Mean rater attention to every position (B, L); v2.0 corrects it and picks heads per image.

        members: (B, L, G) bool, token l of row b belongs to image g.
        """
        assert tokens.attention is not None and tokens.query_rows is not None
        attention, query_rows = tokens.attention, tokens.query_rows  # (B, H, R, L), (B, R) -1 padded
        real = (query_rows >= 0)[:, None, :, None]  # (B, 1, R, 1)
        n_raters = real.sum(dim=2).clamp(min=1)  # (B, 1, 1)
        if self.version == "1.5":
            return attention.mean(dim=1).masked_fill(~real[:, 0], 0.0).sum(dim=1) / n_raters[:, 0]  # (B, L)
        assert tokens.position_embeddings is not None
        batch, n_heads_all = attention.shape[:2]
        cos, sin = (x.float().expand(batch, -1, -1) for x in tokens.position_embeddings)  # (B, L, d)
        half = cos.shape[-1] // 2
        sign = torch.cat([-torch.ones(half), torch.ones(cos.shape[-1] - half)]).to(cos.device)
        rotated = cos + sign * sin  # (B, L, d): q = k = 1 after RoPE
        queries = rotated.gather(1, query_rows.clamp(min=0)[..., None].expand(-1, -1, rotated.shape[-1]))
        rope_logits = queries @ rotated.transpose(1, 2) / cos.shape[-1] ** 0.5  # (B, R, L)
        corrected = (attention / rope_logits[:, None]).masked_fill(~real, 0.0)  # (B, H, R, L)
        per_head = corrected.sum(dim=2)  # (B, H, L) summed over the raters
        mass = per_head @ members.to(per_head.dtype)  # (B, H, G) per head, over each image's tokens
        n_heads = min(self.priority_heads, n_heads_all)
        top = torch.sort(mass, dim=1, descending=True, stable=True).indices[:, :n_heads]  # (B, h, G)
        chosen = torch.zeros_like(mass).scatter(1, top, 1.0)  # (B, H, G) the priority heads of each image
        token_heads = chosen.gather(2, tokens.visual_index.clamp(min=0)[:, None, :].expand(-1, n_heads_all, -1))
        return (per_head * token_heads).sum(dim=1) / (n_heads * n_raters[:, 0])  # (B, L)

    @staticmethod
    def _recycle(tokens: LayerTokens, members, order, limits, current, out) -> None:
        """Cluster the best pruned tokens of every image into ``out`` = (weights, before, source), per row.

        The pruned tokens of an image are those ranked ``limit`` onwards in ``order`` (its tokens by descending
        score); the best int(0.3 P) + 1 go to DPC-KNN, images of the same sizes in one batched call.
        """
        hidden = tokens.hidden  # (B, L, D)
        batch, length, _ = hidden.shape
        weights, before, source = out
        n_text = (tokens.visual_index < 0).sum(dim=1)  # (B,) sorted first in ``order``
        starts = n_text[:, None] + members.sum(dim=1).cumsum(dim=1) - members.sum(dim=1)  # (B, G) first slot
        positions = torch.arange(length, device=hidden.device)
        last = torch.where(members, positions[:, None], -1).amax(dim=1)  # (B, G) last position of each image
        jobs: dict[tuple[int, int], list[tuple[int, int, int]]] = {}  # (recycled, clusters) -> (row, image, limit)
        for row, (row_limits, row_current) in enumerate(zip(limits, current)):
            for image, (limit, now) in enumerate(zip(row_limits, row_current)):
                if limit < now:
                    n_recycled = int((now - limit) * RECYCLE_FRACTION) + 1
                    key = (n_recycled, int(n_recycled / CLUSTER_DIVISOR) + 1)
                    jobs.setdefault(key, []).append((row, image, limit))
        parts: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for (n_recycled, n_clusters), items in jobs.items():
            rows = torch.tensor([row for row, _, _ in items], device=hidden.device)  # (J,)
            images = torch.tensor([image for _, image, _ in items], device=hidden.device)
            offsets = torch.tensor([limit for _, _, limit in items], device=hidden.device)
            slots = starts[rows, images, None] + offsets[:, None] + torch.arange(n_recycled, device=hidden.device)
            chosen = order[rows[:, None], slots]  # (J, C) positions in descending score order
            points = hidden[rows[:, None], chosen]  # (J, C, D)
            clusters = torch.vmap(functools.partial(_cluster, n_clusters=n_clusters))(points)  # (J, C', C), (J, C')
            merge = hidden.new_zeros(len(items), n_clusters, length)  # (J, C', L)
            merge.scatter_(2, chosen[:, None, :].expand(-1, n_clusters, -1), clusters[0].to(hidden.dtype))
            centres = chosen.gather(1, clusters[1])  # (J, C')
            after = (last[rows, images] + 1)[:, None].expand(-1, n_clusters)  # (J, C')
            for j, (row, image, _) in enumerate(items):
                parts[(row, image)] = (merge[j], after[j], centres[j])
        for row in range(batch):
            mine = [parts[key] for key in sorted(parts) if key[0] == row]  # image order
            if mine:
                weights[row] = torch.cat([m for m, _, _ in mine])
                before[row] = torch.cat([b for _, b, _ in mine])
                source[row] = torch.cat([c for _, _, c in mine])


def _cluster(points: torch.Tensor, n_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    clusters = dpc_knn(points, n_clusters)
    return clusters.weights, clusters.centres


def _pack(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The True positions of each row of ``mask`` (B, L), in order, left-aligned: (B, K) positions (0 in the
    padding) and (B, K) validity, K the largest count (one host read per batch)."""
    counts = mask.sum(dim=1)  # (B,)
    width = int(counts.max()) if mask.numel() else 0
    at = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]  # (B, K)
    real = torch.arange(width, device=mask.device) < counts[:, None]
    return at.masked_fill(~real, 0), real


def _rank_in_images(scores: torch.Tensor, visual_index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of each row ordered by image (text, -1, first), then descending score, ties to the lower
    position: ``order`` (B, L); and ``rank`` (B, L), each token's place within its image in that order."""
    by_score = torch.sort(scores, dim=1, descending=True, stable=True).indices  # (B, L)
    by_image = torch.sort(visual_index.gather(1, by_score), dim=1, stable=True).indices
    order = by_score.gather(1, by_image)  # (B, L)
    image = visual_index.gather(1, order)  # (B, L) image of each slot, ascending
    slots = torch.arange(order.shape[1], device=order.device).expand_as(order)
    first = torch.where(image[:, 1:] != image[:, :-1], slots[:, 1:], 0)  # slot where a new image starts
    first = torch.cat([torch.zeros_like(slots[:, :1]), first], dim=1).cummax(dim=1).values  # (B, L)
    rank = torch.empty_like(order).scatter_(1, order, slots - first)
    return order, rank


def _int_tuple(name: str, value: object, minimum: int) -> tuple[int, ...]:
    items = tuple(value) if isinstance(value, (tuple, list)) else None
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in items):
        raise ConfigError(f"sparsevlm: {name} must be ints >= {minimum}, got {value!r}")
    return items
