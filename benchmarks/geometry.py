"""Random-weight models with a family's real visual geometry, and one prompt for them (for the speed scripts).

Each family keeps its vision tower's geometry (patch size, image size or tile grid, tokens per image, width and
depth by default) and gets a decoder of ``layers`` x ``hidden`` with the family's layout (Llama for LLaVA-1.5 and
LLaVA-NeXT, Qwen2 for LLaVA-OneVision, Qwen2-VL's M-RoPE decoder for Qwen2-VL / Qwen2.5-VL). The vocabulary is
32000 for all: prefill computes logits for one position only, so it barely matters.

| family | vision tower | image | visual tokens |
|---|---|---|---|
| llava | CLIP ViT-L/14, 336 px, feature layer -2 | 336 x 336 | 576 |
| llava_next | CLIP ViT-L/14, 336 px tiles, anyres up to 2 x 2 | 672 x 672: base + 4 tiles | 2928 (with newlines) |
| llava_onevision | SigLIP so400m/14, 384 px tiles, anyres up to 2 x 2 | 768 x 768: base + 4 tiles | 3699 |
| qwen2_vl | Qwen2-VL ViT (32 blocks, d=1280), 2 x 2 merge | 672 x 672: 48 x 48 patches | 576 |
| qwen2_5_vl | Qwen2.5-VL ViT (32 blocks, window 112, full attention every 8th) | 672 x 672 | 576 |
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END = 31990, 31991, 31992, 31993
VOCAB = 32000
FAMILIES = ("llava", "llava_next", "llava_onevision", "qwen2_vl", "qwen2_5_vl")


@dataclass(frozen=True)
class Size:
    layers: int = 8  # decoder layers
    hidden: int = 1024  # decoder width
    vision_layers: int | None = None  # None: the family's real depth
    vision_hidden: int | None = None  # None: the family's real width


QUICK = Size(layers=4, hidden=256, vision_layers=2, vision_hidden=128)  # 4 layers: FastV prunes at 2


def _decoder(kind: str, size: Size) -> dict:
    head_dim = 128 if kind == "qwen" else 64
    heads = max(1, size.hidden // head_dim)
    config = dict(
        vocab_size=VOCAB,
        hidden_size=size.hidden,
        intermediate_size=int(size.hidden * 2.75) // 256 * 256 or 2 * size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=heads,
        num_key_value_heads=heads if kind == "llama" else max(1, heads // 4),
        max_position_embeddings=8192,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    if kind == "qwen":  # M-RoPE sections (t, h, w) of head_dim / 2 frequencies, as Qwen2-VL's (16, 24, 24) of 64
        sections = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": sections}
    return config


def _clip(size: Size):
    from transformers import CLIPVisionConfig

    hidden = size.vision_hidden or 1024
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=size.vision_layers or 24,
        num_attention_heads=max(1, hidden // 64),
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )


def build_model(family: str, size: Size, dtype: torch.dtype, device: str):
    """The random-weight model of ``family`` (``FAMILIES``) at ``size``, SDPA attention, in eval mode."""
    import transformers as hf

    torch.manual_seed(0)
    if family == "llava":
        config = hf.LlavaConfig(
            vision_config=_clip(size),
            text_config=hf.LlamaConfig(**_decoder("llama", size)),
            image_token_index=IMAGE_TOKEN,
            image_seq_length=576,
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
        model = hf.LlavaForConditionalGeneration(config)
    elif family == "llava_next":
        config = hf.LlavaNextConfig(
            vision_config=_clip(size),
            text_config=hf.LlamaConfig(**_decoder("llama", size)),
            image_token_index=IMAGE_TOKEN,
            image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
            vision_feature_layer=-2,
            vision_feature_select_strategy="default",
        )
        model = hf.LlavaNextForConditionalGeneration(config)
    elif family == "llava_onevision":
        hidden = size.vision_hidden or 1152
        config = hf.LlavaOnevisionConfig(
            vision_config=hf.SiglipVisionConfig(
                hidden_size=hidden,
                intermediate_size=4304 if size.vision_hidden is None else 4 * hidden,
                num_hidden_layers=size.vision_layers or 26,
                num_attention_heads=16 if size.vision_hidden is None else max(1, hidden // 64),
                image_size=384,
                patch_size=14,
            ),
            text_config=hf.Qwen2Config(**_decoder("qwen2", size)),
            image_token_index=IMAGE_TOKEN,
            video_token_index=VIDEO_TOKEN,
            image_grid_pinpoints=[[384, 384], [384, 768], [768, 384], [768, 768]],
            vision_feature_layer=-1,
            vision_feature_select_strategy="full",
            vision_aspect_ratio="anyres_max_9",
        )
        model = hf.LlavaOnevisionForConditionalGeneration(config)
    elif family in ("qwen2_vl", "qwen2_5_vl"):
        hidden = size.vision_hidden or 1280
        depth = size.vision_layers or 32
        ids = dict(
            image_token_id=IMAGE_TOKEN,
            video_token_id=VIDEO_TOKEN,
            vision_start_token_id=VISION_START,
            vision_end_token_id=VISION_END,
        )
        if family == "qwen2_vl":
            vision = dict(
                depth=depth, embed_dim=hidden, hidden_size=size.hidden, num_heads=max(1, hidden // 80), patch_size=14
            )
            config = hf.Qwen2VLConfig(text_config=_decoder("qwen", size), vision_config=vision, **ids)
            model = hf.Qwen2VLForConditionalGeneration(config)
        else:
            vision = dict(
                depth=depth,
                hidden_size=hidden,
                intermediate_size=3420 if size.vision_hidden is None else 4 * hidden,
                num_heads=max(1, hidden // 80),
                out_hidden_size=size.hidden,
                patch_size=14,
                window_size=112,
                fullatt_block_indexes=[block for block in range(depth) if block % 8 == 7] or [depth - 1],
            )
            config = hf.Qwen2_5_VLConfig(text_config=_decoder("qwen", size), vision_config=vision, **ids)
            model = hf.Qwen2_5_VLForConditionalGeneration(config)
    else:
        raise SystemExit(f"--family {family!r} is unknown; choose one of {', '.join(FAMILIES)}")
    model = model.to(device=device, dtype=dtype).eval()
    model.set_attn_implementation("sdpa")
    return model


def build_inputs(model, family: str, device: str, dtype: torch.dtype, batch: int) -> dict[str, torch.Tensor]:
    """One prompt per row: BOS, 35 text tokens, the image's placeholders, 26 text tokens (as LLaVA-1.5's)."""
    generator = torch.Generator().manual_seed(0)
    before = torch.randint(3, 30000, (35,), generator=generator)
    after = torch.randint(3, 30000, (26,), generator=generator)
    if family == "llava":
        pixels = {"pixel_values": torch.randn(batch, 3, 336, 336, generator=generator)}
    elif family in ("llava_next", "llava_onevision"):
        side = model.config.vision_config.image_size
        pixels = {
            "pixel_values": torch.randn(batch, 5, 3, side, side, generator=generator),  # base + 2 x 2 tiles
            "image_sizes": torch.tensor([[2 * side, 2 * side]] * batch),
        }
    else:
        vision = model.config.vision_config
        grid = (1, 48, 48)  # a 672 x 672 image in 14 px patches
        channels = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
        pixels = {
            "pixel_values": torch.randn(batch * grid[1] * grid[2], channels, generator=generator),
            "image_grid_thw": torch.tensor([grid] * batch),
        }
    pixels = {
        key: value.to(device=device, dtype=dtype) if value.is_floating_point() else value.to(device)
        for key, value in pixels.items()
    }
    n_image = image_tokens(model, family, pixels)
    image = torch.full((n_image,), IMAGE_TOKEN)
    if family.startswith("qwen"):
        image = torch.cat([torch.tensor([VISION_START]), image, torch.tensor([VISION_END])])
    ids = torch.cat([torch.tensor([1]), before, image, after])[None].repeat(batch, 1).to(device)
    inputs = {"input_ids": ids, **pixels}
    if family.startswith("qwen"):
        inputs["mm_token_type_ids"] = (ids == IMAGE_TOKEN).int()
    return inputs


def image_tokens(model, family: str, pixels: dict[str, torch.Tensor]) -> int:
    """Visual tokens of the first image, as the model's own encoder makes them."""
    if family == "llava":
        side = model.config.vision_config.image_size // model.config.vision_config.patch_size
        return side * side
    first = {key: value[:1] for key, value in pixels.items() if key != "pixel_values"}
    if family.startswith("qwen"):
        grid = pixels["image_grid_thw"][0]
        return int(grid.prod()) // model.config.vision_config.spatial_merge_size**2
    first["pixel_values"] = pixels["pixel_values"][:1]
    with torch.no_grad():
        features = model.model.get_image_features(**first).pooler_output
    return int(sum(f.shape[0] for f in features))
