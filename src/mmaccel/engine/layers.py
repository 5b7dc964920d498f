"""In-LLM pruning: shorten the sequence at the input of chosen decoder layers during prefill.

transformers' decoder loop computes ``position_embeddings`` (cos, sin) and the causal mask once and hands the
same objects to every layer. A forward pre-hook on each layer from the first pruning layer on therefore
substitutes, for the shortened sequence: the hidden states (at a pruning layer), the kept tokens' (cos, sin),
a mask rebuilt with ``create_causal_mask(..., layer_idx=i)`` (sized from that layer's own cache, which holds
only kept tokens), and ``position_ids=None`` (RoPE comes from cos/sin; None keeps FlashAttention's packed-
sequence detection off). Attention rows come from the probe on the previous layer's attention; each layer
runs once, so no key/value is appended twice.

A method may also insert merged tokens (a :class:`LayerReduction`): they are built from the layer's input
hidden states, placed where the method says, and take the image (and, with original positions, the RoPE
position) of a source token. Query tokens a method picks once from the layer-0 input (``select_queries``) are
followed through every pruning by their layer-0 position (``origin``; -1 for merged tokens).

Every pruning layer's decision (kept tokens, merges) is recorded. A call without a cache that re-runs the
prompt followed by new tokens (``generate(use_cache=False)``) replays them (:meth:`LayerStage.replay`): the
prompt's tokens are kept, merged and placed as in the prefill, the new tokens are kept, and the method is not
asked again, so the new tokens see exactly what a cached decode sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mmaccel.engine.attention import attach_probe, probe_implementation
from mmaccel.engine.hooks import HookSet
from mmaccel.methods.base import LayerReduction, LayerTokens, keep_mask
from mmaccel.ops.attention import attention_rows

if TYPE_CHECKING:
    from mmaccel.engine.context import TokenContext
    from mmaccel.methods.base import TokenMethod
    from mmaccel.models.base import ModelAdapter


@dataclass
class StageRecord:
    """The prompt as the layers from ``layer`` on hold it in their cache."""

    layer: int
    prompt_mask: torch.Tensor  # (B, L') 2-D mask of the kept prompt
    shift: torch.Tensor  # (B,) positions dropped before each row's last token (contiguous mode)


@dataclass
class PackedOrder:
    """A pruned sequence, left-padded: ``keep`` (B, L') indices into [input (L) ; merged (M)] (0 in padding
    slots), ``valid`` (B, L') real slots, ``kept`` (B, L) the input tokens kept."""

    keep: torch.Tensor
    valid: torch.Tensor
    kept: torch.Tensor

    def __getitem__(self, row: int) -> torch.Tensor:
        """Row ``row`` without its padding: (L'_b,) indices into [input ; merged]."""
        return self.keep[row][self.valid[row]]


class KeptPositions(Sequence):
    """The kept input positions of each row, (K_b,) ascending, read from a (B, L) mask when a row is asked for
    (the engine itself never splits the batch into rows)."""

    def __init__(self, mask: torch.Tensor) -> None:
        self.mask = mask  # (B, L) bool
        self._rows: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.mask.shape[0]

    def __getitem__(self, row):
        if isinstance(row, slice):
            return [self[i] for i in range(*row.indices(len(self)))]
        row = range(len(self))[row]  # negative indices; IndexError past the end
        if row not in self._rows:
            self._rows[row] = torch.nonzero(self.mask[row]).flatten()
        return self._rows[row]


@dataclass
class LayerDecision:
    """What a pruning layer did to its input of L tokens: ``kept`` (B, L) bool, and the batched merges."""

    kept: torch.Tensor
    reduction: LayerReduction | None

    def extended(self, length: int) -> LayerDecision:
        """The same decision for the input followed by ``length - L`` new tokens, all kept, never merged into."""
        extra = length - self.kept.shape[1]
        if extra == 0:
            return self
        kept = torch.cat([self.kept, self.kept.new_ones(self.kept.shape[0], extra)], dim=1)
        reduction = self.reduction
        if reduction is not None:
            weights = reduction.weights
            assert isinstance(weights, torch.Tensor)
            weights = torch.cat([weights, weights.new_zeros(*weights.shape[:2], extra)], dim=2)  # (B, M, length)
            # a merged token placed at the end of the prompt (before = L) stays before the new tokens
            reduction = LayerReduction(keep=kept, weights=weights, before=reduction.before, source=reduction.source)
        return LayerDecision(kept=kept, reduction=reduction)


@dataclass
class LayerState:
    """Per-sequence state of in-LLM pruning (prefill, then its decode steps)."""

    context: TokenContext
    cache: Any
    visual_index: torch.Tensor  # (B, L) image number per token, -1 for text
    mask2d: torch.Tensor  # (B, L) current 2-D attention mask
    positions: torch.Tensor  # (B, L, R) current RoPE positions, R rows (1, or 3 for M-RoPE t, h, w)
    prompt_length: int  # length of the prompt at the first layer
    origin: torch.Tensor  # (B, L) position of each token in the sequence entering layer 0, -1 if merged
    entry_counts: torch.Tensor  # (B, G) visual tokens of each image entering layer 0
    query_mask: torch.Tensor | None = None  # (B, L0) query tokens picked at layer 0 (select_queries)
    phase: str = "prefill"
    attention: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    stages: list[StageRecord] = field(default_factory=list)
    override: dict[str, Any] | None = None  # prefill: kwargs substituted in layers after a pruning layer
    decode_mask2d: torch.Tensor | None = None  # decode: the caller's 2-D mask (B, prompt_length + t) or None
    decode_positions: torch.Tensor | None = None  # decode: (B, q) or (R, B, q) positions of the new tokens
    per_forward: dict[Any, Any] = field(default_factory=dict)  # decode: masks/rope built once per forward
    decisions: dict[int, LayerDecision] = field(default_factory=dict)  # pruning layer -> what it did
    replay: dict[int, LayerDecision] | None = None  # a replayed prefill: the recorded decisions to apply


class LayerStage:
    def __init__(self, method: TokenMethod, adapter: ModelAdapter) -> None:
        self.method = method
        self.adapter = adapter
        self.n_layers = adapter.num_text_layers()
        self.prune_at = sorted(method.prune_layers(self.n_layers))
        self.positions_mode = positions_mode(method, adapter)
        self.state: LayerState | None = None

    # -- installation ------------------------------------------------------------------------------------------
    def install(self, hooks: HookSet) -> None:
        if not self.prune_at:
            return
        if self.method.needs.llm_attention_rows:
            previous = self.adapter.attn_implementation("text")
            self.adapter.set_attn_implementation("text", probe_implementation(previous))
            hooks.on_close(lambda: self.adapter.set_attn_implementation("text", previous))
            for layer in self.prune_at:
                module = self.adapter.text_attention(layer - 1)
                hooks.on_close(attach_probe(module, self._make_probe(layer - 1)))
        layers = self.adapter.text_layers()
        if self.method.needs.llm_query_tokens:
            hooks.forward_pre_hook(layers[0], self._select_queries, with_kwargs=True)
        for index in range(self.prune_at[0], self.n_layers):
            hooks.forward_pre_hook(layers[index], self._make_layer_hook(index), with_kwargs=True)

    # -- sequence lifecycle (called from the model-level hook) ------------------------------------------------------
    def start(self, context: TokenContext, cache: Any, visual_index, mask2d, positions) -> None:
        """positions: (B, L), or (R, B, L) for multi-row (M-RoPE) positions."""
        batch, length = visual_index.shape
        positions = positions[..., None] if positions.dim() == 2 else positions.permute(1, 2, 0)  # (B, L, R)
        n_images = int(visual_index.max()) + 1
        entry_counts = (visual_index[:, :, None] == torch.arange(n_images, device=visual_index.device)).sum(1)
        self.state = LayerState(
            context=context,
            cache=cache,
            visual_index=visual_index,
            mask2d=mask2d,
            positions=positions,
            prompt_length=length,
            origin=torch.arange(length, device=visual_index.device).expand(batch, -1),
            entry_counts=entry_counts,  # (B, G)
        )
        for stats, n_visual in zip(context.stats, (visual_index >= 0).sum(1).tolist()):
            stats.layer_tokens = [n_visual] * self.n_layers

    def replay(self, recorded: LayerState, visual_index, mask2d, positions) -> None:
        """A call without a cache over ``recorded``'s prompt followed by new tokens (``visual_index`` -1 there):
        every pruning layer applies the prefill's decision to the prompt and keeps the new tokens. The record
        of the prefill (its context) is left as it was."""
        from mmaccel.engine.context import SampleStats, TokenContext

        stats = [SampleStats(images=s.images, visual_tokens=s.visual_tokens) for s in recorded.context.stats]
        self.start(TokenContext(stats=stats), None, visual_index, mask2d, positions)
        assert self.state is not None
        self.state.replay = recorded.decisions

    def decode(self, mask2d: torch.Tensor | None, positions: torch.Tensor) -> None:
        state = self.state
        assert state is not None
        state.phase = "decode"
        state.decode_mask2d = mask2d
        state.decode_positions = positions
        state.per_forward = {}

    def stop(self) -> None:
        self.state = None

    # -- query tokens and the probe ------------------------------------------------------------------------------
    def _select_queries(self, module, args, kwargs):
        state = self.state
        if state is None or state.phase != "prefill" or state.query_mask is not None or state.replay is not None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]  # (B, L0, D) the layer-0 input
        state.query_mask = self.method.select_queries(self._tokens(0, hidden, state, kwargs))  # (B, L0) bool
        return None

    def _query_rows(self, state: LayerState) -> torch.Tensor:
        if state.query_mask is None:
            return self.method.attention_queries(state.visual_index, state.mask2d.bool())  # (B, R)
        marked = (state.origin >= 0) & state.query_mask.gather(1, state.origin.clamp(min=0))  # (B, L)
        n_rows = marked.sum(1)  # (B,)
        width = max(1, int(n_rows.max()))
        first = torch.sort(marked.to(torch.uint8), dim=1, descending=True, stable=True).indices[:, :width]  # (B, R)
        used = torch.arange(width, device=marked.device) < n_rows[:, None]  # (B, R)
        return torch.where(used, first, -1)  # (B, R) positions in ascending order, -1 pads

    def _make_probe(self, layer: int):
        def probe(module, query, key, mask, scaling) -> None:
            state = self.state
            if state is None or state.phase != "prefill" or state.replay is not None:
                return
            rows = self._query_rows(state)  # (B, R)
            probs = attention_rows(query, key, rows.clamp(min=0), scaling, mask)  # (B, H, R, L)
            probs = probs.masked_fill((rows < 0)[:, None, :, None], 0.0)
            state.attention[layer] = (rows, probs)
            state.context.llm_queries[layer] = rows

        return probe

    # -- the layer hooks ------------------------------------------------------------------------------------------
    def _make_layer_hook(self, index: int):
        def hook(module, args, kwargs):
            state = self.state
            if state is None:
                return None
            hidden = args[0] if args else kwargs.pop("hidden_states")
            if state.phase == "prefill":
                if index in self.prune_at:
                    hidden = self._prune(index, hidden, kwargs, state)
                if state.override is not None:
                    kwargs.update(state.override)
            else:
                self._decode_kwargs(index, hidden, kwargs, state)
            return (hidden, *args[1:]), kwargs

        return hook

    def _tokens(self, index: int, hidden: torch.Tensor, state: LayerState, kwargs: dict[str, Any]) -> LayerTokens:
        rows, probs = state.attention.pop(index - 1, (None, None))
        return LayerTokens(
            layer=index,
            hidden=hidden,
            visual_index=state.visual_index,
            valid=state.mask2d.bool(),
            attention=probs,
            query_rows=rows,
            origin=state.origin,
            entry_counts=state.entry_counts,
            position_embeddings=self._rope(state, kwargs),
            n_layers=self.n_layers,
        )

    @staticmethod
    def _rope(state: LayerState, kwargs: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        return state.override["position_embeddings"] if state.override else kwargs["position_embeddings"]

    def _decide(self, index: int, hidden: torch.Tensor, kwargs: dict[str, Any], state: LayerState):
        """The layer's decision on its (B, L, D) input, or None when it keeps everything; recorded for replay."""
        if state.replay is not None:
            recorded = state.replay.get(index)
            return None if recorded is None else recorded.extended(hidden.shape[1])
        tokens = self._tokens(index, hidden, state, kwargs)
        # The budget applies to each image as it entered the language model, whatever earlier layers kept.
        counts = set(state.entry_counts.flatten().tolist())  # one host read for the whole batch
        if all(self.method.keeps_all(n) for n in counts if n > 0):
            return None
        result = self.method.prune_layer(tokens)
        length = hidden.shape[1]
        if isinstance(result, LayerReduction):
            state.context.llm_merges[index] = result
            reduction = result.batched(length)
            assert isinstance(reduction.keep, torch.Tensor)
            decision = LayerDecision(kept=reduction.keep.to(hidden.device), reduction=reduction)
        else:
            assert isinstance(result, (torch.Tensor, list))
            kept = result.to(hidden.device) if isinstance(result, torch.Tensor) else keep_mask(result, length)
            decision = LayerDecision(kept=kept, reduction=None)
        state.decisions[index] = decision
        return decision

    def _prune(self, index: int, hidden: torch.Tensor, kwargs: dict[str, Any], state: LayerState) -> torch.Tensor:
        decision = self._decide(index, hidden, kwargs, state)
        if decision is None:
            everything = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)  # (B, L)
            self._record(index, state, KeptPositions(everything))
            return hidden
        reduction = decision.reduction
        order, merged, source = self._order(decision.kept, reduction, hidden)  # packed order, (B, M, D), (B, M)
        keep, slot_valid = order.keep, order.valid  # (B, L') into [input (L) ; merged (M)], (B, L')

        def extend(x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:  # (B, L, ...) + (B, M, ...)
            return torch.cat([x.expand(keep.shape[0], *x.shape[1:]), extra], dim=1)

        def take(x: torch.Tensor) -> torch.Tensor:  # (B, L + M, ...) -> (B, L', ...)
            index_ = keep.view(*keep.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
            return x.gather(1, index_)

        hidden = take(extend(hidden, merged))  # (B, L', D)
        state.visual_index = take(extend(state.visual_index, state.visual_index.gather(1, source)))
        state.visual_index = state.visual_index.masked_fill(~slot_valid, -1)
        state.mask2d = take(extend(state.mask2d, torch.ones_like(source, dtype=state.mask2d.dtype))) * slot_valid
        state.origin = take(extend(state.origin, torch.full_like(source, -1))).masked_fill(~slot_valid, -1)
        previous_positions = state.positions  # (B, L, R)
        if self.positions_mode == "original":
            cos, sin = self._rope(state, kwargs)
            cos, sin = (x.expand(keep.shape[0], -1, -1) for x in (cos, sin))
            source_rope = source[..., None].expand(-1, -1, cos.shape[-1])
            cos = take(extend(cos, cos.gather(1, source_rope)))
            sin = take(extend(sin, sin.gather(1, source_rope)))
            source_rows = source[..., None].expand(-1, -1, state.positions.shape[-1])  # (B, M, R)
            state.positions = take(extend(state.positions, state.positions.gather(1, source_rows)))
        else:
            contiguous = (state.mask2d.cumsum(-1) - 1).clamp(min=0)  # (B, L')
            cos, sin = self.adapter.rotary_embedding(hidden, contiguous)
            state.positions = contiguous[..., None].expand(-1, -1, previous_positions.shape[-1])
        last = -1  # left padding: every row ends with a real token, a text token (the same on every row)
        shift = previous_positions[:, last, 0] - state.positions[:, last, 0]
        if state.stages:
            shift = shift + state.stages[-1].shift
        mask = self._causal_mask(hidden, state.mask2d, state.cache, index)
        state.override = {"position_embeddings": (cos, sin), "attention_mask": mask, "position_ids": None}
        state.stages.append(StageRecord(layer=index, prompt_mask=state.mask2d, shift=shift))
        self._record(index, state, KeptPositions(order.kept))
        return hidden

    @staticmethod
    def _order(keep: torch.Tensor | list[torch.Tensor], reduction: LayerReduction | None, hidden: torch.Tensor):
        """The new sequence of every row as left-packed indices into [input (L) ; merged tokens (M)], the merged
        hidden states (B, M, D) and the source position of each merged token (B, M) (0 in unused slots).

        ``keep``: the input tokens kept ((B, L) bool or kept positions per row); ``reduction``: the method's
        :class:`LayerReduction` when it merges (either form).
        """
        batch, length, dim = hidden.shape
        kept = keep.to(hidden.device) if isinstance(keep, torch.Tensor) else keep_mask(keep, length)
        if reduction is not None:
            reduction = reduction.batched(length)
            weights, before, source = reduction.weights, reduction.before, reduction.source
            assert isinstance(weights, torch.Tensor)
            assert isinstance(before, torch.Tensor) and isinstance(source, torch.Tensor)
            before, source = before.to(hidden.device), source.to(hidden.device)
            merged = torch.bmm(weights.to(hidden), hidden)  # (B, M, L) @ (B, L, D) -> (B, M, D)
            used = source >= 0  # (B, M)
            source = source.clamp(min=0)
        else:
            merged = hidden.new_zeros(batch, 0, dim)
            before = source = torch.zeros(batch, 0, dtype=torch.long, device=hidden.device)
            used = torch.zeros(batch, 0, dtype=torch.bool, device=hidden.device)
        # Sort keys: kept input token p -> 2p + 1, merged token -> 2 * before (right before that position), and
        # -1 for dropped tokens and unused slots, which a stable sort gathers on the left as padding.
        positions = torch.arange(length, device=hidden.device)
        keys = torch.cat([torch.where(kept, 2 * positions + 1, -1), torch.where(used, 2 * before, -1)], dim=1)
        n_tokens = kept.sum(1) + used.sum(1)  # (B,)
        width = int(n_tokens.max())
        order = torch.sort(keys, dim=1, stable=True).indices[:, keys.shape[1] - width :]  # (B, L')
        valid = torch.arange(width, device=hidden.device) >= width - n_tokens[:, None]  # (B, L') left padding
        return PackedOrder(keep=torch.where(valid, order, 0), valid=valid, kept=kept), merged, source

    def _record(self, index: int, state: LayerState, kept: KeptPositions) -> None:
        state.context.llm_keep[index] = kept
        counts = (state.visual_index >= 0).sum(1).tolist()  # one host read for the whole batch
        for stats, after in zip(state.context.stats, counts):
            before = stats.layer_tokens[index]
            stats.stages[f"llm_layer_{index}"] = (before, after)
            stats.layer_tokens[index:] = [after] * (self.n_layers - index)

    def _causal_mask(self, hidden: torch.Tensor, mask2d: torch.Tensor, cache: Any, index: int):
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(
            config=self.adapter.text_config,
            inputs_embeds=hidden,
            attention_mask=mask2d,
            past_key_values=cache,
            position_ids=None,
            layer_idx=index,
        )

    def _decode_kwargs(self, index: int, hidden: torch.Tensor, kwargs: dict[str, Any], state: LayerState) -> None:
        stage = next((s for s in reversed(state.stages) if s.layer <= index), None)
        if stage is None:
            return
        key = stage.layer
        if kwargs.get("attention_mask") is not None:
            if ("mask", key) not in state.per_forward:
                if state.decode_mask2d is not None:
                    new_columns = state.decode_mask2d[:, state.prompt_length :]
                else:
                    past = state.cache.get_seq_length(0)
                    new_columns = stage.prompt_mask.new_ones(
                        hidden.shape[0], past - state.prompt_length + hidden.shape[1]
                    )
                mask2d = torch.cat([stage.prompt_mask, new_columns.to(stage.prompt_mask.dtype)], dim=1)
                state.per_forward[("mask", key)] = self._causal_mask(hidden, mask2d, state.cache, index)
            kwargs["attention_mask"] = state.per_forward[("mask", key)]
        if self.positions_mode == "contiguous":
            if ("rope", key) not in state.per_forward:
                positions = state.decode_positions - stage.shift[:, None]
                state.per_forward[("rope", key)] = self.adapter.rotary_embedding(hidden, positions)
            kwargs["position_embeddings"] = state.per_forward[("rope", key)]
        kwargs["position_ids"] = None


def positions_mode(method: TokenMethod, adapter: ModelAdapter) -> str:
    """The position rule a method runs with on a model: its ``positions`` option, except on M-RoPE models, where
    kept tokens always keep their original (t, h, w) positions (an image's position span is its grid there, so
    renumbering has no meaning)."""
    if adapter.uses_mrope():
        return "original"
    return getattr(method, "positions", "original")
