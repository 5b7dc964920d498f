"""Vision-tower captures: what a method reads inside the tower (CLS or received attention, keys, the CLS feature).

Captures are stored per *tower unit* (one tile, frame or image as the tower ran it), in tower order, under a
name with a fixed patch axis (:data:`PATCH_AXIS`); the visual stage reads them for each language-model token
through the adapter's :class:`~mmaccel.models.layout.TileLayout`. Two tower kinds:

* **Batched towers** (CLIP, SigLIP: LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision) run ``T`` units as a batch
  ``(T, L, D)``; the probe on the feature layer's attention sees ``(T, H, L, d)`` and stores ``T`` entries.
  With a CLS token the CLS row's attention is taken and CLS itself is dropped; without one (and when the adapter
  allows it) the attention each patch *receives* stands in for it.
* **Packed towers** (Qwen2-VL, Qwen2.5-VL) run every item as one packed sequence of patches, attention split by
  frame (or window); :class:`PackedTowerCaptures` collects the per-frame chunks of one tower call and turns
  them into per-merged-token tensors (patches of a merge group summed for attention, averaged for keys, put back
  in merged-token order), one entry per frame group of every item.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from mmaccel.engine.attention import Probe, attach_probe, probe_implementation
from mmaccel.engine.hooks import HookSet
from mmaccel.ops.attention import cls_attention, received_attention
from mmaccel.ops.heads import concat_heads, single_head_cls_attention, single_head_received_attention

if TYPE_CHECKING:
    from mmaccel.methods.base import Needs
    from mmaccel.models.base import ModelAdapter

# capture name -> dimension of the patch axis in its per-unit tensor
PATCH_AXIS = {"cls_attention": 1, "keys": 0, "reader_cls_attention": 0, "reader_keys": 0}

Store = Callable[[str, list[torch.Tensor]], None]  # (capture name, one tensor per tower unit)


def install_probes(hooks: HookSet, adapter: ModelAdapter, probes: list[tuple[nn.Module, Probe]]) -> None:
    """Attach attention-function probes to vision attention modules for the session (reversibly).

    The tower's attention implementation becomes ``mmaccel_<impl>``, which calls the model's own kernel after the
    probe, so every output is unchanged; both are undone when ``hooks`` close.
    """
    if not probes:
        return
    previous = adapter.attn_implementation("vision")
    adapter.set_attn_implementation("vision", probe_implementation(previous))
    hooks.on_close(lambda: adapter.set_attn_implementation("vision", previous))
    for module, probe in probes:
        hooks.on_close(attach_probe(module, probe))


def reader_attention(adapter: ModelAdapter) -> nn.Module:
    """The attention module of the vision block right after the feature layer: the block that reads the features.

    Found as the next entry of the module list that holds the adapter's feature layer, at the same place inside
    the block as the feature layer's own attention.
    """
    from mmaccel.errors import NotSupportedError

    feature, attention = adapter.feature_layer(), adapter.feature_attention()
    relative = next(name for name, module in feature.named_modules() if module is attention)
    for blocks in adapter.model.modules():
        if isinstance(blocks, nn.ModuleList) and any(block is feature for block in blocks):
            index = next(i for i, block in enumerate(blocks) if block is feature)
            if index + 1 < len(blocks):
                return blocks[index + 1].get_submodule(relative)
    raise NotSupportedError(
        "this method reads the attention of the vision block after the feature layer (LLaVA-1.5: block 23 for "
        "features of block 22), and the feature layer is the tower's last block; use vision_feature_layer=-2"
    )


class BatchedTowerCaptures:
    """Captures of a batched tower (see the module docstring), handed to ``store`` per tower call."""

    def __init__(self, adapter: ModelAdapter, needs: Needs, store: Store) -> None:
        self.adapter = adapter
        self.needs = needs
        self.store = store
        self.received = not adapter.has_cls_token() and adapter.scores_without_cls()
        self.reader = None
        if needs.vision_reader_qk:
            self.reader = adapter.feature_attention() if self.received else reader_attention(adapter)

    def install(self, hooks: HookSet) -> None:
        probes: list[tuple[nn.Module, Probe]] = []
        if self.needs.vision_cls_attention or self.needs.vision_keys:
            probes.append((self.adapter.feature_attention(), self._probe))
        if self.reader is not None:
            if probes and probes[0][0] is self.reader:  # one module, one probe: read both there
                probes[0] = (self.reader, self._probe_both)
            else:
                probes.append((self.reader, self._probe_reader))
        install_probes(hooks, self.adapter, probes)
        if self.needs.vision_cls_feature and self.adapter.has_cls_token():
            hooks.forward_hook(self.adapter.feature_layer(), self._capture_cls)

    def _probe(self, module, query, key, mask, scaling) -> None:
        # query, key: (T, H, L, d); CLS at 0 unless the tower has none
        first = 0 if self.received else 1
        if self.needs.vision_cls_attention:
            if self.received:
                scores = received_attention(query, key, scaling)  # (T, H, P)
            else:
                scores = cls_attention(query, key, scaling)[..., 1:]  # (T, H, P)
            self.store("cls_attention", list(scores))
        if self.needs.vision_keys:
            self.store("keys", list(key.mean(dim=1)[:, first:]))  # T x (P, d)

    def _probe_reader(self, module, query, key, mask, scaling) -> None:
        if self.received:
            scores = single_head_received_attention(query, key)  # (T, P)
            keys = concat_heads(key)  # (T, P, C)
        else:
            scores = single_head_cls_attention(query, key)[:, 1:]
            keys = concat_heads(key)[:, 1:]
        self.store("reader_cls_attention", list(scores))
        self.store("reader_keys", list(keys))

    def _probe_both(self, module, query, key, mask, scaling) -> None:
        self._probe(module, query, key, mask, scaling)
        self._probe_reader(module, query, key, mask, scaling)

    def _capture_cls(self, module, args, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output  # (T, L, Dv)
        self.store("cls_feature", list(hidden[:, 0]))


@dataclass
class _PackedCall:
    """One call of a packed tower: its items' grids and the per-frame chunks its probe saw."""

    grids: torch.Tensor  # (items, 3) patch grids (t, h, w)
    chunks: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # per patch, in the blocks' order


class PackedTowerCaptures:
    """Captures of a packed tower (see the module docstring), handed to ``store`` per frame group of every item.

    Per unit: ``cls_attention`` (H, P) the attention each merged token receives in the score block (mean over
    queries, summed over its patches), ``reader_cls_attention`` (P,) its mean over heads, ``keys`` (P, d) the
    head-mean keys and ``reader_keys`` (P, H d) the concatenated ones (averaged over the merge group).
    """

    def __init__(self, adapter: ModelAdapter, needs: Needs, store: Store) -> None:
        self.adapter = adapter
        self.store = store
        self.scores = needs.vision_cls_attention or needs.vision_reader_qk
        self.keys = needs.vision_keys
        self.concat_keys = needs.vision_reader_qk
        self._call: _PackedCall | None = None

    def install(self, hooks: HookSet) -> None:
        if not (self.scores or self.keys or self.concat_keys):
            return
        install_probes(hooks, self.adapter, [(self.adapter.feature_attention(), self._probe)])
        tower = self.adapter.tower()
        hooks.forward_pre_hook(tower, self._start, with_kwargs=True)
        hooks.forward_hook(tower, self._finish)

    def _start(self, module, args, kwargs) -> None:
        self._call = _PackedCall(grids=self.adapter.tower_grids(args, kwargs))

    def _probe(self, module, query, key, mask, scaling) -> None:
        # query, key: (1, H, n, d), one attention span (a frame or window) of the packed patches, in block order
        call = self._call
        if call is None:
            return
        if self.scores:
            call.chunks.setdefault("attention", []).append(received_attention(query, key, scaling)[0])  # (H, n)
        if self.keys:
            call.chunks.setdefault("keys", []).append(key[0].mean(dim=0))  # (n, d)
        if self.concat_keys:
            call.chunks.setdefault("reader_keys", []).append(concat_heads(key)[0])  # (n, H * d)

    def _finish(self, module, args, output) -> None:
        call, self._call = self._call, None
        if call is None:
            return
        merge = self.adapter.merge_size()
        unit = merge**2
        order = self.adapter.tower_group_order(call.grids)  # (G,) merged-token index of each tower group
        # tokens of each frame group: t groups of (h / m) * (w / m) per item, in merged-token order
        per_frame = (call.grids[:, 1:].prod(-1) // unit).repeat_interleave(call.grids[:, 0]).tolist()
        for name, chunks in call.chunks.items():
            per_patch = torch.cat(chunks, dim=-1 if name == "attention" else 0)
            if name == "attention":  # (H, N) -> (H, G): attention received by each merge group
                grouped = per_patch.view(per_patch.shape[0], -1, unit).sum(dim=-1)
                merged = torch.empty_like(grouped)
                merged[:, order] = grouped
                frames = list(merged.split(per_frame, dim=1))  # units x (H, P)
                self.store("cls_attention", frames)
                self.store("reader_cls_attention", [f.mean(dim=0) for f in frames])  # units x (P,)
            else:  # (N, C) -> (G, C): the mean key of each merge group
                grouped = per_patch.view(-1, unit, per_patch.shape[-1]).mean(dim=1)
                merged = torch.empty_like(grouped)
                merged[order] = grouped
                self.store(name, list(merged.split(per_frame, dim=0)))  # units x (P, C)


def tower_captures(adapter: ModelAdapter, needs: Needs, store: Store) -> BatchedTowerCaptures | PackedTowerCaptures:
    """The capture collector of ``adapter``'s tower kind."""
    if adapter.packed_tower():
        return PackedTowerCaptures(adapter, needs, store)
    return BatchedTowerCaptures(adapter, needs, store)
