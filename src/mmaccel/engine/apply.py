"""``apply``: run a method inside a model's own ``forward``/``generate``, reversibly."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmaccel.engine.budget_check import record_budget
from mmaccel.engine.context import TokenContext
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.layers import LayerStage, positions_mode
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
        self.full_budget = method.keeps_everything()  # budget=1.0: nothing is probed, scored or changed
        acting = method if not self.full_budget else _Unchanged()
        self._visual = TowerStage(method, adapter) if Stage.VISION_ENCODER in acting.stage else None
        self._visual = self._visual or VisualStage(acting, adapter)
        self._layers = LayerStage(method, adapter) if Stage.LLM_PREFILL in acting.stage else None
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
        """The prefill of a prompt with visual items: lay out, reduce, rebuild (:mod:`mmaccel.engine.visual`)."""
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
        mask2d = kwargs.get("attention_mask")
        if mask2d is not None and mask2d.dim() != 2:
            raise NotSupportedError("methods need a 2-D attention mask (batch, sequence); got a 4-D mask")
        positions = self._prompt_positions(kwargs, mask2d)  # (B, N), or (3, B, N) on M-RoPE models
        if mask2d is None:
            mask2d = torch.ones_like(input_ids)
        mode = positions_mode(self.method, self.adapter)
        pad_id = self.adapter.text_config.pad_token_id or 0
        prefill = self._visual.prefill(kwargs, mask2d, positions, mode, pad_id)
        context = prefill.context
        self.calls.append(context)
        sequence = _Sequence(
            context=context,
            cache=cache,
            input_length=input_ids.shape[1],
            prompt_length=prefill.visual_index.shape[1],
            prompt_mask=prefill.attention_mask if prefill.rebuilt else None,
            shift=prefill.shift,
            positions_mode=mode,
        )
        if self.adapter.uses_mrope():
            sequence.next_position = positions[:, :, -1].amax(0) + 1  # left padding: the last column is real
            if prefill.rebuilt:  # decode calls without position ids continue from the kept positions
                n_real = prefill.attention_mask.long().sum(-1)  # (B,)
                self.adapter.set_rope_deltas((sequence.next_position - n_real)[:, None])
        n_layers = self.adapter.num_text_layers()
        for row_stats, n_visual in zip(context.stats, (prefill.visual_index >= 0).sum(-1).tolist()):
            row_stats.layer_tokens = [n_visual] * n_layers
        record_budget(self.method, context, prefill.units)
        if self._layers is not None:
            self._layers.start(context, cache, prefill.visual_index, prefill.attention_mask, prefill.position_ids)
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


class _Unchanged(TokenMethod):
    """What a session realises for a method whose budget keeps everything: no stage acts."""

    name = "none"
    stage = Stage(0)


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
