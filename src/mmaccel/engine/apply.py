"""``apply``: run a method inside a model's own ``forward``/``generate``, reversibly."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmaccel.engine.budget_check import record_budget, units_by_row
from mmaccel.engine.context import SampleStats, TokenContext
from mmaccel.engine.encoded import EncodedVisualStage
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.layers import LayerStage, positions_mode
from mmaccel.engine.sequence import VisualLayout, rebuild_prompt, take_tokens, visual_layout
from mmaccel.engine.tiles import TiledStage
from mmaccel.engine.tower import TowerStage
from mmaccel.engine.visual import VisualStage
from mmaccel.errors import ConfigError, NotSupportedError
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
    next_position: torch.Tensor | None = None  # (B,) M-RoPE: position of the first decoded token of each row
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
        self._tiles = TiledStage(method, adapter) if adapter.tiled else None  # all methods on tiled models
        if self._tiles is None and Stage.VISUAL_OUTPUT in method.stage and adapter.reduction_module() is None:
            self._visual = EncodedVisualStage(method, adapter)  # reduces the encoder's per-item output
        elif self._tiles is None and Stage.VISUAL_OUTPUT in method.stage:
            self._visual = VisualStage(method, adapter)
        elif self._tiles is None and Stage.VISION_ENCODER in method.stage:
            self._visual = TowerStage(method, adapter)  # hands its result on like a pre-LLM reduction
        self._layers = LayerStage(method, adapter) if Stage.LLM_PREFILL in method.stage else None
        self._frames_only = method.stage == Stage.FRAMES  # acts on the images before the processor, only
        self.resized: list = []  # FRAMES methods: one record per image passed through prepare_images
        self._prepared = False
        self._signature = inspect.signature(adapter.base_model.forward)

    def prepare_images(self, images: Any, processor: Any) -> Any:
        """Images as the method wants them before ``processor`` (resized by ``downsample``; others: unchanged).

        Call it on the images of every prompt before the processor; each image's record is appended to
        ``session.resized``. For methods that do not act before the processor it returns ``images`` itself.
        """
        if Stage.FRAMES not in self.method.stage:
            return images
        images, records = self.method.resize(images, processor)
        self.resized.extend(records)
        self._prepared = True
        return images

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
            if self._tiles is not None:
                self._tiles.install(self._hooks)
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
        has_images = input_ids is not None and bool(torch.isin(input_ids, self._token_tensor(input_ids)).any())
        if self._frames_only:  # the model runs unmodified on the prepared images
            if past == 0 and has_images and not self._prepared:
                raise ConfigError(
                    f"method {self.method.name!r} acts on the images before the processor: pass them through "
                    "session.prepare_images(images, processor) first"
                )
            return None
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
                    "image or video tokens arrived after the prefill (chunked prefill or a continued cache); "
                    "pass prefill_chunk_size=None and start each prompt from an empty cache"
                )
            return None
        return (), self._continue(sequence, kwargs)

    def _token_tensor(self, like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(list(self.adapter.visual_token_ids().values()), device=like.device)

    def _has_visual_inputs(self, kwargs: dict[str, Any]) -> bool:
        keys = (*self.adapter.image_input_keys, *self.adapter.video_input_keys)
        return any(kwargs.get(key) is not None for key in keys) or bool(kwargs.get("mm_encoder_outputs"))

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
        positions = self._prompt_positions(kwargs, mask2d)  # (B, N), or (3, B, N) on M-RoPE models
        if mask2d is None:
            mask2d = torch.ones_like(input_ids)

        if self._tiles is not None:
            return self._start_tiled(kwargs, cache, mask2d, positions)
        pending: dict[str, Any] = {}
        if self._visual is not None:
            kwargs = self._visual.encode_if_needed(kwargs)
            encoder_outputs = kwargs.get("mm_encoder_outputs") or {}
            for modality in self.adapter.visual_token_ids():
                if encoder_outputs.get(modality) is not None:
                    features = list(encoder_outputs[modality].pooler_output)
                    pending[modality] = self._visual.take_pending_for(modality, features)
        names = {token: modality for modality, token in self.adapter.visual_token_ids().items()}
        layout = visual_layout(input_ids, self._counts_by_token(kwargs, pending), names)
        stats = []
        for row in range(batch):
            items = [g for g, r in enumerate(layout.rows) if r == row]
            stats.append(SampleStats(images=len(items), visual_tokens=sum(layout.counts[g] for g in items)))
        context = TokenContext(stats=stats)
        self.calls.append(context)
        sequence = _Sequence(
            context=context,
            cache=cache,
            input_length=length,
            prompt_length=length,
            prompt_mask=None,
            shift=None,
            positions_mode=positions_mode(self.method, self.adapter),
        )
        if self.adapter.uses_mrope():
            sequence.next_position = positions[:, :, -1].amax(0) + 1  # left padding: the last column is real
        index = layout.index
        if self._visual is not None:
            reduced = self._reduce_visual(sequence, kwargs, layout, pending, mask2d, positions)
            kwargs, index, mask2d, positions = reduced
        n_layers = self.adapter.num_text_layers()
        for row, row_stats in enumerate(stats):
            row_stats.layer_tokens = [int((index[row] >= 0).sum())] * n_layers
        record_budget(self.method, context, units_by_row(layout.rows, layout.counts, batch))
        if self._layers is not None:
            self._layers.start(context, cache, index, mask2d, positions)
        self._sequence = sequence
        return kwargs

    def _start_tiled(self, kwargs: dict[str, Any], cache: Any, mask2d, positions) -> dict[str, Any]:
        """Prefill on a tiled model (anyres tiles, video frames): see :mod:`mmaccel.engine.tiles`."""
        assert self._tiles is not None
        length = kwargs["input_ids"].shape[1]
        mode = positions_mode(self.method, self.adapter)
        prefill = self._tiles.prefill(kwargs, mask2d, positions, mode, self.adapter.text_config.pad_token_id or 0)
        stats = [
            SampleStats(images=images, visual_tokens=n_in) for images, n_in in zip(prefill.images, prefill.visual_in)
        ]
        context = TokenContext(stats=stats)
        self.calls.append(context)
        if self._tiles.reduces:
            for row_stats, n_in, n_out in zip(stats, prefill.visual_in, prefill.visual_out):
                row_stats.stages[TiledStage.stage_name] = (n_in, n_out)
            context.visual_keep = list(prefill.keep)
            context.visual_groups = list(prefill.groups)
        index = prefill.visual_index
        sequence = _Sequence(
            context=context,
            cache=cache,
            input_length=length,
            prompt_length=index.shape[1],
            prompt_mask=prefill.attention_mask if prefill.reduced else None,
            shift=prefill.shift,
            positions_mode=mode,
        )
        n_layers = self.adapter.num_text_layers()
        for row, row_stats in enumerate(stats):
            row_stats.layer_tokens = [int((index[row] >= 0).sum())] * n_layers
        record_budget(self.method, context, prefill.units)
        if self._layers is not None:
            self._layers.start(context, cache, index, prefill.attention_mask, prefill.position_ids)
        self._sequence = sequence
        return prefill.kwargs

    def _prompt_positions(self, kwargs: dict[str, Any], mask2d: torch.Tensor | None) -> torch.Tensor:
        """The prompt's positions as the model will use them: (B, N), or the (3, B, N) M-RoPE rows t, h, w."""
        input_ids = kwargs["input_ids"]
        positions = kwargs.get("position_ids")
        if not self.adapter.uses_mrope():
            if positions is None:
                positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand(input_ids.shape[0], -1)
            return positions
        if positions is None:  # what the model computes from the full prompt (generate passes positions)
            positions, _ = self.adapter.rope_positions({**kwargs, "attention_mask": mask2d})
        elif positions.dim() == 3 and positions.shape[0] == 4:  # generate: a text row, then t, h, w
            positions = positions[1:]
        elif positions.dim() == 2:
            positions = positions[None].expand(3, -1, -1)
        return positions

    def _counts_by_token(self, kwargs: dict[str, Any], pending: dict[str, Any]) -> dict[int, list[int]]:
        """Placeholder tokens of each visual item per placeholder id, in the order the model consumes them."""
        counts = {}
        input_ids = kwargs["input_ids"]
        for modality, token in self.adapter.visual_token_ids().items():
            if not bool((input_ids == token).any()):
                continue
            if pending.get(modality) is not None:
                counts[token] = list(pending[modality].counts_in)
            else:
                counts[token] = self._feature_counts(kwargs, modality)
        return counts

    def _feature_counts(self, kwargs: dict[str, Any], modality: str = "image") -> list[int]:
        """Placeholder tokens per item of ``modality``, in the order the model consumes them."""
        encoder_outputs = kwargs.get("mm_encoder_outputs") or {}
        if encoder_outputs.get(modality) is not None:
            return [f.shape[0] for f in encoder_outputs[modality].pooler_output]
        counts = self.adapter.item_token_counts(kwargs, modality)
        if counts is not None:
            return counts
        per_image = self.adapter.tokens_per_image() if modality == "image" else None
        token = self.adapter.visual_token_ids()[modality]
        n_placeholders = int((kwargs["input_ids"] == token).sum())
        if per_image is None or n_placeholders % per_image:
            raise NotSupportedError(f"cannot tell how many tokens each {modality} has; pass pixel values or features")
        return [per_image] * (n_placeholders // per_image)

    def _reduce_visual(self, sequence: _Sequence, kwargs, layout: VisualLayout, pending, mask2d, positions):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        assert self._visual is not None
        input_ids = kwargs["input_ids"]
        context = sequence.context
        modality_of = {token: modality for modality, token in self.adapter.visual_token_ids().items()}
        # per item in (batch, sequence) order: its reduction, or None when it passes through unchanged
        reductions = [pending.get(modality_of[token]) for token, _ in layout.items]
        reductions = [None if r is None or r.identity else r for r in reductions]
        counts_out, sources = [], []
        for g, (_, k) in enumerate(layout.items):
            reduction = reductions[g]
            counts_out.append(reduction.counts_out[k] if reduction is not None else layout.counts[g])
            sources.append(reduction.sources[k] if reduction is not None else torch.arange(layout.counts[g]))
        self._record_visual(context, layout, counts_out, pending, reductions, self._visual.stage_name)
        if all(r is None for r in reductions):
            return kwargs, layout.index, mask2d, positions
        rebuilt = rebuild_prompt(
            input_ids,
            mask2d,
            positions,
            tuple(self.adapter.visual_token_ids().values()),
            layout.counts,
            counts_out,
            sources,
            sequence.positions_mode,
            self.adapter.text_config.pad_token_id or 0,
        )
        kwargs["input_ids"] = rebuilt.input_ids
        kwargs["attention_mask"] = rebuilt.attention_mask  # always explicit: avoids packed-sequence detection
        kwargs["position_ids"] = rebuilt.position_ids  # (B, N') or the (3, B, N') M-RoPE rows
        for key in self.adapter.per_token_keys:
            if kwargs.get(key) is not None:
                kwargs[key] = take_tokens(kwargs[key], rebuilt.keep, rebuilt.attention_mask)
        encoder_outputs = dict(kwargs["mm_encoder_outputs"])
        for modality, reduction in pending.items():
            if reduction is None or reduction.identity:
                continue
            if reduction.features is not None:
                features = list(reduction.features)
            else:
                features = [f[:n] for f, n in zip(encoder_outputs[modality].pooler_output, reduction.counts_out)]
            encoder_outputs[modality] = BaseModelOutputWithPooling(pooler_output=features)
        kwargs["mm_encoder_outputs"] = encoder_outputs
        sequence.prompt_length = rebuilt.input_ids.shape[1]
        sequence.prompt_mask = rebuilt.attention_mask
        sequence.shift = rebuilt.shift
        if self.adapter.uses_mrope():  # decode calls without position ids continue from the kept positions
            n_real = rebuilt.attention_mask.long().sum(-1)  # (B,)
            self.adapter.set_rope_deltas((sequence.next_position - n_real)[:, None])
        counts_by_token: dict[int, list[int]] = {}
        for (token, _), count in zip(layout.items, counts_out):
            counts_by_token.setdefault(token, []).append(count)
        index = visual_layout(rebuilt.input_ids, counts_by_token).index
        return kwargs, index, rebuilt.attention_mask, rebuilt.position_ids

    @staticmethod
    def _record_visual(context: TokenContext, layout: VisualLayout, counts_out, pending, reductions, stage: str):
        """Per-item kept sources, groups and sizes in (batch, sequence) order; tokens in/out per sample."""
        for g, (_, k) in enumerate(layout.items):
            reduction = reductions[g]
            if reduction is None:
                identity = torch.arange(layout.counts[g])
                context.visual_keep.append(identity)
                context.visual_groups.append(identity)
                continue
            context.visual_keep.append(reduction.sources[k])
            context.visual_groups.append(reduction.groups[k])
            if reduction.sizes:
                context.visual_sizes.append(reduction.sizes[k])
            if reduction.frame_ids is not None:
                context.visual_frames[g] = reduction.frame_ids[k]
        for row, stats in enumerate(context.stats):
            items = [g for g, r in enumerate(layout.rows) if r == row]
            stats.stages[stage] = (sum(layout.counts[g] for g in items), sum(counts_out[g] for g in items))
            towers = [r.tower_tokens for r in pending.values() if r is not None and r.tower_tokens is not None]
            if towers and stats.images:
                stats.tower_tokens = list(towers[0])

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
        if sequence.prompt_mask is not None and mask2d is not None:  # the prompt was rebuilt shorter
            mask2d = torch.cat([sequence.prompt_mask, mask2d[:, sequence.input_length :]], dim=1)
            kwargs["attention_mask"] = mask2d
        if self.adapter.uses_mrope():
            positions = self._decode_mrope_positions(sequence, kwargs, positions, q_len)
        elif sequence.prompt_mask is not None:
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

    def _decode_mrope_positions(self, sequence: _Sequence, kwargs: dict[str, Any], positions, q_len: int):
        """(3, B, q) M-RoPE positions of a decode step; passed to the model explicitly after a rebuilt prompt.

        Decoding continues from the full prompt: the first new token of a row sits one past the largest position
        of its prompt (``get_rope_index``'s rule), whatever the rebuild dropped. Positions computed here for a call
        that passed none are always passed on: the model's own rule (``compute_3d_position_ids`` in transformers
        5.23) numbers every column of a 2-D attention mask, not the new tokens, and fails on such calls.
        """
        if positions is None:
            assert sequence.next_position is not None
            steps = torch.arange(q_len, device=sequence.next_position.device) + sequence.decoded
            positions = (sequence.next_position[:, None] + steps).expand(3, -1, -1)  # (3, B, q)
            kwargs["position_ids"] = positions
        elif positions.dim() == 3 and positions.shape[0] == 4:  # generate: a text row, then t, h, w
            positions = positions[1:]
        elif positions.dim() == 2:
            positions = positions[None].expand(3, -1, -1)
        if sequence.prompt_mask is not None:
            kwargs["position_ids"] = positions
        return positions


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
