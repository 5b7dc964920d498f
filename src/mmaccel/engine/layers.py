"""In-LLM pruning: shorten the sequence at the input of chosen decoder layers during prefill.

transformers' decoder loop computes ``position_embeddings`` (cos, sin) and the causal mask once and hands the
same objects to every layer. A forward pre-hook on each layer from the first pruning layer on therefore
substitutes, for the shortened sequence: the hidden states (at a pruning layer), the kept tokens' (cos, sin),
a mask rebuilt with ``create_causal_mask(..., layer_idx=i)`` (sized from that layer's own cache, which holds
only kept tokens), and ``position_ids=None`` (RoPE comes from cos/sin; None keeps FlashAttention's packed-
sequence detection off). Attention rows come from the probe on the previous layer's attention; each layer
runs once, so no key/value is appended twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mmaccel.engine.attention import attach_probe, probe_implementation
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.sequence import pack_left
from mmaccel.methods.base import LayerTokens
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
class LayerState:
    """Per-sequence state of in-LLM pruning (prefill, then its decode steps)."""

    context: TokenContext
    cache: Any
    visual_index: torch.Tensor  # (B, L) image number per token, -1 for text
    mask2d: torch.Tensor  # (B, L) current 2-D attention mask
    positions: torch.Tensor  # (B, L) current RoPE positions
    prompt_length: int  # length of the prompt at the first layer
    phase: str = "prefill"
    attention: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    stages: list[StageRecord] = field(default_factory=list)
    override: dict[str, Any] | None = None  # prefill: kwargs substituted in layers after a pruning layer
    decode_mask2d: torch.Tensor | None = None  # decode: the caller's 2-D mask (B, prompt_length + t) or None
    decode_positions: torch.Tensor | None = None  # decode: (B, q) positions of the new tokens
    per_forward: dict[Any, Any] = field(default_factory=dict)  # decode: masks/rope built once per forward


class LayerStage:
    def __init__(self, method: TokenMethod, adapter: ModelAdapter) -> None:
        self.method = method
        self.adapter = adapter
        self.n_layers = adapter.num_text_layers()
        self.prune_at = sorted(method.prune_layers(self.n_layers))
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
        for index in range(self.prune_at[0], self.n_layers):
            hooks.forward_pre_hook(layers[index], self._make_layer_hook(index), with_kwargs=True)

    # -- sequence lifecycle (called from the model-level hook) ------------------------------------------------------
    def start(self, context: TokenContext, cache: Any, visual_index, mask2d, positions) -> None:
        self.state = LayerState(
            context=context,
            cache=cache,
            visual_index=visual_index,
            mask2d=mask2d,
            positions=positions,
            prompt_length=visual_index.shape[1],
        )
        for row, stats in enumerate(context.stats):
            stats.layer_tokens = [int((visual_index[row] >= 0).sum())] * self.n_layers

    def decode(self, mask2d: torch.Tensor | None, positions: torch.Tensor) -> None:
        state = self.state
        assert state is not None
        state.phase = "decode"
        state.decode_mask2d = mask2d
        state.decode_positions = positions
        state.per_forward = {}

    def stop(self) -> None:
        self.state = None

    # -- the probe ----------------------------------------------------------------------------------------------
    def _make_probe(self, layer: int):
        def probe(module, query, key, mask, scaling) -> None:
            state = self.state
            if state is None or state.phase != "prefill":
                return
            rows = self.method.attention_queries(state.visual_index, state.mask2d.bool())  # (B, R)
            state.attention[layer] = (rows, attention_rows(query, key, rows, scaling, mask))  # (B, H, R, L)

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

    def _prune(self, index: int, hidden: torch.Tensor, kwargs: dict[str, Any], state: LayerState) -> torch.Tensor:
        rows, probs = state.attention.pop(index - 1, (None, None))
        tokens = LayerTokens(
            layer=index,
            hidden=hidden,
            visual_index=state.visual_index,
            valid=state.mask2d.bool(),
            attention=probs,
            query_rows=rows,
        )
        counts = [(state.visual_index == image).sum().item() for image in range(int(state.visual_index.max()) + 1)]
        if all(self.method.keeps_all(int(n)) for n in counts if n > 0):
            self._record(index, state, [torch.arange(hidden.shape[1], device=hidden.device)] * hidden.shape[0])
            return hidden
        kept_rows = self.method.prune_layer(tokens)
        keep, slot_valid = pack_left(kept_rows)  # (B, L'), (B, L')
        hidden = hidden.gather(1, keep[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, L', D)
        state.visual_index = state.visual_index.gather(1, keep).masked_fill(~slot_valid, -1)
        state.mask2d = state.mask2d.gather(1, keep) * slot_valid
        previous_positions = state.positions
        if getattr(self.method, "positions", "original") == "original":
            cos, sin = state.override["position_embeddings"] if state.override else kwargs["position_embeddings"]
            gather = keep[..., None].expand(-1, -1, cos.shape[-1])
            cos = cos.expand(keep.shape[0], -1, -1).gather(1, gather)
            sin = sin.expand(keep.shape[0], -1, -1).gather(1, gather)
            state.positions = state.positions.gather(1, keep)
        else:
            state.positions = (state.mask2d.cumsum(-1) - 1).clamp(min=0)
            cos, sin = self.adapter.rotary_embedding(hidden, state.positions)
        last = -1  # left padding: every row ends with a real token
        shift = previous_positions[:, last] - state.positions[:, last]
        if state.stages:
            shift = shift + state.stages[-1].shift
        mask = self._causal_mask(hidden, state.mask2d, state.cache, index)
        state.override = {"position_embeddings": (cos, sin), "attention_mask": mask, "position_ids": None}
        state.stages.append(StageRecord(layer=index, prompt_mask=state.mask2d, shift=shift))
        self._record(index, state, kept_rows)
        return hidden

    def _record(self, index: int, state: LayerState, kept_rows: list[torch.Tensor]) -> None:
        state.context.llm_keep[index] = kept_rows
        for row, stats in enumerate(state.context.stats):
            before = stats.layer_tokens[index]
            after = int((state.visual_index[row] >= 0).sum())
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
        if getattr(self.method, "positions", "original") == "contiguous":
            if ("rope", key) not in state.per_forward:
                positions = state.decode_positions - stage.shift[:, None]
                state.per_forward[("rope", key)] = self.adapter.rotary_embedding(hidden, positions)
            kwargs["position_embeddings"] = state.per_forward[("rope", key)]
        kwargs["position_ids"] = None
