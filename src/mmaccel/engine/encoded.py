"""Pre-LLM reduction of the encoder's per-item output (models whose visual tokens come out of a packed tower).

Qwen2-VL-style towers run all images and videos as one packed sequence and hand the language model a list of
(P_i, D) tensors, one per item, each P_i depending on the item's grid. There is no per-image (I, P, D) tensor
before a projector to reduce, so the reduction acts on the encoder's output, at the language-model call:

1. A forward pre-hook on the tower records each call's patch grids (t, h, w); when the method needs vision
   scores, the attention-function probe on the adapter's score block collects, chunk by chunk (the tower calls
   its kernel once per frame), the attention each patch receives (mean over queries, per head) and its keys.
2. A forward hook on the tower turns the record into per-merged-token tensors: the patches of each merge group
   (4 for a 2x2 merger) are summed (attention) or averaged (keys), and the groups are put back in merged-token
   order (:meth:`ModelAdapter.tower_group_order`, the window permutation of Qwen2.5-VL).
3. At the language-model call, :meth:`EncodedVisualStage.take_pending_for` matches the features of a modality
   with a record (by the per-item token counts) and calls ``method.reduce_visual`` once per item (I = 1, its own
   grid), so items of different sizes each get their budget. The prompt is then rebuilt as for any pre-LLM
   reduction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from mmaccel.engine.attention import attach_probe, probe_implementation
from mmaccel.engine.hooks import HookSet
from mmaccel.engine.visual import PendingReduction, VisualStage
from mmaccel.methods.base import VisualTokens
from mmaccel.ops.attention import received_attention
from mmaccel.ops.heads import concat_heads

if TYPE_CHECKING:
    from mmaccel.methods.base import TokenMethod
    from mmaccel.models.base import ModelAdapter

log = logging.getLogger(__name__)


@dataclass
class _TowerRecord:
    """One call of the tower: its items' grids and, once finished, per-item captures in merged-token order."""

    grids: torch.Tensor  # (items, 3) patch grids (t, h, w)
    chunks: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # per patch, in the blocks' order
    items: list[dict[str, torch.Tensor]] = field(default_factory=list)  # per item: name -> per-token tensor


class EncodedVisualStage(VisualStage):
    """Realises a ``VISUAL_OUTPUT`` method on the per-item encoder output (see the module docstring)."""

    def __init__(self, method: TokenMethod, adapter: ModelAdapter) -> None:
        self.method = method
        self.adapter = adapter
        self.pending = None
        self._warned_external = False
        needs = method.needs
        self._scores = needs.vision_cls_attention or needs.vision_reader_qk or needs.vision_cls_feature
        self._keys = needs.vision_keys
        self._concat_keys = needs.vision_reader_qk
        self._record: _TowerRecord | None = None
        self._records: list[_TowerRecord] = []

    # -- installation ----------------------------------------------------------------------------------------
    def install(self, hooks: HookSet) -> None:
        if self._scores or self._keys or self._concat_keys:
            previous = self.adapter.attn_implementation("vision")
            self.adapter.set_attn_implementation("vision", probe_implementation(previous))
            hooks.on_close(lambda: self.adapter.set_attn_implementation("vision", previous))
            hooks.on_close(attach_probe(self.adapter.feature_attention(), self._probe))
        tower = self.adapter.tower()
        hooks.forward_pre_hook(tower, self._start_record, with_kwargs=True)
        hooks.forward_hook(tower, self._finish_record)

    # -- inside the tower ------------------------------------------------------------------------------------
    def _start_record(self, module, args, kwargs) -> None:
        self._record = _TowerRecord(grids=self.adapter.tower_grids(args, kwargs))

    def _probe(self, module, query, key, mask, scaling) -> None:
        # query, key: (1, H, n, d), one attention span (a frame) of the packed patches, in the blocks' order
        record = self._record
        if record is None:
            return
        if self._scores:
            record.chunks.setdefault("attention", []).append(received_attention(query, key, scaling)[0])  # (H, n)
        if self._keys:
            record.chunks.setdefault("keys", []).append(key[0].mean(dim=0))  # (n, d)
        if self._concat_keys:
            record.chunks.setdefault("concat_keys", []).append(concat_heads(key)[0])  # (n, H * d)

    def _finish_record(self, module, args, output) -> None:
        record, self._record = self._record, None
        if record is None:
            return
        unit = self.adapter.merge_size() ** 2
        order = self.adapter.tower_group_order(record.grids)  # (G,) merged-token index of each tower group
        counts = (record.grids.prod(-1) // unit).tolist()
        merged: dict[str, torch.Tensor] = {}
        for name, chunks in record.chunks.items():
            per_patch = torch.cat(chunks, dim=-1 if name == "attention" else 0)
            if name == "attention":  # (H, N) -> (H, G): attention received by each merge group
                grouped = per_patch.view(per_patch.shape[0], -1, unit).sum(dim=-1)
                out = torch.empty_like(grouped)
                out[:, order] = grouped
            else:  # (N, C) -> (G, C): the mean key of each merge group
                grouped = per_patch.view(-1, unit, per_patch.shape[-1]).mean(dim=1)
                out = torch.empty_like(grouped)
                out[order] = grouped
            merged[name] = out
        start = 0
        for count in counts:
            item = {}
            for name, tensor in merged.items():
                item[name] = tensor[:, start : start + count] if name == "attention" else tensor[start : start + count]
            record.items.append(item)
            start += count
        record.chunks = {}
        self._records.append(record)

    # -- at the language-model call ----------------------------------------------------------------------------
    def take_pending(self, features: list[torch.Tensor]) -> PendingReduction | None:
        return self.take_pending_for("image", features)

    def take_pending_for(self, modality: str, features: list[torch.Tensor]) -> PendingReduction | None:
        counts = [f.shape[0] for f in features]
        unit = self.adapter.merge_size() ** 2
        record = next((r for r in self._records if (r.grids.prod(-1) // unit).tolist() == counts and r.items), None)
        if record is None:
            if not self._warned_external:
                log.warning("visual features passed in were computed outside this mmaccel session; not reduced")
                self._warned_external = True
            return None
        self._records = self._records[self._records.index(record) + 1 :]
        if all(self.method.keeps_all(n) for n in counts):
            return PendingReduction(
                counts_in=counts,
                counts_out=counts,
                sources=[torch.arange(n, device=f.device) for f, n in zip(features, counts)],
                groups=[torch.arange(n, device=f.device) for f, n in zip(features, counts)],
                data_ptr=-1,
                identity=True,
            )
        out_features, sources, groups, frames = [], [], [], []
        merge = self.adapter.merge_size()
        for feature, grid, captured in zip(features, record.grids.tolist(), record.items):
            t, h, w = grid[0], grid[1] // merge, grid[2] // merge
            frame_of = torch.arange(t, device=feature.device).repeat_interleave(h * w)  # (P,)
            attention = captured.get("attention")  # (H, P)
            tokens = VisualTokens(
                features=feature[None],
                grid=(t * h, w),
                cls_attention=attention[None] if attention is not None else None,
                keys=captured["keys"][None] if "keys" in captured else None,
                reader_cls_attention=attention.mean(dim=0)[None] if attention is not None else None,
                reader_keys=captured["concat_keys"][None] if "concat_keys" in captured else None,
                frame_ids=frame_of[None],
            )
            reduction = self.method.reduce_visual(tokens)
            n_out = reduction.counts[0] if reduction.counts is not None else reduction.features.shape[1]
            source = reduction.source[0, :n_out]
            if reduction.features.shape[0] != 1 or reduction.groups.shape != (1, feature.shape[0]):
                raise RuntimeError(f"{self.method.name}.reduce_visual returned inconsistent shapes")
            out_features.append(reduction.features[0, :n_out])
            sources.append(source)
            groups.append(reduction.groups[0])
            frames.append(frame_of[source.clamp(min=0)])
        return PendingReduction(
            counts_in=counts,
            counts_out=[f.shape[0] for f in out_features],
            sources=sources,
            groups=groups,
            data_ptr=0,
            identity=False,
            features=out_features,
            frame_ids=frames,
        )
