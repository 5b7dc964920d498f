"""``apply``: run a method inside a model's own ``forward``/``generate``, reversibly."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmaccel.engine.context import SampleStats, TokenContext
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.layers import LayerStage
from mmaccel.engine.sequence import images_per_row, rebuild_prompt, visual_index
from mmaccel.engine.tower import TowerStage
from mmaccel.engine.visual import VisualStage
from mmaccel.errors import NotSupportedError
from mmaccel.methods.base import Stage, TokenMethod
from mmaccel.methods.registry import build_method
from mmaccel.models.base import ModelAdapter
from mmaccel.models.registry import adapter_for

log = logging.getLogger(__name__)

_ACTIVE: set[int] = set()  # id(model) of models with an open session


@dataclass
class _Sequence:
    """The prompt being decoded: what the decode steps need to continue it consistently."""

    context: TokenContext
    cache: Any
    input_length: int  # length of the caller's prompt
    prompt_length: int  # length of the prompt the language model saw
    prompt_mask: torch.Tensor | None  # (B, prompt_length) when the prompt was rebuilt
    shift: torch.Tensor | None  # (B,) position shift for contiguous numbering after a rebuild
    positions_mode: str
    decoded: int = 0


class Session:
    """An open method on a model; the value of ``with mmaccel.apply(...) as session``.

    ``session.calls`` holds one :class:`TokenContext` per prefill call made inside the block (``generate``
    makes one per batch), ``session.last_call`` the latest.
    """

    def __init__(self, model: nn.Module, method: TokenMethod, adapter: ModelAdapter) -> None:
        self.model = model
        self.method = method
        self.adapter = adapter
        self.calls: list[TokenContext] = []
        self._hooks = HookSet()
        self._sequence: _Sequence | None = None
        self._visual: VisualStage | None = None
        if Stage.VISUAL_OUTPUT in method.stage:
            self._visual = VisualStage(method, adapter)
        elif Stage.VISION_ENCODER in method.stage:
            self._visual = TowerStage(method, adapter)  # hands its result on like a pre-LLM reduction
        self._layers = LayerStage(method, adapter) if Stage.LLM_PREFILL in method.stage else None
        self._signature = inspect.signature(adapter.base_model.forward)

    @property
    def last_call(self) -> TokenContext:
        if not self.calls:
            raise RuntimeError("no prefill call with images has run inside this session yet")
        return self.calls[-1]

    # -- open / close ------------------------------------------------------------------------------------------
    def open(self) -> Session:
        if id(self.model) in _ACTIVE:
            raise NotSupportedError("a method is already applied to this model; sessions cannot be nested")
        try:
            if self._visual is not None:
                self._visual.install(self._hooks)
            if self._layers is not None:
                self._layers.install(self._hooks)
            self._hooks.forward_pre_hook(self.adapter.base_model, self._on_model_call, with_kwargs=True)
        except BaseException:
            self._hooks.close()
            raise
        _ACTIVE.add(id(self.model))
        return self

    def close(self) -> None:
        _ACTIVE.discard(id(self.model))
        self._sequence = None
        if self._layers is not None:
            self._layers.stop()
        self._hooks.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the model-level hook ----------------------------------------------------------------------------------
    def _on_model_call(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]):
        if args:
            kwargs = dict(self._signature.bind_partial(*args, **kwargs).arguments)
            kwargs.update(kwargs.pop("kwargs", {}))
        cache = kwargs.get("past_key_values")
        past = cache.get_seq_length() if cache is not None else 0
        input_ids = kwargs.get("input_ids")
        has_images = input_ids is not None and bool((input_ids == self.adapter.image_token_id).any())
        if past == 0:
            self._sequence = None
            if self._layers is not None:
                self._layers.stop()
            if input_ids is None:
                if kwargs.get("inputs_embeds") is not None and self._has_visual_inputs(kwargs):
                    raise NotSupportedError("methods need input_ids to find the image tokens; pass input_ids")
                return None
            if not has_images:
                return None
            return (), self._start(kwargs)
        sequence = self._sequence
        q_len = input_ids.shape[1] if input_ids is not None else 1
        if sequence is None or sequence.cache is not cache or (has_images and q_len > 1):
            if has_images:
                raise NotSupportedError(
                    "image tokens arrived after the prefill (chunked prefill or a continued cache); "
                    "pass prefill_chunk_size=None and start each prompt from an empty cache"
                )
            return None
        return (), self._continue(sequence, kwargs)

    @staticmethod
    def _has_visual_inputs(kwargs: dict[str, Any]) -> bool:
        return kwargs.get("pixel_values") is not None or bool(kwargs.get("mm_encoder_outputs"))

    def _start(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        from transformers import DynamicCache

        cache = kwargs.get("past_key_values")
        if cache is not None and getattr(cache, "is_compileable", False):
            raise NotSupportedError(
                "static (compileable) caches are not supported by mmaccel methods; use DynamicCache"
            )
        use_cache = kwargs.get("use_cache")
        if cache is None and (use_cache if use_cache is not None else self.adapter.text_config.use_cache):
            cache = DynamicCache(config=self.adapter.text_config)  # what the model would create; now we know it
            kwargs["past_key_values"] = cache
        input_ids = kwargs["input_ids"]
        batch, length = input_ids.shape
        mask2d = kwargs.get("attention_mask")
        if mask2d is not None and mask2d.dim() != 2:
            raise NotSupportedError("methods need a 2-D attention mask (batch, sequence); got a 4-D mask")
        if mask2d is None:
            mask2d = torch.ones_like(input_ids)
        positions = kwargs.get("position_ids")
        if positions is None:
            positions = torch.arange(length, device=input_ids.device).expand(batch, -1)

        pending = None
        if self._visual is not None:
            kwargs = self._visual.encode_if_needed(kwargs)
            encoder_outputs = kwargs.get("mm_encoder_outputs") or {}
            if encoder_outputs.get("image") is not None:
                pending = self._visual.take_pending(list(encoder_outputs["image"].pooler_output))
        counts = list(pending.counts_in) if pending is not None else self._feature_counts(kwargs)
        index = visual_index(input_ids, self.adapter.image_token_id, counts)
        rows = images_per_row(index)
        stats, start = [], 0
        for row in range(batch):
            stats.append(SampleStats(images=rows[row], visual_tokens=sum(counts[start : start + rows[row]])))
            start += rows[row]
        context = TokenContext(stats=stats)
        self.calls.append(context)
        sequence = _Sequence(
            context=context,
            cache=cache,
            input_length=length,
            prompt_length=length,
            prompt_mask=None,
            shift=None,
            positions_mode=getattr(self.method, "positions", "original"),
        )
        if self._visual is not None:
            kwargs, index, mask2d, positions = self._reduce_visual(
                sequence, kwargs, counts, pending, mask2d, positions
            )
        n_layers = self.adapter.num_text_layers()
        for row, row_stats in enumerate(stats):
            row_stats.layer_tokens = [int((index[row] >= 0).sum())] * n_layers
        if self._layers is not None:
            self._layers.start(context, cache, index, mask2d, positions)
        self._sequence = sequence
        return kwargs

    def _feature_counts(self, kwargs: dict[str, Any]) -> list[int]:
        """Placeholder tokens per image, in the order the model consumes them."""
        encoder_outputs = kwargs.get("mm_encoder_outputs") or {}
        if encoder_outputs.get("image") is not None:
            return [f.shape[0] for f in encoder_outputs["image"].pooler_output]
        per_image = self.adapter.tokens_per_image()
        n_placeholders = int((kwargs["input_ids"] == self.adapter.image_token_id).sum())
        if per_image is None or n_placeholders % per_image:
            raise NotSupportedError("cannot tell how many tokens each image has; pass pixel values or features")
        return [per_image] * (n_placeholders // per_image)

    def _reduce_visual(self, sequence: _Sequence, kwargs, counts, pending, mask2d, positions):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        assert self._visual is not None
        input_ids = kwargs["input_ids"]
        features = list(kwargs["mm_encoder_outputs"]["image"].pooler_output)
        context = sequence.context
        if pending is None or pending.identity:
            n_out = [f.shape[0] for f in features]
            index = visual_index(input_ids, self.adapter.image_token_id, n_out)
            self._record_visual(context, counts, n_out, pending, self._visual.stage_name)
            return kwargs, index, mask2d, positions
        features = [f[:n] for f, n in zip(features, pending.counts_out)]
        rebuilt = rebuild_prompt(
            input_ids,
            mask2d,
            positions,
            self.adapter.image_token_id,
            pending.counts_in,
            pending.counts_out,
            pending.sources,
            sequence.positions_mode,
            self.adapter.text_config.pad_token_id or 0,
        )
        kwargs["input_ids"] = rebuilt.input_ids
        kwargs["attention_mask"] = rebuilt.attention_mask  # always explicit: avoids packed-sequence detection
        kwargs["position_ids"] = rebuilt.position_ids
        encoder_outputs = dict(kwargs["mm_encoder_outputs"])
        encoder_outputs["image"] = BaseModelOutputWithPooling(pooler_output=features)
        kwargs["mm_encoder_outputs"] = encoder_outputs
        sequence.prompt_length = rebuilt.input_ids.shape[1]
        sequence.prompt_mask = rebuilt.attention_mask
        sequence.shift = rebuilt.shift
        self._record_visual(context, counts, pending.counts_out, pending, self._visual.stage_name)
        index = visual_index(rebuilt.input_ids, self.adapter.image_token_id, pending.counts_out)
        return kwargs, index, rebuilt.attention_mask, rebuilt.position_ids

    @staticmethod
    def _record_visual(context: TokenContext, counts_in, counts_out, pending, stage: str) -> None:
        if pending is not None:
            context.visual_keep = list(pending.sources)
            context.visual_groups = list(pending.groups)
            context.visual_sizes = list(pending.sizes or [])
        start = 0
        for stats in context.stats:
            n_in = sum(counts_in[start : start + stats.images])
            n_out = sum(counts_out[start : start + stats.images])
            stats.stages[stage] = (n_in, n_out)
            if pending is not None and pending.tower_tokens is not None and stats.images:
                stats.tower_tokens = list(pending.tower_tokens)
            start += stats.images

    def _continue(self, sequence: _Sequence, kwargs: dict[str, Any]) -> dict[str, Any]:
        """A decode step of the sequence started by the last prefill."""
        reference = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        batch, q_len = reference.shape[:2]
        device = reference.device
        steps = torch.arange(q_len, device=device)
        mask2d = kwargs.get("attention_mask")
        if mask2d is not None and mask2d.dim() != 2:
            raise NotSupportedError("methods need a 2-D attention mask during decoding; got a 4-D mask")
        positions = kwargs.get("position_ids")
        if sequence.prompt_mask is not None:  # the prompt was rebuilt shorter
            if mask2d is not None:
                mask2d = torch.cat([sequence.prompt_mask, mask2d[:, sequence.input_length :]], dim=1)
                kwargs["attention_mask"] = mask2d
            if positions is None:
                if sequence.positions_mode == "original":
                    positions = (sequence.input_length + sequence.decoded + steps).expand(batch, -1)
                    kwargs["position_ids"] = positions
            elif sequence.positions_mode == "contiguous":
                positions = positions - sequence.shift[:, None]
                kwargs["position_ids"] = positions
        if positions is None:
            past = sequence.cache.get_seq_length()
            positions = (past + steps).expand(batch, -1)
        sequence.decoded += q_len
        sequence.context.decode_steps += 1
        if self._layers is not None:
            self._layers.decode(mask2d, positions)
        return kwargs


def apply(
    model: nn.Module, method: str | TokenMethod, budget: int | float | None = None, **hyperparams: Any
) -> Session:
    """Apply a method to ``model`` for the duration of a ``with`` block.

    ``method`` is a registered name (``mmaccel.list_methods()``) or a method instance. ``budget``: an int is the
    number of visual tokens kept per image, a float in (0, 1] the fraction kept. Everything is validated before
    the model is touched; on exit (also when the block raises) every hook is removed and the attention
    implementation restored, so the model computes exactly what it computed before.
    """
    instance = build_method(method, budget, **hyperparams)
    adapter = adapter_for(model)
    instance.validate(adapter)
    return Session(model, instance, adapter).open()
