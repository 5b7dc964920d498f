"""``apply``: run a method inside a model's own ``forward``/``generate``, reversibly.

A :class:`Session` is single-use: ``apply`` opens it, the end of its ``with`` block (or ``close()``) closes it,
and a closed session cannot be entered again (call ``apply`` again). Inside it, ``model.generate`` is the
model's own, behind a per-instance wrapper that refuses, before anything runs, the generation modes a method
cannot follow (:func:`unsupported_generation`) and tells the engine how many copies of each prompt ``generate``
makes (beams, return sequences). Calls the engine sees:

* a prefill (empty cache, visual tokens): laid out, reduced and rebuilt (:mod:`mmaccel.engine.visual`); rows
  ``generate`` repeated per beam or return sequence get the reduction of their prompt, computed once;
* a decode step (cached): continues the rebuilt prompt (mask, positions, in-LLM layer state);
* a full-sequence call without a cache that continues the last prompt (``use_cache=False``): the prompt exactly
  as its prefill rebuilt it, the new tokens placed as a decode step would place them, and in-LLM methods replay
  the prefill's decisions, so that it equals the cached decode of the same kept tokens.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmaccel.engine.budget_check import record_budget
from mmaccel.engine.context import TokenContext
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.layers import LayerStage, LayerState, positions_mode
from mmaccel.engine.sequence import last_position
from mmaccel.engine.tower import TowerStage
from mmaccel.engine.visual import VisualPrefill, VisualStage
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
    input_ids: torch.Tensor  # (B, input_length) the caller's prompt
    encoder_outputs: list[Any]  # the encoder outputs the caller passed with it (matched by identity)
    prefill: VisualPrefill  # the prompt as the language model saw it
    prompt_mask: torch.Tensor | None  # (B, prompt_length) when the prompt was rebuilt
    shift: torch.Tensor | None  # (B,) position shift for contiguous numbering after a rebuild
    positions_mode: str
    layer_state: LayerState | None = None  # in-LLM methods: the prefill's layer decisions
    next_position: torch.Tensor | None = None  # (B,) M-RoPE: position of the first decoded token of each row

    @property
    def input_length(self) -> int:
        """Length of the caller's prompt."""
        return self.input_ids.shape[1]

    @property
    def prompt_length(self) -> int:
        """Length of the prompt the language model saw."""
        return self.prefill.visual_index.shape[1]


class Session:
    """An open method on a model; the value of ``with mmaccel.apply(...) as session``.

    ``session.calls`` holds one :class:`TokenContext` per prefill call made inside the block (``generate``
    makes one per batch), ``session.last_call`` the latest. Its ``stats`` hold one entry per row the model ran:
    ``generate(num_beams=3)`` on 2 prompts runs 6 rows, each prompt's copies reduced alike.

    A session is single-use: ``mmaccel.apply`` opens it, and leaving its ``with`` block (or ``close()``)
    closes it for good. Entering a closed session, or entering an open one a second time (nested ``with``),
    raises :class:`~mmaccel.errors.ConfigError`; call ``mmaccel.apply`` again for every block.
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
        self._state = "new"  # "new" -> "open" -> "entered" (by a with block) -> "closed"
        self._generate_rows: int | None = None  # inside generate: the rows of the prompts it was given

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
        if self._state != "new":
            raise ConfigError("this session was opened already; call mmaccel.apply again for a new session")
        if id(self.model) in _ACTIVE:
            raise NotSupportedError("a method is already applied to this model; sessions cannot be nested")
        try:
            self._visual.install(self._hooks)
            if self._layers is not None:
                self._layers.install(self._hooks)
            self._hooks.forward_pre_hook(self.adapter.base_model, self._on_model_call, with_kwargs=True)
            self._wrap_generate()
        except BaseException:
            self._hooks.close()
            raise
        _ACTIVE.add(id(self.model))
        self._state = "open"
        return self

    def close(self) -> None:
        """Remove every hook and wrapper; the model computes exactly what it computed before. Idempotent."""
        if self._state in ("open", "entered"):
            _ACTIVE.discard(id(self.model))
        self._state = "closed"
        self._sequence = None
        if self._layers is not None:
            self._layers.stop()
        self._hooks.close()

    @property
    def closed(self) -> bool:
        return self._state == "closed"

    def __enter__(self) -> Session:
        if self._state == "closed":
            raise ConfigError(
                f"this {self.method.name!r} session is closed (a session serves one with block, then the model is "
                "restored); call mmaccel.apply(model, ...) again for another block"
            )
        if self._state == "entered":
            raise ConfigError(
                f"this {self.method.name!r} session is already entered by an enclosing with block; a session is "
                "entered once: use the open session inside that block, or call mmaccel.apply again after it"
            )
        if self._state != "open":
            raise ConfigError("this session is not open; sessions come from mmaccel.apply(model, method, ...)")
        self._state = "entered"
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- generate -------------------------------------------------------------------------------------------------
    def _wrap_generate(self) -> None:
        """Wrap ``model.generate`` for this instance (removed on close): refuse unsupported modes before anything
        runs, and note the prompts' rows, so that the prefill knows how many copies of each ``generate`` made."""
        model = self.model
        if "generate" in vars(model):
            raise NotSupportedError(f"{type(model).__name__}.generate is already wrapped; sessions cannot be nested")
        original = model.generate
        signature = inspect.signature(original)

        @functools.wraps(original)
        def generate(*args, **kwargs):
            arguments = dict(signature.bind_partial(*args, **kwargs).arguments)
            arguments.update(arguments.pop("kwargs", {}))
            if not self._frames_only:  # FRAMES methods leave the model's run unmodified: every mode works
                reason = unsupported_generation(model, arguments)
                if reason is not None:
                    raise NotSupportedError(f"generate under {self.method.name!r}: {reason}. {_SUPPORTED_MODES}")
            prompts = arguments.get("input_ids", arguments.get("inputs"))
            previous = self._generate_rows
            self._generate_rows = prompts.shape[0] if isinstance(prompts, torch.Tensor) else None
            try:
                return original(*args, **kwargs)
            finally:
                self._generate_rows = previous

        object.__setattr__(model, "generate", generate)
        self._hooks.on_close(functools.partial(vars(model).pop, "generate", None))

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
        sequence = self._sequence
        if past == 0:
            if cache is None and has_images and sequence is not None and self._continues(sequence, kwargs):
                return (), self._replay(sequence, kwargs)
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
        encoder_outputs = list((kwargs.get("mm_encoder_outputs") or {}).values())
        prefill = self._visual.prefill(kwargs, mask2d, positions, mode, pad_id, self._copies(input_ids))
        context = prefill.context
        self.calls.append(context)
        sequence = _Sequence(
            context=context,
            cache=cache,
            input_ids=input_ids,
            encoder_outputs=encoder_outputs,
            prefill=prefill,
            prompt_mask=prefill.attention_mask if prefill.rebuilt else None,
            shift=prefill.shift,
            positions_mode=mode,
        )
        if self.adapter.uses_mrope():
            sequence.next_position = last_position(positions, mask2d) + 1  # (B,) one past the last real token
            if prefill.rebuilt:  # decode calls without position ids continue from the kept positions
                n_real = prefill.attention_mask.long().sum(-1)  # (B,)
                self.adapter.set_rope_deltas((sequence.next_position - n_real)[:, None])
        n_layers = self.adapter.num_text_layers()
        for row_stats, n_visual in zip(context.stats, (prefill.visual_index >= 0).sum(-1).tolist()):
            row_stats.layer_tokens = [n_visual] * n_layers
        record_budget(self.method, context, prefill.units)
        if self._layers is not None:
            self._layers.start(context, cache, prefill.visual_index, prefill.attention_mask, prefill.position_ids)
            sequence.layer_state = self._layers.state
        self._sequence = sequence
        return prefill.kwargs

    def _copies(self, input_ids: torch.Tensor) -> int:
        """How many copies of each prompt the rows of ``input_ids`` hold: ``generate``'s beams or return
        sequences (rows ``b * n ... (b + 1) * n - 1`` repeat prompt b), 1 outside ``generate``."""
        prompts, rows = self._generate_rows, input_ids.shape[0]
        if prompts is None or rows == prompts or rows % prompts:
            return 1
        return rows // prompts

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
        past = sequence.cache.get_seq_length()  # layer 0 holds the whole prompt, whatever later layers pruned
        decoded = past - sequence.prompt_length  # tokens decoded before this call (assisted decoding crops)
        if self.adapter.uses_mrope():
            positions = self._decode_mrope_positions(sequence, kwargs, positions, q_len, decoded)
        elif sequence.prompt_mask is not None:
            if positions is None:
                if sequence.positions_mode == "original":
                    positions = (sequence.input_length + decoded + steps).expand(batch, -1)
                    kwargs["position_ids"] = positions
            elif sequence.positions_mode == "contiguous":
                positions = positions - sequence.shift[:, None]
                kwargs["position_ids"] = positions
        if positions is None:
            positions = (past + steps).expand(batch, -1)
        sequence.context.decode_steps += 1
        if self._layers is not None:
            self._layers.decode(mask2d, positions)
        return kwargs

    def _decode_mrope_positions(
        self, sequence: _Sequence, kwargs: dict[str, Any], positions, q_len: int, decoded: int
    ):
        """(3, B, q) M-RoPE positions of a decode step; passed to the model explicitly after a rebuilt prompt.

        Decoding continues from the full prompt: the first new token of a row sits one past the largest position
        of its prompt (``get_rope_index``'s rule), whatever the rebuild dropped. Positions computed here for a call
        that passed none are always passed on: the model's own rule (``compute_3d_position_ids`` in transformers
        5.23) numbers every column of a 2-D attention mask, not the new tokens, and fails on such calls.
        """
        if positions is None:
            assert sequence.next_position is not None
            steps = torch.arange(q_len, device=sequence.next_position.device) + decoded
            positions = (sequence.next_position[:, None] + steps).expand(3, -1, -1)  # (3, B, q)
            kwargs["position_ids"] = positions
        elif positions.dim() == 3 and positions.shape[0] == 4:  # generate: a text row, then t, h, w
            positions = positions[1:]
        elif positions.dim() == 2:
            positions = positions[None].expand(3, -1, -1)
        if sequence.prompt_mask is not None:
            kwargs["position_ids"] = positions
        return positions

    # -- full-sequence calls without a cache (use_cache=False) ---------------------------------------------------
    @staticmethod
    def _continues(sequence: _Sequence, kwargs: dict[str, Any]) -> bool:
        """Whether a call without a cache is the last (uncached) prompt followed by new tokens, with the same
        encoder outputs: ``generate(use_cache=False)`` re-running the whole sequence at every step."""
        if sequence.cache is not None or not sequence.encoder_outputs:
            return False
        input_ids, n = kwargs["input_ids"], sequence.input_length
        if input_ids.shape[0] != sequence.input_ids.shape[0] or input_ids.shape[1] <= n:
            return False
        outputs = list((kwargs.get("mm_encoder_outputs") or {}).values())
        if len(outputs) != len(sequence.encoder_outputs):
            return False
        if any(output is not known for output, known in zip(outputs, sequence.encoder_outputs)):
            return False
        return torch.equal(input_ids[:, :n], sequence.input_ids)

    def _replay(self, sequence: _Sequence, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The prompt as its prefill rebuilt it, then the new tokens as a decode step places them; in-LLM methods
        replay the prefill's decisions. Equals the cached decode of the same kept tokens."""
        prefill, n = sequence.prefill, sequence.input_length
        new_ids = kwargs["input_ids"][:, n:]  # (B, E)
        batch, q_len = new_ids.shape
        caller_mask = kwargs.get("attention_mask")
        new_mask = caller_mask[:, n:] if caller_mask is not None else torch.ones_like(new_ids)
        new_positions = self._replay_positions(sequence, kwargs.get("position_ids"), q_len)  # (B, E) or (3, B, E)
        kwargs = dict(kwargs)
        kwargs["input_ids"] = torch.cat([prefill.kwargs["input_ids"], new_ids], dim=1)
        mask2d = torch.cat([prefill.attention_mask, new_mask.to(prefill.attention_mask.dtype)], dim=1)
        kwargs["attention_mask"] = mask2d  # explicit: avoids packed-sequence detection
        kwargs["position_ids"] = positions = torch.cat([prefill.position_ids, new_positions], dim=-1)
        kwargs["mm_encoder_outputs"] = prefill.kwargs.get("mm_encoder_outputs")
        for key in self.adapter.per_token_keys:
            if kwargs.get(key) is not None and prefill.kwargs.get(key) is not None:
                kwargs[key] = torch.cat([prefill.kwargs[key], kwargs[key][:, n:]], dim=1)
        sequence.context.decode_steps += 1
        if self._layers is not None and sequence.layer_state is not None:
            index = torch.cat([prefill.visual_index, prefill.visual_index.new_full((batch, q_len), -1)], dim=1)
            self._layers.replay(sequence.layer_state, index, mask2d, positions)
        return kwargs

    def _replay_positions(self, sequence: _Sequence, given: torch.Tensor | None, q_len: int) -> torch.Tensor:
        """(B, E), or (3, B, E) on M-RoPE models: the positions of the E new tokens, as :meth:`_continue` would
        give them one step at a time."""
        n = sequence.input_length
        if given is not None:
            if self.adapter.uses_mrope():
                if given.dim() == 3 and given.shape[0] == 4:  # generate: a text row, then t, h, w
                    given = given[1:]
                elif given.dim() == 2:
                    given = given[None].expand(3, -1, -1)
                return given[..., n:]
            new = given[:, n:]
            if sequence.positions_mode == "contiguous" and sequence.shift is not None:
                new = new - sequence.shift[:, None]
            return new
        if self.adapter.uses_mrope():
            assert sequence.next_position is not None
            steps = torch.arange(q_len, device=sequence.next_position.device)
            return (sequence.next_position[:, None] + steps).expand(3, -1, -1)
        last = sequence.prefill.position_ids[:, -1:]  # (B, 1) left padding: the last column is real
        return last + 1 + torch.arange(q_len, device=last.device)


_SUPPORTED_MODES = (
    "Supported: greedy and sampled decoding, beam search, num_return_sequences, use_cache=False and "
    "prompt-lookup decoding (prompt_lookup_num_tokens), with the default dynamic cache"
)


def unsupported_generation(model: nn.Module, arguments: dict[str, Any]) -> str | None:
    """Why ``model.generate(**arguments)`` cannot run faithfully under a method, or None when it can."""
    config = arguments.get("generation_config") or model.generation_config

    def setting(name: str) -> Any:
        return arguments[name] if name in arguments else getattr(config, name, None)

    if arguments.get("assistant_model") is not None:
        return (
            "assisted decoding (assistant_model=...) is not supported: generate hands the assistant model the "
            "main model's image features, which the method reduced, and checks the first candidate inside the "
            "main model's prefill, where an in-LLM method would read it as part of the prompt"
        )
    if setting("assistant_early_exit") is not None:
        return (
            "self-speculative decoding (assistant_early_exit=...) is not supported: its draft runs the early "
            "layers alone, outside the method's prefill"
        )
    implementation = setting("cache_implementation")
    cache = arguments.get("past_key_values")
    if getattr(cache, "is_compileable", False) or implementation in ("static", "offloaded_static", "hybrid"):
        return (
            f"a static cache (cache_implementation={implementation!r}) is not supported: generate sizes it and "
            "builds 4-D attention masks for the prompt it was given, which the method shortens"
        )
    if implementation not in (None, "dynamic"):
        return f"cache_implementation={implementation!r} is not supported: only the dynamic cache (the default) is"
    if setting("prefill_chunk_size") is not None:
        return (
            "chunked prefill (prefill_chunk_size=...) is not supported: it splits a prompt's image tokens "
            "across calls, and a method reduces each image whole"
        )
    return None


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

    The returned :class:`Session` is open at once and single-use: one ``with`` block (or ``session.close()``)
    ends it, and entering it again raises :class:`~mmaccel.errors.ConfigError`; call ``apply`` again instead.
    Inside it, ``model.generate`` supports greedy and sampled decoding, beam search, ``num_return_sequences``,
    ``use_cache=False`` and prompt-lookup decoding; assisted decoding with an ``assistant_model``, static caches
    and chunked prefill raise :class:`~mmaccel.errors.NotSupportedError` before the model runs.
    """
    instance = build_method(method, budget, **hyperparams)
    adapter = adapter_for(model)
    instance.validate(adapter)
    return Session(model, instance, adapter).open()
