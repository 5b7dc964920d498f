"""Reduction unit by unit: the (N, P, D) batches a ``VISUAL_OUTPUT`` method sees, and the runs rebuilt from them.

Every visual item (image, video) reaches the language model as a run of tokens that its
:class:`~mmaccel.models.layout.TileLayout` splits into units (an image, an anyres tile, a video frame or frame
group) and structural tokens (newlines). Units of the same size and grid are reduced together, as one
``(N, P, D)`` batch, so a budget applies per unit. Each run is then laid out again: every unit's output tokens at
their source patch's token in raster order (a token that stands for no patch, such as VisionZip's contextual
tokens, first in its unit), structural tokens where they were, so rows and their newlines stay meaningful.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from mmaccel.engine.captures import PATCH_AXIS
from mmaccel.methods.base import VisualTokens

if TYPE_CHECKING:
    from mmaccel.methods.base import TokenMethod
    from mmaccel.models.base import ModelAdapter
    from mmaccel.models.layout import TileLayout


@dataclass
class ReducedRun:
    """One item's run after reduction (n tokens in, n' out)."""

    features: torch.Tensor | None  # (n', D); None until read from the projector's output (projector-input site)
    sources: torch.Tensor  # (n',) long: run position each output token stands at (-1: a token of no patch)
    groups: torch.Tensor  # (n,) long: output token each input token went into, -1 when dropped
    labels: torch.Tensor  # (n',) long: unit of each output token, -1 for structural tokens
    visual_in: int
    visual_out: int
    sizes: torch.Tensor | None = None  # (n',) merges: original tokens each output token stands for

    @property
    def n_out(self) -> int:
        return self.sources.numel()


@dataclass
class _Unit:
    item: int
    unit: int
    positions: torch.Tensor  # (n_u,) in the run
    patches: torch.Tensor  # (n_u, k) tower patches
    tower_index: int  # index into the encoder call's per-unit captures
    grid: tuple[int, int]
    frame: int


def reduce_units(
    method: TokenMethod,
    adapter: ModelAdapter,
    features: list[torch.Tensor],
    layouts: list[TileLayout],
    captures: dict[str, list[torch.Tensor]],
) -> list[ReducedRun] | None:
    """Reduce every unit of every item (``features[i]`` (n_i, D) laid out by ``layouts[i]``); None when the method
    keeps every unit whole."""
    units: list[_Unit] = []
    offset = 0
    for item, layout in enumerate(layouts):
        device = features[item].device
        for unit, grid in layout.grids.items():
            positions = layout.positions(unit).to(device)
            patches = layout.patches[layout.unit == unit].to(device)
            units.append(_Unit(item, unit, positions, patches, offset + unit, grid, layout.frames.get(unit, 0)))
        offset += layout.tower_units
    if all(method.keeps_all(u.positions.numel()) for u in units):
        return None
    shapes: dict[tuple[int, tuple[int, int]], list[_Unit]] = {}
    for u in units:
        shapes.setdefault((u.positions.numel(), u.grid), []).append(u)
    results: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    for (n_tokens, grid), members in shapes.items():
        stacked = torch.stack([features[u.item][u.positions] for u in members])  # (N, P, D)
        if method.keeps_all(n_tokens):
            identity = torch.arange(n_tokens, device=stacked.device)
            for g, u in enumerate(members):
                results[(u.item, u.unit)] = (stacked[g], identity, identity)
            continue
        frame_ids = torch.tensor([u.frame for u in members], device=stacked.device)[:, None].expand(-1, n_tokens)
        tokens = VisualTokens(
            features=stacked, grid=grid, frame_ids=frame_ids, **_read_captures(adapter, captures, members)
        )
        reduction = method.reduce_visual(tokens)
        counts = reduction.counts or [reduction.features.shape[1]] * len(members)
        if reduction.features.shape[0] != len(members) or reduction.groups.shape != (len(members), n_tokens):
            raise RuntimeError(f"{method.name}.reduce_visual returned inconsistent shapes")
        for g, u in enumerate(members):
            results[(u.item, u.unit)] = (
                reduction.features[g, : counts[g]],
                reduction.source[g, : counts[g]],
                reduction.groups[g],
            )
    return [_assemble(features[i], layout, units, results, i) for i, layout in enumerate(layouts)]


def _read_captures(adapter: ModelAdapter, captures: dict[str, list[torch.Tensor]], members: list[_Unit]):
    """Each capture of the units ``members``, read at each token's patches: (N, ...) per name."""
    read: dict[str, Any] = {}
    for name, axis in PATCH_AXIS.items():
        per_unit = captures.get(name)
        if per_unit:
            read[name] = torch.stack([_at_patches(per_unit[u.tower_index], u.patches, axis) for u in members])
    if captures.get("cls_feature"):
        cls = torch.stack([captures["cls_feature"][u.tower_index] for u in members])  # (N, Dv)
        read["cls_feature"] = adapter.project(cls)  # (N, D): the model's projector, as for the patches
    return read


def _at_patches(capture: torch.Tensor, patches: torch.Tensor, axis: int) -> torch.Tensor:
    """Read a per-unit capture at each token's patches, averaged: capture has the P patches on ``axis``;
    patches (n, k) with -1 padding -> the capture with n tokens on ``axis``."""
    moved = capture.movedim(axis, 0)  # (P, ...)
    valid = (patches >= 0).to(moved.dtype)  # (n, k)
    picked = moved[patches.clamp(min=0)]  # (n, k, ...)
    weights = (valid / valid.sum(dim=1, keepdim=True)).view(*valid.shape, *([1] * (picked.dim() - 2)))
    return (picked * weights).sum(dim=1).movedim(0, axis)


def _assemble(features, layout: TileLayout, units: list[_Unit], results, item: int) -> ReducedRun:
    """Lay one run out again: every unit's output tokens at their source patch's token, in raster order (a token
    of no patch first in its unit), structural tokens where they were."""
    device = features.device
    parts, sources, keys, labels, blocks = [], [], [], [], []
    start = 0
    for u in (u for u in units if u.item == item):
        out, source, _ = results[(u.item, u.unit)]
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
        _, _, unit_groups = results[(u.item, u.unit)]
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


def identity_run(layout: TileLayout, features: torch.Tensor | None, device: torch.device) -> ReducedRun:
    """The run of an item the method kept whole."""
    positions = torch.arange(layout.n_tokens, device=device)
    return ReducedRun(
        features=features,
        sources=positions,
        groups=positions,
        labels=layout.unit.to(device),
        visual_in=layout.n_visual,
        visual_out=layout.n_visual,
    )
