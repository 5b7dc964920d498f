"""The geometry of each model family for FLOPs and KV-cache accounting (:mod:`mmaccel.ops.flops`).

:func:`describe` gives a model's :class:`~mmaccel.ops.flops.ModelShape` (widths, depths, patch embedding,
projector, decoder); :func:`visual_work` reads a batch's processed inputs (``pixel_values``, ``image_sizes``,
``pixel_values_videos``, ``image_grid_thw``, ``video_grid_thw``) and gives each row's
:class:`~mmaccel.ops.flops.VisualWork`: the sequences its images, tiles and frames put through the tower, the
patches embedded and the tokens entering the projector. Family rules (``transformers`` 5.23):

* **LLaVA-1.5**: one tower sequence per image (patches, plus CLS on a CLIP tower); the projector gets the
  patches (and CLS under the ``"full"`` strategy) and pre-LLM methods reduce at its input.
* **LLaVA-NeXT / OneVision images**: every anyres tile (the base tile and the high-resolution grid) is one
  tower sequence and all its features go through the projector; unpadding, ``image_newline`` tokens and
  OneVision's ``anyres_max`` downsizing happen after it, so they change only the language model's tokens.
  OneVision encodes each image of a multi-image sample (``batch_num_images`` > 1) as its base tile.
* **LLaVA-OneVision video**: every frame is a tower sequence and goes through the projector; the 2x2 pooling
  and the closing newline come after.
* **Qwen2-VL / Qwen2.5-VL**: an image or video of grid (t, h, w) embeds t*h*w patches; each temporal patch is
  one attention sequence of h*w patches; Qwen2.5-VL's window-attention blocks attend within windows of
  ``window_size`` pixels (merged-token windows, smaller at the right and bottom edges); the merger projects
  groups of ``spatial_merge_size**2`` patches. Methods act on the merger's output.

Each adapter names its family's description (:meth:`ModelAdapter.model_shape`,
:meth:`ModelAdapter.visual_items`) from the builders here; items are assigned to batch rows by the adapter's
own layouts (:meth:`ModelAdapter.visual_layouts`), as the engine splits the placeholder runs.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from mmaccel.models.base import ModelAdapter
from mmaccel.models.registry import adapter_for
from mmaccel.ops.flops import ModelShape, TowerRun, TransformerShape, VisualWork


def _adapter(model_or_adapter: nn.Module | ModelAdapter) -> ModelAdapter:
    return model_or_adapter if isinstance(model_or_adapter, ModelAdapter) else adapter_for(model_or_adapter)


def describe(model_or_adapter: nn.Module | ModelAdapter) -> ModelShape:
    """The :class:`ModelShape` of a supported model (or of the model an adapter serves)."""
    return _adapter(model_or_adapter).model_shape()


def _decoder(text: Any) -> TransformerShape:
    heads = text.num_attention_heads
    return TransformerShape(
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        heads=heads,
        kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
        gated_mlp=True,  # Llama and Qwen2 decoders: SwiGLU
    )


# -- LLaVA-1.5, LLaVA-NeXT, LLaVA-OneVision --------------------------------------------------------------------------
def _has_cls(vision: Any) -> bool:
    return vision.model_type.startswith("clip")


def _llava_tile(config: Any) -> tuple[int, int]:
    """(tokens of one tower sequence, tokens of it entering the projector) of a LLaVA-like model."""
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2
    cls = int(_has_cls(vision))
    keeps_cls = config.vision_feature_select_strategy == "full"
    return patches + cls, patches + (cls if keeps_cls else 0)


def llava_shape(adapter: ModelAdapter, fixed_resolution: bool) -> ModelShape:
    """LLaVA-1.5 (``fixed_resolution``: one tile per image, reduced at the projector input), LLaVA-NeXT and
    LLaVA-OneVision (anyres tiles)."""
    config = adapter.model.config
    vision, text = config.vision_config, config.text_config
    feature_layers = config.vision_feature_layer
    n_feature_layers = len(feature_layers) if isinstance(feature_layers, (list, tuple)) else 1
    projector_in = vision.hidden_size * n_feature_layers
    tokens, projected = _llava_tile(config)
    image_work = None
    if fixed_resolution:
        image_work = VisualWork((TowerRun(1, tokens),), tokens - int(_has_cls(vision)), projected, items=1)
    return ModelShape(
        vision=TransformerShape(
            layers=vision.num_hidden_layers,
            hidden=vision.hidden_size,
            intermediate=vision.intermediate_size,
            heads=vision.num_attention_heads,
            kv_heads=vision.num_attention_heads,
            head_dim=vision.hidden_size // vision.num_attention_heads,
            gated_mlp=False,
        ),
        patch_macs=vision.num_channels * vision.patch_size**2 * vision.hidden_size,
        projector=((projector_in, text.hidden_size), (text.hidden_size, text.hidden_size)),
        decoder=_decoder(text),
        vocab=text.vocab_size,
        pooling_head=vision.model_type.startswith("siglip") and getattr(vision, "vision_use_head", True),
        reduces_before_projector=adapter.reduction_site() == "projector_input",
        image_work=image_work,
    )


# -- Qwen2-VL, Qwen2.5-VL ---------------------------------------------------------------------------------------------
def qwen_shape(adapter: ModelAdapter, window_attention: bool) -> ModelShape:
    """Qwen2-VL, and Qwen2.5-VL (``window_attention``: gated MLP, window blocks outside fullatt_block_indexes)."""
    config = adapter.model.config
    vision, text = config.vision_config, config.text_config
    merge = vision.spatial_merge_size
    if not window_attention:  # fc1/fc2 MLP of mlp_ratio x width; the merger ends at the LM width
        width, out, gated = vision.embed_dim, vision.hidden_size, False
        intermediate = vision.embed_dim * vision.mlp_ratio
        windows: tuple[int, ...] = ()
    else:  # gated MLP; window attention in every block outside fullatt_block_indexes
        width, out, intermediate, gated = vision.hidden_size, vision.out_hidden_size, vision.intermediate_size, True
        windows = tuple(b for b in range(vision.depth) if b not in set(vision.fullatt_block_indexes))
    merged = width * merge**2
    return ModelShape(
        vision=TransformerShape(
            layers=vision.depth,
            hidden=width,
            intermediate=intermediate,
            heads=vision.num_heads,
            kv_heads=vision.num_heads,
            head_dim=width // vision.num_heads,
            gated_mlp=gated,
        ),
        patch_macs=vision.in_channels * vision.temporal_patch_size * vision.patch_size**2 * width,
        projector=((merged, merged), (merged, out)),
        projector_group=merge**2,
        decoder=_decoder(text),
        vocab=text.vocab_size,
        window_blocks=windows,
    )


def _qwen_windows(config: Any, grid_h: int, grid_w: int) -> tuple[int, ...]:
    """Tokens of each attention window of one temporal patch of grid_h x grid_w patches (Qwen2.5-VL)."""
    merge = config.spatial_merge_size
    side = config.window_size // merge // config.patch_size  # window side in merged tokens
    rows, cols = grid_h // merge, grid_w // merge
    heights = [min(side, rows - start) for start in range(0, rows, side)]
    widths = [min(side, cols - start) for start in range(0, cols, side)]
    return tuple(h * w * merge**2 for h in heights for w in widths)


def qwen_items(adapter: ModelAdapter, inputs: dict[str, Any], modality: str, windows: bool) -> list[VisualWork]:
    """Qwen-VL: every image or video of grid (t, h, w) is t attention sequences of h*w patches (in windows on
    Qwen2.5-VL's window blocks) and t*h*w patches through the merger."""
    grids = inputs.get("image_grid_thw" if modality == "image" else "video_grid_thw")
    if grids is None:
        return []
    vision = adapter.model.config.vision_config
    items = []
    for t, h, w in grids.tolist():
        runs = (TowerRun(t, h * w, _qwen_windows(vision, h, w) if windows else ()),)
        items.append(VisualWork(runs, t * h * w, t * h * w, items=1))
    return items


def llava_items(adapter: ModelAdapter, inputs: dict[str, Any], modality: str, tiles: list[int]) -> list[VisualWork]:
    """LLaVA-like: every tile (``tiles`` per image) or video frame is one tower sequence whose features all go
    through the projector."""
    config = adapter.model.config
    tokens, projected = _llava_tile(config)
    cls = int(_has_cls(config.vision_config))
    if modality == "video":  # OneVision: every frame through the tower and the projector
        videos = inputs.get("pixel_values_videos")
        if videos is None:
            return []
        frames = videos.shape[1]
        work = VisualWork((TowerRun(frames, tokens),), frames * (tokens - cls), frames * projected, items=1)
        return [work] * len(videos)
    return [VisualWork((TowerRun(n, tokens),), n * (tokens - cls), n * projected, items=1) for n in tiles]


def visual_work(model_or_adapter: nn.Module | ModelAdapter, inputs: dict[str, Any]) -> list[VisualWork]:
    """Per row of the batch ``inputs`` (the processor's output, as given to the model), its
    :class:`VisualWork`: the images, tiles and frames the model will encode for that row."""
    from mmaccel.engine.visual import placed_items

    adapter = _adapter(model_or_adapter)
    items = {modality: adapter.visual_items(inputs, modality) for modality in adapter.visual_token_ids()}
    rows = [VisualWork() for _ in range(inputs["input_ids"].shape[0])]
    for item in placed_items(adapter, inputs):  # as the engine splits the runs; a mismatch is a ConfigError
        rows[item.row] = rows[item.row] + items[item.modality][item.number]
    return rows
