"""Pre-LLM reduction: capture what the method needs in the vision tower, reduce at the projector input.

Flow, identical for ``model(...)`` and ``model.generate(...)``:

1. The model's own image encoder runs (``generate`` pre-encodes images; a plain forward is pre-encoded by the
   engine through the adapter). The attention probe on the feature layer records the CLS row and keys; a
   forward hook records the feature layer's hidden states (for the CLS feature).
2. A forward pre-hook on the reduction module (LLaVA-1.5: the projector) hands the (I, P, D) visual tokens to
   ``method.reduce_visual`` and replaces them with the reduced (I, P', D) tokens, so only kept or merged tokens
   are projected, and records a :class:`PendingReduction`. A method may keep a different number of tokens per
   image (``VisualReduction.counts``): the projector then sees them padded to the longest, and the padding is
   cut off before the language model.
3. At the language-model call, :meth:`VisualStage.rebuild` shrinks each image's placeholder run to its kept
   count and re-pads the rows (see ``sequence.rebuild_prompt``); the model then runs unmodified.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from mmaccel.engine.attention import attach_probe, probe_implementation
from mmaccel.engine.hooks import HookSet
from mmaccel.errors import ConfigError, NotSupportedError
from mmaccel.methods.base import VisualTokens
from mmaccel.ops.attention import cls_attention
from mmaccel.ops.heads import concat_heads, single_head_cls_attention

if TYPE_CHECKING:
    from mmaccel.methods.base import TokenMethod
    from mmaccel.models.base import ModelAdapter

log = logging.getLogger(__name__)


@dataclass
class PendingReduction:
    """What the last reduction did, until the language-model call that consumes its features."""

    counts_in: list[int]  # visual tokens per image before
    counts_out: list[int]  # per image after
    sources: list[torch.Tensor]  # per image (counts_out,) source token index, -1 for a non-patch token
    groups: list[torch.Tensor]  # per image (counts_in,) output token each input went to, -1 dropped
    data_ptr: int  # storage of the projected features, to recognise them
    identity: bool
    padded_length: int | None = None  # when images keep different counts: the padded length of the features
    sizes: list[torch.Tensor] | None = None  # per image (counts_out,) original tokens in each output token
    tower_tokens: list[int] | None = None  # tokens per image entering each vision block, then leaving the tower
    features: list[torch.Tensor] | None = None  # per item (counts_out, D): the reduced features, when already cut
    frame_ids: list[torch.Tensor] | None = None  # per item (counts_out,) frame of each kept token (video)


class VisualStage:
    stage_name = "vision_output"

    def __init__(self, method: TokenMethod, adapter: ModelAdapter) -> None:
        self.method = method
        self.adapter = adapter
        self.pending: PendingReduction | None = None
        self._capture: dict[str, torch.Tensor] = {}
        self._warned_external = False
        self._reader = reader_attention(adapter) if method.needs.vision_reader_qk else None

    # -- installation ----------------------------------------------------------------------------------------
    def install(self, hooks: HookSet) -> None:
        needs = self.method.needs
        if needs.vision_cls_attention or needs.vision_keys or self._reader is not None:
            previous = self.adapter.attn_implementation("vision")
            self.adapter.set_attn_implementation("vision", probe_implementation(previous))
            hooks.on_close(lambda: self.adapter.set_attn_implementation("vision", previous))
            if needs.vision_cls_attention or needs.vision_keys:
                hooks.on_close(attach_probe(self.adapter.feature_attention(), self._probe))
            if self._reader is not None:
                hooks.on_close(attach_probe(self._reader, self._probe_reader))
        if needs.vision_cls_feature:
            hooks.forward_hook(self.adapter.feature_layer(), self._capture_hidden)
        hooks.forward_pre_hook(self.adapter.reduction_module(), self._reduce)
        hooks.forward_hook(self.adapter.reduction_module(), self._remember_output)

    # -- captures inside the vision tower ------------------------------------------------------------------------
    def _probe(self, module, query, key, mask, scaling) -> None:
        # query, key: (I, H, L, d) with the CLS token at 0
        if self.method.needs.vision_cls_attention:
            self._capture["cls_attention"] = cls_attention(query, key, scaling)  # (I, H, L)
        if self.method.needs.vision_keys:
            self._capture["keys"] = key.mean(dim=1)  # (I, L, d)

    def _probe_reader(self, module, query, key, mask, scaling) -> None:
        # query, key: (I, H, L, d) of the block after the feature layer, CLS at 0
        self._capture["reader_cls_attention"] = single_head_cls_attention(query, key)  # (I, L)
        self._capture["reader_keys"] = concat_heads(key)  # (I, L, H * d)

    def _capture_hidden(self, module, args, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output  # (I, L, D)
        self._capture["cls_feature"] = hidden[:, 0]

    # -- the reduction at the projector input ----------------------------------------------------------------------
    def _reduce(self, module, args):
        features = args[0]  # (I, P, D), CLS at 0 when the model keeps it in the features
        capture, self._capture = self._capture, {}
        cls_first = self.adapter.cls_in_features()
        patches = features[:, 1:] if cls_first else features
        n_images, n_in = features.shape[:2]
        n_patches = patches.shape[1]
        if self.method.keeps_all(n_patches):
            self.pending = PendingReduction(
                counts_in=[n_in] * n_images,
                counts_out=[n_in] * n_images,
                sources=[torch.arange(n_in, device=features.device)] * n_images,
                groups=[torch.arange(n_in, device=features.device)] * n_images,
                data_ptr=-1,
                identity=True,
            )
            return None
        tokens = VisualTokens(
            features=patches,
            grid=self.adapter.patch_grid(),
            cls_attention=capture["cls_attention"][..., 1:] if "cls_attention" in capture else None,
            keys=capture["keys"][:, 1:] if "keys" in capture else None,
            cls_feature=capture.get("cls_feature"),
            reader_cls_attention=capture["reader_cls_attention"][:, 1:] if "reader_cls_attention" in capture else None,
            reader_keys=capture["reader_keys"][:, 1:] if "reader_keys" in capture else None,
        )
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
        n_out = out.shape[1]
        self.pending = PendingReduction(
            counts_in=[n_in] * n_images,
            counts_out=counts,
            sources=[row[:count] for row, count in zip(source, counts)],
            groups=list(groups),
            data_ptr=0,
            identity=False,
            padded_length=n_out if any(count != n_out for count in counts) else None,
        )
        return (out, *args[1:])

    def _remember_output(self, module, args, output) -> None:
        if self.pending is not None and not self.pending.identity:
            self.pending.data_ptr = output.data_ptr()

    # -- at the language-model call --------------------------------------------------------------------------------
    def encode_if_needed(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Replace raw pixels (images, then videos) by the model's own features (encoded with the hooks active)."""
        encoder_outputs = dict(kwargs.get("mm_encoder_outputs") or {})
        encoders = (
            ("image", self.adapter.image_input_keys, self.adapter.encode_images),
            ("video", self.adapter.video_input_keys, self.adapter.encode_videos),
        )
        for modality, keys, encode in encoders:
            if keys and encoder_outputs.get(modality) is None and kwargs.get(keys[0]) is not None:
                encoder_outputs[modality] = encode(kwargs)
                for key in keys:
                    kwargs.pop(key, None)
                kwargs["mm_encoder_outputs"] = encoder_outputs
        return kwargs

    def take_pending_for(self, modality: str, features: list[torch.Tensor]) -> PendingReduction | None:
        """The reduction of ``modality``'s features ``features`` (one (P_i, D) tensor per item), if any."""
        return self.take_pending(features) if modality == "image" else None

    def take_pending(self, features: list[torch.Tensor]) -> PendingReduction | None:
        """The reduction that produced ``features``, or None if they were computed outside this session."""
        pending, self.pending = self.pending, None
        if pending is None:
            return None
        if pending.identity:
            matches = [f.shape[0] for f in features] == pending.counts_out
        else:
            matches = (
                len(features) == len(pending.counts_out)
                and features[0].data_ptr() == pending.data_ptr
                and all(f.shape[0] == (pending.padded_length or n) for f, n in zip(features, pending.counts_out))
            )
        if not matches:
            if not self._warned_external:
                log.warning("image features passed in were computed outside this mmaccel session; not reduced")
                self._warned_external = True
            return None
        return pending

    @staticmethod
    def check_counts(features: list[torch.Tensor], n_placeholders: int) -> None:
        n_features = sum(f.shape[0] for f in features)
        if n_features != n_placeholders:
            raise ConfigError(
                f"the prompts hold {n_placeholders} image placeholder tokens but the images give {n_features} "
                "features; build prompts with the model's processor"
            )


def reader_attention(adapter: ModelAdapter) -> nn.Module:
    """The attention module of the vision block right after the feature layer: the block that reads the features.

    Found as the next entry of the module list that holds the adapter's feature layer, at the same place inside
    the block as the feature layer's own attention.
    """
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
