"""Tiled models (LLaVA-NeXT anyres images, LLaVA-OneVision images and video): budgets per tile or frame.

Such a model hands the language model, for each image, a run of visual tokens made of several units (a base
tile, then the high-resolution tiles joined into one unpadded grid with an ``image_newline`` token at the end of
every row; for a video, every frame's pooled grid, then one newline). The adapter describes every run by a
:class:`~mmaccel.models.layout.TileLayout`. Semantics, for every method:

* **Budgets are per unit.** An int budget is the tokens kept in every tile (or frame), a tile with fewer tokens
  (cut by unpadding, or a pooled frame) keeping all of its own; a float is the fraction kept of every unit. The
  overall count entering the language model is in the stats (``SampleStats.stages``, ``layer_tokens``).
* **Newline tokens are structural:** every one is kept (as FasterVLM's reference does on LLaVA-NeXT), none is
  budgeted, and none counts as a visual token in the stats; a row whose tiles keep nothing keeps its newline.
  In-LLM methods see newlines as non-visual tokens, so they are never pruned either.
* **Pre-LLM methods act on each unit's projected tokens, after the model packed them** (the packing reshapes
  full tile grids, so it cannot run on fewer tokens). Scores and keys are the vision tower's, captured per
  tile/frame at the feature layer and read for each token through the layout (a pooled video token averages
  its pooling window). A VisionZip CLS token is the tile's CLS feature put through the projector.
* **Order:** the kept tokens of every unit are laid out in raster order of the patch each stands for (a token
  that stands for no patch, e.g. VisionZip's CLS, first in its unit), so rows and their newlines stay
  meaningful; with ``positions="original"`` each keeps its source token's position.
* **In-LLM methods** group visual tokens by unit: FastV keeps its budget in every tile/frame.

The engine follows the model's own encoder calls (``get_image_features``, ``get_video_features``; also those
``generate`` makes before the first forward) through a reversible per-instance wrapper that records each
call's arguments (image sizes, video shape) and the tower captures made during it; the features the language
model receives are matched to their call by identity.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from mmaccel.engine.attention import attach_probe, probe_implementation
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.sequence import rebuild_prompt
from mmaccel.engine.visual import reader_attention
from mmaccel.errors import NotSupportedError
from mmaccel.methods.base import Stage, VisualTokens
from mmaccel.ops.attention import cls_attention, received_attention
from mmaccel.ops.heads import concat_heads, single_head_cls_attention, single_head_received_attention

if TYPE_CHECKING:
    from mmaccel.methods.base import TokenMethod
    from mmaccel.models.base import ModelAdapter
    from mmaccel.models.layout import TileLayout

log = logging.getLogger(__name__)

# capture name -> dimension of the patch axis in its per-unit tensor
_PATCH_AXIS = {"cls_attention": 1, "keys": 0, "reader_cls_attention": 0, "reader_keys": 0}


@dataclass
class EncoderCall:
    """One call of the model's encoder for a modality: its arguments, the tower captures, its output."""

    modality: str
    arguments: dict[str, Any]
    captures: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # name -> per tower call (T, ...)
    output: Any = None

    def capture(self, name: str) -> torch.Tensor | None:
        parts = self.captures.get(name)
        return torch.cat(parts) if parts else None


@dataclass
class ReducedRun:
    """One image's (or video's) run after reduction (n tokens in, n' out)."""

    features: torch.Tensor  # (n', D)
    sources: torch.Tensor  # (n',) long: run position each output token stands at (its source patch's token)
    groups: torch.Tensor  # (n,) long: output token each input token went into, -1 when dropped
    labels: torch.Tensor  # (n',) long: unit of each output token, -1 for structural tokens
    visual_in: int
    visual_out: int


@dataclass
class TiledPrefill:
    """What the prefill of a tiled model hands back to the session."""

    kwargs: dict[str, Any]
    visual_index: torch.Tensor  # (B, N') unit number within its row, -1 for text, padding and newlines
    attention_mask: torch.Tensor  # (B, N')
    position_ids: torch.Tensor  # (B, N')
    images: list[int]  # images and videos per row
    visual_in: list[int]  # per row
    visual_out: list[int]  # per row
    reduced: bool  # whether the prompt was rebuilt
    shift: torch.Tensor | None  # (B,) when rebuilt
    keep: list[torch.Tensor] = field(default_factory=list)  # per image/video: sources
    groups: list[torch.Tensor] = field(default_factory=list)  # per image/video: groups
    units: list[list[int]] = field(default_factory=list)  # per row: patch tokens of each tile or frame (budget units)


@dataclass
class _Unit:
    image: int
    unit: int
    positions: torch.Tensor  # (n_u,) in the run
    patches: torch.Tensor  # (n_u, k) tower patches
    tower_index: int  # index into the encoder call's tower batch
    grid: tuple[int, int]


class TiledStage:
    """Realises any method on a tiled model (see the module docstring)."""

    stage_name = "vision_output"

    def __init__(self, method: TokenMethod, adapter: ModelAdapter) -> None:
        self.method = method
        self.adapter = adapter
        self.reduces = Stage.VISUAL_OUTPUT in method.stage
        self.calls: list[EncoderCall] = []
        self._current: EncoderCall | None = None
        self._received = not adapter.has_cls_token() and adapter.scores_without_cls()
        self._reader = None
        if self.reduces and method.needs.vision_reader_qk:
            self._reader = adapter.feature_attention() if self._received else reader_attention(adapter)

    # -- installation ------------------------------------------------------------------------------------------
    def install(self, hooks: HookSet) -> None:
        base = self.adapter.base_model
        for modality, name in self.adapter.encoder_functions().items():
            if name in vars(base):
                raise NotSupportedError(f"{type(base).__name__}.{name} is already wrapped; sessions cannot be nested")
            object.__setattr__(base, name, self._wrap(modality, getattr(base, name)))
            hooks.on_close(functools.partial(vars(base).pop, name, None))
        if not self.reduces:
            return
        needs = self.method.needs
        if needs.vision_cls_attention or needs.vision_keys or self._reader is not None:
            previous = self.adapter.attn_implementation("vision")
            self.adapter.set_attn_implementation("vision", probe_implementation(previous))
            hooks.on_close(lambda: self.adapter.set_attn_implementation("vision", previous))
            if needs.vision_cls_attention or needs.vision_keys:
                hooks.on_close(attach_probe(self.adapter.feature_attention(), self._probe))
            if self._reader is not None:
                hooks.on_close(attach_probe(self._reader, self._probe_reader))
        if needs.vision_cls_feature and self.adapter.has_cls_token():
            hooks.forward_hook(self.adapter.feature_layer(), self._capture_cls)

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
            self.calls = [*self.calls[-7:], call]  # a few recent calls: generate encodes images, then video
            return output

        return encode

    # -- captures in the vision tower, per tower call (T tiles or frames) -------------------------------------------
    def _store(self, name: str, value: torch.Tensor) -> None:
        if self._current is not None:
            self._current.captures.setdefault(name, []).append(value)

    def _probe(self, module, query, key, mask, scaling) -> None:
        # query, key: (T, H, L, d); CLS at 0 unless the tower has none
        if self._received:
            if self.method.needs.vision_cls_attention:
                self._store("cls_attention", received_attention(query, key, scaling))  # (T, H, P)
            if self.method.needs.vision_keys:
                self._store("keys", key.mean(dim=1))  # (T, P, d)
            return
        if self.method.needs.vision_cls_attention:
            self._store("cls_attention", cls_attention(query, key, scaling)[..., 1:])  # (T, H, P)
        if self.method.needs.vision_keys:
            self._store("keys", key.mean(dim=1)[:, 1:])  # (T, P, d)

    def _probe_reader(self, module, query, key, mask, scaling) -> None:
        if self._received:
            self._store("reader_cls_attention", single_head_received_attention(query, key))  # (T, P)
            self._store("reader_keys", concat_heads(key))  # (T, P, C)
        else:
            self._store("reader_cls_attention", single_head_cls_attention(query, key)[:, 1:])
            self._store("reader_keys", concat_heads(key)[:, 1:])

    def _capture_cls(self, module, args, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output  # (T, L, Dv)
        self._store("cls_feature", hidden[:, 0])

    # -- the prefill call ------------------------------------------------------------------------------------------
    def prefill(
        self, kwargs: dict[str, Any], mask2d: torch.Tensor, positions: torch.Tensor, positions_mode: str, pad_id: int
    ) -> TiledPrefill:
        """Encode (if the caller passed raw inputs), lay out every run, reduce per unit, rebuild the prompt."""
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        kwargs = self._encode(kwargs)
        encoder_outputs = dict(kwargs.get("mm_encoder_outputs") or {})
        token_ids = self.adapter.visual_token_ids()
        input_ids = kwargs["input_ids"]
        batch = input_ids.shape[0]
        runs: dict[str, tuple[list[TileLayout], list[ReducedRun] | None]] = {}
        for modality, output in encoder_outputs.items():
            if output is None or modality not in token_ids:
                continue
            call = self._match(modality, output)
            layouts = self.adapter.tile_layouts(modality, call.arguments)
            features = self._features(output)
            counts = [f.shape[0] for f in features]
            if counts != [layout.n_tokens for layout in layouts]:
                raise RuntimeError(
                    f"{self.adapter.name}: the {modality} layout gives {[lay.n_tokens for lay in layouts]} tokens "
                    f"per {modality} but the encoder returned {counts}"
                )
            reduced = self._reduce(features, layouts, call) if self.reduces else None
            runs[modality] = (layouts, reduced)
        self.calls = []

        rebuilt = any(reduced is not None for _, reduced in runs.values())
        shift = torch.zeros(batch, dtype=torch.long, device=input_ids.device) if rebuilt else None
        keep, groups = [], []
        for modality, (layouts, reduced) in runs.items():
            if reduced is None:
                continue
            prompt = rebuild_prompt(
                input_ids,
                mask2d,
                positions,
                token_ids[modality],
                [layout.n_tokens for layout in layouts],
                [r.features.shape[0] for r in reduced],
                [r.sources for r in reduced],
                positions_mode,
                pad_id,
            )
            input_ids, mask2d, positions = prompt.input_ids, prompt.attention_mask, prompt.position_ids
            shift = shift + prompt.shift
            features = [r.features for r in reduced]
            if modality == "video":  # OneVision reads videos as one (V, n, D) tensor: one row holds them all
                pooled: Any = torch.cat(features)[None]
            else:
                pooled = features
            encoder_outputs[modality] = BaseModelOutputWithPooling(pooler_output=pooled)
            keep += [r.sources for r in reduced]
            groups += [r.groups for r in reduced]
        if rebuilt:
            kwargs["input_ids"] = input_ids
            kwargs["attention_mask"] = mask2d  # always explicit: avoids packed-sequence detection
            kwargs["position_ids"] = positions
            kwargs["mm_encoder_outputs"] = encoder_outputs

        index, images, visual_in, visual_out, units = self._unit_index(input_ids, runs, token_ids)
        return TiledPrefill(
            kwargs=kwargs,
            visual_index=index,
            attention_mask=mask2d,
            position_ids=positions,
            images=images,
            visual_in=visual_in,
            visual_out=visual_out,
            reduced=rebuilt,
            shift=shift,
            keep=keep,
            groups=groups,
            units=units,
        )

    def _encode(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        encoder_outputs = dict(kwargs.get("mm_encoder_outputs") or {})
        encoders = {
            "image": (self.adapter.image_input_keys, self.adapter.encode_images),
            "video": (self.adapter.video_input_keys, self.adapter.encode_videos),
        }
        encoded = False
        for modality in self.adapter.encoder_functions():
            keys, encode = encoders[modality]
            if encoder_outputs.get(modality) is None and kwargs.get(keys[0]) is not None:
                encoder_outputs[modality] = encode(kwargs)  # the raw input is the first key
                encoded = True
        if encoded:
            for keys, _ in encoders.values():
                for key in keys:
                    kwargs.pop(key, None)
            kwargs["mm_encoder_outputs"] = encoder_outputs
        return kwargs

    def _match(self, modality: str, output: Any) -> EncoderCall:
        for call in reversed(self.calls):
            if call.modality == modality and call.output is output:
                return call
        raise NotSupportedError(
            f"the {modality} features passed to {self.adapter.name} were computed outside this mmaccel session, so "
            f"their tile layout is unknown; pass the raw inputs (pixel values and sizes) inside the session"
        )

    @staticmethod
    def _features(output: Any) -> list[torch.Tensor]:
        pooled = output.pooler_output
        return list(pooled.unbind(0)) if isinstance(pooled, torch.Tensor) else list(pooled)

    # -- reduction per unit ----------------------------------------------------------------------------------------
    def _reduce(self, features: list[torch.Tensor], layouts: list[TileLayout], call: EncoderCall):
        units: list[_Unit] = []
        offset = 0
        for image, layout in enumerate(layouts):
            for unit, grid in layout.grids.items():
                positions = layout.positions(unit).to(features[image].device)
                patches = layout.patches[layout.unit == unit].to(features[image].device)
                units.append(_Unit(image, unit, positions, patches, offset + unit, grid))
            offset += layout.tower_units
        if all(self.method.keeps_all(u.positions.numel()) for u in units):
            return None
        captures = {name: call.capture(name) for name in (*_PATCH_AXIS, "cls_feature")}
        shapes: dict[tuple[int, tuple[int, int]], list[_Unit]] = {}
        for u in units:
            shapes.setdefault((u.positions.numel(), u.grid), []).append(u)
        results: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for (n_tokens, grid), members in shapes.items():
            stacked = torch.stack([features[u.image][u.positions] for u in members])  # (G, n, D)
            if self.method.keeps_all(n_tokens):
                identity = torch.arange(n_tokens, device=stacked.device)
                for g, u in enumerate(members):
                    results[(u.image, u.unit)] = (stacked[g], identity, identity)
                continue
            tokens = VisualTokens(features=stacked, grid=grid, **self._read_captures(captures, members))
            reduction = self.method.reduce_visual(tokens)
            counts = reduction.counts or [reduction.features.shape[1]] * len(members)
            for g, u in enumerate(members):
                results[(u.image, u.unit)] = (
                    reduction.features[g, : counts[g]],
                    reduction.source[g, : counts[g]],
                    reduction.groups[g],
                )
        return [self._assemble(features[i], layout, units, results, i) for i, layout in enumerate(layouts)]

    def _read_captures(self, captures: dict[str, torch.Tensor | None], members: list[_Unit]) -> dict[str, Any]:
        read: dict[str, Any] = {}
        for name, axis in _PATCH_AXIS.items():
            capture = captures[name]
            if capture is None:
                continue
            read[name] = torch.stack([_at_patches(capture[u.tower_index], u.patches, axis) for u in members])
        if captures["cls_feature"] is not None:
            cls = captures["cls_feature"][[u.tower_index for u in members]]  # (G, Dv)
            read["cls_feature"] = self.adapter.project(cls)  # (G, D): the model's projector, as for patches
        return read

    @staticmethod
    def _assemble(features, layout: TileLayout, units: list[_Unit], results, image: int) -> ReducedRun:
        """Lay one run out again: every unit's output tokens at their source patch's token, in raster order (a
        token of no patch first in its unit), structural tokens where they were."""
        device = features.device
        parts, sources, keys, labels, blocks = [], [], [], [], []
        start = 0
        for u in (u for u in units if u.image == image):
            out, source, _ = results[(u.image, u.unit)]
            anchor = u.positions[0]
            at = torch.where(source >= 0, u.positions[source.clamp(min=0)], anchor)  # (n_u',)
            parts.append(out)
            sources.append(at)
            keys.append(torch.where(source >= 0, 2 * at + 1, 2 * anchor))
            labels.append(torch.full_like(at, u.unit))
            blocks.append((u, start))
            start += out.shape[0]
        structural = torch.nonzero(layout.structural).flatten().to(device)
        parts.append(features[structural])
        sources.append(structural)
        keys.append(2 * structural + 1)
        labels.append(torch.full_like(structural, -1))
        order = torch.sort(torch.cat(keys), stable=True).indices
        final = torch.empty_like(order)
        final[order] = torch.arange(order.numel(), device=device)  # entry -> its place in the new run
        groups = torch.full((layout.n_tokens,), -1, dtype=torch.long, device=device)
        for u, first in blocks:
            _, _, unit_groups = results[(u.image, u.unit)]
            went = unit_groups >= 0
            groups[u.positions[went]] = final[first + unit_groups[went]]
        groups[structural] = final[start + torch.arange(structural.numel(), device=device)]
        n_out = order.numel()
        return ReducedRun(
            features=torch.cat(parts)[order],
            sources=torch.cat(sources)[order],
            groups=groups,
            labels=torch.cat(labels)[order],
            visual_in=layout.n_visual,
            visual_out=n_out - structural.numel(),
        )

    # -- visual index and counts -----------------------------------------------------------------------------------
    @staticmethod
    def _unit_index(input_ids: torch.Tensor, runs, token_ids: dict[str, int]):
        """(B, N) unit number within the row (-1 for text, padding and structural tokens), images per row,
        visual (non-structural) tokens per row before and after reduction, and per row the patch tokens of each
        unit (tile or frame)."""
        batch = input_ids.shape[0]
        keys = torch.full_like(input_ids, -1)
        images = [0] * batch
        visual_in, visual_out = [0] * batch, [0] * batch
        units: list[list[int]] = [[] for _ in range(batch)]
        modality_offset = 0
        for modality, (layouts, reduced) in runs.items():
            labels = [r.labels for r in reduced] if reduced is not None else [lay.unit for lay in layouts]
            max_units = max((lay.tower_units for lay in layouts), default=1) + 1
            run = 0
            for row in range(batch):
                placeholders = torch.nonzero(input_ids[row] == token_ids[modality]).flatten()
                offset = 0
                while offset < placeholders.numel():
                    label = labels[run].to(input_ids.device)
                    span = placeholders[offset : offset + label.numel()]
                    key = modality_offset + run * max_units + label
                    keys[row, span] = torch.where(label >= 0, key, -1)
                    images[row] += 1
                    visual_in[row] += layouts[run].n_visual
                    units[row] += [int((layouts[run].unit == unit).sum()) for unit in layouts[run].grids]
                    visual_out[row] += reduced[run].visual_out if reduced is not None else layouts[run].n_visual
                    offset += label.numel()
                    run += 1
            modality_offset += len(layouts) * max_units
        index = torch.full_like(input_ids, -1)
        for row in range(batch):
            real = keys[row] >= 0
            if real.any():
                index[row, real] = torch.unique(keys[row, real], return_inverse=True)[1]
        return index, images, visual_in, visual_out, units


def _at_patches(capture: torch.Tensor, patches: torch.Tensor, axis: int) -> torch.Tensor:
    """Read a per-unit capture at each token's patches, averaged: capture has the P patches on ``axis``;
    patches (n, k) with -1 padding -> the capture with n tokens on ``axis``."""
    moved = capture.movedim(axis, 0)  # (P, ...)
    valid = (patches >= 0).to(moved.dtype)  # (n, k)
    picked = moved[patches.clamp(min=0)]  # (n, k, ...)
    weights = (valid / valid.sum(dim=1, keepdim=True)).view(*valid.shape, *([1] * (picked.dim() - 2)))
    return (picked * weights).sum(dim=1).movedim(0, axis)
