"""The visual stage: every family's visual tokens, in units, reduced where the family needs it.

One flow for every model, for ``model(...)`` and ``model.generate(...)`` alike:

1. **Encoder calls.** The base model's encoder functions (``get_image_features``, ``get_video_features``; the
   adapter names them) are wrapped per instance for the session. Each call records its arguments, the tower
   captures made during it (:mod:`mmaccel.engine.captures`) and its output. ``generate`` encodes before the
   first forward; a plain forward with raw pixels is encoded here, through the same functions.
2. **Reduction at the adapter's site.** ``"projector_input"`` (LLaVA-1.5): a pre-hook on the projector hands
   the (I, P, Dv) features of the call to the method (one unit per image) and projects only what it keeps;
   in-tower methods (:class:`~mmaccel.engine.tower.TowerStage`) hand on their tower's result there.
   ``"encoder_output"`` (LLaVA-NeXT, LLaVA-OneVision, Qwen-VL): at the language-model call, every item's run is
   split into the units of its :class:`~mmaccel.models.layout.TileLayout` (anyres tiles, frames, frame groups)
   and reduced unit by unit (:mod:`mmaccel.engine.units`).
3. **The prompt** (:meth:`VisualStage.prefill`): the language-model call's features are matched to their
   encoder call by identity, each item's placeholder run shrinks to its kept count
   (:func:`~mmaccel.engine.sequence.rebuild_prompt`), and every visual token gets its unit number within its
   row, which in-LLM methods group by. The model then runs unmodified.

Budgets therefore apply per unit: per image on LLaVA-1.5 and on Qwen-VL images, per tile on anyres images, per
frame (group) on videos. Features computed outside the session have no recorded call: a method that reduces
cannot read their captures and refuses them; in-LLM methods lay them out from the forward's arguments.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mmaccel.engine.captures import tower_captures
from mmaccel.engine.context import SampleStats, TokenContext
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.sequence import rebuild_prompt, take_tokens, visual_layout
from mmaccel.engine.units import ReducedRun, identity_run, reduce_units
from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.methods.base import Stage, VisualTokens

if TYPE_CHECKING:
    from mmaccel.methods.base import TokenMethod
    from mmaccel.models.base import ModelAdapter
    from mmaccel.models.layout import TileLayout

log = logging.getLogger(__name__)


@dataclass
class EncoderCall:
    """One call of the model's encoder for a modality: its arguments, the tower captures, its output."""

    modality: str
    arguments: dict[str, Any]
    captures: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # name -> one tensor per tower unit
    output: Any = None
    features: list[torch.Tensor] | None = None  # per item (n_i, D): the output as the call returned it
    site_runs: list[ReducedRun] | None = None  # per item: the reduction made at the projector input
    runs: list[ReducedRun] | None = None  # per item: the reduction made at the language-model call


@dataclass
class VisualPrefill:
    """What the visual stage hands back to the session for one prefill call."""

    kwargs: dict[str, Any]
    context: TokenContext
    visual_index: torch.Tensor  # (B, N') unit number within its row, -1 for text, padding and structural tokens
    attention_mask: torch.Tensor  # (B, N')
    position_ids: torch.Tensor  # (B, N'), or (3, B, N') on M-RoPE models
    rebuilt: bool  # whether the prompt was rebuilt
    shift: torch.Tensor | None  # (B,) original minus new position of each row's last token, when rebuilt
    units: list[list[int]]  # per row: the tokens of each unit (image, tile, frame) its budget applies to


class VisualStage:
    """Follows the encoder calls and realises a ``VISUAL_OUTPUT`` method (or none) on any adapter."""

    stage_name = "vision_output"

    def __init__(self, method: TokenMethod, adapter: ModelAdapter) -> None:
        self.method = method
        self.adapter = adapter
        self.reduces = Stage.VISUAL_OUTPUT in method.stage
        self.site = adapter.reduction_site()
        self.calls: list[EncoderCall] = []
        self.tower_tokens: list[int] | None = None  # in-tower methods: tokens entering each block, then leaving
        self._current: EncoderCall | None = None
        self._captures = tower_captures(adapter, method.needs, self._store) if self.reduces else None
        # in-tower methods (TowerStage) reduce too, with probes of their own blocks

    # -- installation ------------------------------------------------------------------------------------------
    def install(self, hooks: HookSet) -> None:
        base = self.adapter.base_model
        for modality, name in self.adapter.encoder_functions().items():
            if name in vars(base):
                raise NotSupportedError(f"{type(base).__name__}.{name} is already wrapped; sessions cannot be nested")
            object.__setattr__(base, name, self._wrap(modality, getattr(base, name)))
            hooks.on_close(functools.partial(vars(base).pop, name, None))
        if self._captures is not None:
            self._captures.install(hooks)
        if self.reduces and self.site == "projector_input":
            hooks.forward_pre_hook(self.adapter.reduction_module(), self._reduce_at_projector)

    def _wrap(self, modality: str, original):
        signature = inspect.signature(original)

        @functools.wraps(original)
        def encode(*args, **kwargs):
            arguments = dict(signature.bind_partial(*args, **kwargs).arguments)
            arguments.update(arguments.pop("kwargs", {}))
            call = EncoderCall(modality=modality, arguments=arguments)
            previous, self._current = self._current, call
            try:
                output = original(*args, **kwargs)
            finally:
                self._current = previous
            call.output = output
            call.features = self.adapter.encoder_features(modality, output)  # generate may expand it in place
            self.calls = [*self.calls[-7:], call]  # a few recent calls: generate encodes images, then video
            return output

        return encode

    def _store(self, name: str, values: list[torch.Tensor]) -> None:
        if self._current is not None:
            self._current.captures.setdefault(name, []).extend(values)

    # -- the projector-input site ------------------------------------------------------------------------------------
    def _reduce_at_projector(self, module, args):
        call = self._current
        if call is None:  # the projector ran outside an encoder call: not ours to change
            return None
        features = args[0]  # (I, P, Dv), CLS at 0 when the model keeps it in the features
        call.site_runs, reduced = self._site_reduce(features, call)
        return None if reduced is None else (reduced, *args[1:])

    def _site_reduce(self, features: torch.Tensor, call: EncoderCall):
        """Reduce the (I, P, Dv) projector input of ``call``: (runs, padded reduced features), or (None, None)."""
        cls_first = self.adapter.cls_in_features()
        patches = features[:, 1:] if cls_first else features
        n_images, n_in = features.shape[:2]
        n_patches = patches.shape[1]
        if self.method.keeps_all(n_patches):
            return None, None
        captures = {name: torch.stack(values) for name, values in call.captures.items() if values}
        height, width = self.adapter.patch_grid()
        tokens = VisualTokens(features=patches, grid=(height, width), **captures)
        reduction = self.method.reduce_visual(tokens)
        out, source, groups = reduction.features, reduction.source, reduction.groups
        if out.shape[0] != n_images or source.shape != out.shape[:2] or groups.shape != (n_images, n_patches):
            raise RuntimeError(f"{self.method.name}.reduce_visual returned inconsistent shapes {tuple(out.shape)}")
        counts = list(reduction.counts) if reduction.counts is not None else [out.shape[1]] * n_images
        if len(counts) != n_images or not all(0 <= c <= out.shape[1] for c in counts):
            raise RuntimeError(f"{self.method.name}.reduce_visual returned counts {counts} for {tuple(out.shape)}")
        if cls_first and not self.method.needs.vision_cls_feature:
            # The model hands CLS to the language model: it passes through, ahead of the reduced patches.
            out = torch.cat([features[:, :1], out], dim=1)
            source = torch.cat([source.new_full((n_images, 1), -1), source + 1], dim=1)
            groups = torch.cat([groups.new_zeros((n_images, 1)), torch.where(groups >= 0, groups + 1, -1)], dim=1)
            counts = [count + 1 for count in counts]
        elif cls_first:
            source = torch.where(source >= 0, source + 1, -1)
            groups = torch.cat([groups.new_zeros((n_images, 1)), groups], dim=1)
        runs = [
            ReducedRun(
                features=None,
                sources=row[:count],
                groups=row_groups,
                labels=torch.zeros(count, dtype=torch.long, device=row.device),
                visual_in=n_in,
                visual_out=count,
            )
            for row, row_groups, count in zip(source, groups, counts)
        ]
        return runs, out

    # -- the language-model call -------------------------------------------------------------------------------------
    def prefill(
        self,
        kwargs: dict[str, Any],
        mask2d: torch.Tensor,
        positions: torch.Tensor,
        positions_mode: str,
        pad_id: int,
        expand: int = 1,
    ) -> VisualPrefill:
        """Encode (if the caller passed raw inputs), lay out every item, reduce, rebuild the prompt.

        ``expand``: how many times ``generate`` repeated each prompt row (beams, return sequences): rows
        ``b * expand ... (b + 1) * expand - 1`` are copies of one prompt, encoded once. Each copy gets the items
        and the reduction of that prompt, exactly as the prompt alone would.
        """
        kwargs = self._encode(kwargs)
        outputs = dict(kwargs.get("mm_encoder_outputs") or {})
        token_ids = self.adapter.visual_token_ids()
        names = {token: modality for modality, token in token_ids.items()}
        per_modality: dict[str, tuple[list[TileLayout], list[ReducedRun] | None]] = {}
        input_ids = kwargs["input_ids"]
        for modality in token_ids:
            if outputs.get(modality) is not None:
                layouts, runs, recorded = self._lay_out(modality, outputs[modality], kwargs)
                if recorded and expand > 1:  # the call's items are the prompts' own: copy them per row
                    layouts, runs = _expanded(input_ids, expand, token_ids[modality], modality, layouts, runs)
                per_modality[modality] = layouts, runs
        self.calls = []
        counts = {token_ids[m]: [lay.n_tokens for lay in layouts] for m, (layouts, _) in per_modality.items()}
        items = visual_layout(input_ids, counts, names)  # validates the placeholder runs
        layouts = [per_modality[names[token]][0][k] for token, k in items.items]
        runs = [_run_of(per_modality[names[token]][1], k) for token, k in items.items]

        context = self._record(items.rows, layouts, runs, input_ids.shape[0])
        rebuilt = any(run is not None for run in runs)
        shift = None
        if rebuilt:
            prompt = rebuild_prompt(
                input_ids,
                mask2d,
                positions,
                tuple(token_ids[m] for m in per_modality),
                items.counts,
                [run.n_out if run is not None else n for run, n in zip(runs, items.counts)],
                [
                    run.sources if run is not None else torch.arange(n, device=input_ids.device)
                    for run, n in zip(runs, items.counts)
                ],
                positions_mode,
                pad_id,
            )
            kwargs["input_ids"] = input_ids = prompt.input_ids
            kwargs["attention_mask"] = mask2d = prompt.attention_mask  # explicit: avoids packed-sequence detection
            kwargs["position_ids"] = positions = prompt.position_ids  # (B, N') or the (3, B, N') M-RoPE rows
            for key in self.adapter.per_token_keys:
                if kwargs.get(key) is not None:
                    kwargs[key] = take_tokens(kwargs[key], prompt.keep, prompt.attention_mask)
            for modality, (_, modality_runs) in per_modality.items():
                if modality_runs is not None:
                    outputs[modality] = self.adapter.encoder_output(modality, [r.features for r in modality_runs])
            kwargs["mm_encoder_outputs"] = outputs
            shift = prompt.shift
        labels = [run.labels if run is not None else layout.unit for run, layout in zip(runs, layouts)]
        max_units = max((layout.tower_units for layout in layouts), default=1)
        index = unit_index(input_ids, tuple(counts), labels, max_units)
        units: list[list[int]] = [[] for _ in range(input_ids.shape[0])]
        for row, layout in zip(items.rows, layouts):
            units[row] += layout.unit_sizes()
        return VisualPrefill(kwargs, context, index, mask2d, positions, rebuilt, shift, units)

    def _encode(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Replace raw inputs by the model's own encoder output (encoded here, with the session's hooks active)."""
        encoder_outputs = dict(kwargs.get("mm_encoder_outputs") or {})
        encoders = {
            "image": (self.adapter.image_input_keys, self.adapter.encode_images),
            "video": (self.adapter.video_input_keys, self.adapter.encode_videos),
        }
        for modality in self.adapter.encoder_functions():
            keys, encode = encoders[modality]
            if encoder_outputs.get(modality) is None and kwargs.get(keys[0]) is not None:
                encoder_outputs[modality] = encode(kwargs)  # the raw input is the first key
                for key in keys:
                    kwargs.pop(key, None)
                kwargs["mm_encoder_outputs"] = encoder_outputs
        return kwargs

    def _lay_out(self, modality: str, output: Any, kwargs: dict[str, Any]):
        """(layouts, runs or None, whether the items are those of a recorded encoder call) of one modality's
        encoder output. A recorded call is laid out from the features it returned (``generate`` may have
        repeated them since, per beam or return sequence), and reduced once."""
        call = next((c for c in reversed(self.calls) if c.modality == modality and c.output is output), None)
        features = call.features if call is not None else self.adapter.encoder_features(modality, output)
        if call is None and self.reduces:
            raise NotSupportedError(
                f"the {modality} features passed to {self.adapter.name} were computed outside this mmaccel session, "
                f"so {self.method.name!r} cannot read their tower captures; pass the raw inputs (pixel values and "
                "sizes) inside the session"
            )
        try:
            layouts = self.adapter.visual_layouts(modality, call.arguments if call else kwargs, len(features))
        except (ConfigError, KeyError) as error:
            raise NotSupportedError(
                f"the {modality} features passed to {self.adapter.name} were computed outside this mmaccel session, "
                f"so their tile layout is unknown ({error}); pass the raw inputs inside the session"
            ) from error
        if call is not None and call.site_runs is not None:
            for run, feature in zip(call.site_runs, features, strict=True):
                run.features = feature[: run.n_out]  # the projected kept tokens, cut from the padded batch
            return layouts, call.site_runs, True
        lengths = [f.shape[0] for f in features]
        if lengths != [layout.n_tokens for layout in layouts]:
            raise NotSupportedError(
                f"{self.adapter.name}: the {modality} features of this call hold {lengths} tokens per {modality} "
                f"where the {modality}s have {[lay.n_tokens for lay in layouts]}: features cut into chunks "
                "(chunked prefill: pass prefill_chunk_size=None) or not made by the model's own encoder"
            )
        if self.reduces and self.site == "encoder_output":
            if call.runs is None:
                call.runs = reduce_units(self.method, self.adapter, features, layouts, call.captures)
            return layouts, call.runs, True
        return layouts, None, call is not None

    def _record(self, rows: list[int], layouts, runs, batch: int) -> TokenContext:
        """Per-sample stats and, for a reducing method, per-item kept sources, groups, sizes and frames."""
        stats = [SampleStats(images=0, visual_tokens=0) for _ in range(batch)]
        visual_out = [0] * batch
        context = TokenContext(stats=stats)
        for g, (row, layout, run) in enumerate(zip(rows, layouts, runs)):
            stats[row].images += 1
            stats[row].visual_tokens += layout.n_visual
            visual_out[row] += run.visual_out if run is not None else layout.n_visual
            if not self.reduces:
                continue
            run = run if run is not None else identity_run(layout, None, layout.unit.device)
            context.visual_keep.append(run.sources)
            context.visual_groups.append(run.groups)
            if run.sizes is not None:
                context.visual_sizes.append(run.sizes)
            context.visual_frames[g] = layout.frame_of(run.labels)  # on the labels' device: no host copy
        if self.reduces:
            for row_stats, n_out in zip(stats, visual_out):
                row_stats.stages[self.stage_name] = (row_stats.visual_tokens, n_out)
                if self.tower_tokens is not None and row_stats.images:
                    row_stats.tower_tokens = list(self.tower_tokens)
        return context


@dataclass(frozen=True)
class PlacedItem:
    """A visual item of processor inputs: its modality, its number among that modality's items, its row, layout."""

    modality: str
    number: int
    row: int
    layout: TileLayout


def placed_items(adapter: ModelAdapter, inputs: dict[str, Any]) -> list[PlacedItem]:
    """The visual items of processor ``inputs`` in (batch, sequence) order, laid out by the adapter and placed in
    their rows as the engine splits the placeholder runs (a mismatch is a ``ConfigError``), without running the
    model."""
    input_ids = inputs["input_ids"]
    token_ids = adapter.visual_token_ids()
    names = {token: modality for modality, token in token_ids.items()}
    layouts_of, counts = {}, {}
    for modality, token in token_ids.items():
        keys = adapter.image_input_keys if modality == "image" else adapter.video_input_keys
        raw = inputs.get(keys[0]) if keys else None
        if raw is None and not bool((input_ids == token).any()):
            continue
        n_items = len(raw) if raw is not None else 0
        layouts_of[token] = adapter.visual_layouts(modality, inputs, n_items)
        counts[token] = [layout.n_tokens for layout in layouts_of[token]]
    placed = visual_layout(input_ids, counts, names)
    return [
        PlacedItem(names[token], k, row, layouts_of[token][k]) for (token, k), row in zip(placed.items, placed.rows)
    ]


def visual_tokens_per_row(adapter: ModelAdapter, inputs: dict[str, Any]) -> list[int]:
    """Visual tokens of every row of processor ``inputs`` as a session's stats count them (structural tokens such
    as anyres newlines excluded), without running the model."""
    per_row = [0] * inputs["input_ids"].shape[0]
    for item in placed_items(adapter, inputs):
        per_row[item.row] += item.layout.n_visual
    return per_row


def _expanded(input_ids: torch.Tensor, expand: int, token: int, modality: str, layouts: list, runs: list | None):
    """The items of one modality for ``input_ids`` (B * expand, N) whose rows repeat each of B prompts ``expand``
    times, from the items of the B prompts: each row's items in order, repeated per copy (``generate``'s own
    order for its expanded encoder outputs)."""
    prompts = input_ids[::expand]  # (B, N)
    if not torch.equal(input_ids, prompts.repeat_interleave(expand, dim=0)):
        raise NotSupportedError(f"the expanded prompts of generate are not {expand} copies of each prompt")
    rows = visual_layout(prompts, {token: [layout.n_tokens for layout in layouts]}, {token: modality}).rows
    copies = [
        item for row in range(prompts.shape[0]) for _ in range(expand) for item, of in enumerate(rows) if of == row
    ]
    return [layouts[i] for i in copies], None if runs is None else [runs[i] for i in copies]


def _arange(n: int, like: torch.Tensor) -> torch.Tensor:
    return torch.arange(n, device=like.device)


def _run_of(runs: list[ReducedRun] | None, k: int) -> ReducedRun | None:
    return runs[k] if runs is not None else None


def unit_index(
    input_ids: torch.Tensor, token_ids: tuple[int, ...], labels: list[torch.Tensor], max_units: int
) -> torch.Tensor:
    """(B, N) unit number of every visual token within its row, -1 for text, padding and structural tokens.

    ``labels``: per item in (batch, sequence) order, the unit (-1 structural) of each of its placeholder tokens;
    units are numbered within a row in the order of their items, then of their labels (each below ``max_units``).
    Numbers are dense ranks of the units present: a unit that kept no token has none, and the later units of its
    row take the next numbers (so they are group ids, not indices into the row's unit sizes).
    """
    index = torch.full_like(input_ids, -1)
    if not labels:
        return index
    visual = torch.isin(input_ids, torch.tensor(token_ids, device=input_ids.device))  # (B, N)
    device = input_ids.device
    # matches input_ids[visual], which lists the items in (batch, sequence) order
    label_all = torch.cat([label.to(device) for label in labels])
    lengths = torch.tensor([label.numel() for label in labels], device=device)
    item_all = torch.repeat_interleave(torch.arange(len(labels), device=device), lengths)
    keys = torch.where(label_all >= 0, item_all * max_units + label_all, -1)
    all_keys = torch.full_like(input_ids, -1)
    all_keys[visual] = keys
    valid = all_keys >= 0
    ranks = torch.full_like(input_ids, -1)
    ranks[valid] = torch.unique(all_keys[valid], return_inverse=True)[1]  # items never span rows: ranks rise by row
    first = ranks.masked_fill(~valid, input_ids.numel()).amin(dim=1, keepdim=True)  # (B, 1)
    return torch.where(valid, ranks - first, index)
