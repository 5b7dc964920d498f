"""Small random-weight LLaVA models built from configs in code (demos, smoke tests); nothing is downloaded."""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

TINY_IMAGE_TOKEN = 100


def tiny_llava(
    image_size: int = 112,
    patch_size: int = 14,
    hidden: int = 128,
    layers: int = 4,
    vision_hidden: int = 64,
    vocab: int = 256,
    strategy: str = "default",
    attn: str = "sdpa",
    seed: int = 0,
) -> LlavaForConditionalGeneration:
    """A LLaVA-1.5-shaped model with random weights: CLIP tower (CLS, feature layer -2) and a Llama decoder.

    Token ids 0/1/2 are pad/bos/eos and ``TINY_IMAGE_TOKEN`` the image placeholder. The input embedding is
    re-initialised with std 1 so that greedy decoding is varied.
    """
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=TINY_IMAGE_TOKEN,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_layer=-2,
        vision_feature_select_strategy=strategy,
    )
    model = LlavaForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight.normal_(0.0, 1.0)
    model.set_attn_implementation(attn)
    return model


def tiny_inputs(model: LlavaForConditionalGeneration, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of prompts ``<s> text <image tokens> text`` with random pixels for ``tiny_llava`` models."""
    generator = torch.Generator().manual_seed(seed)
    n_image = model.config.image_seq_length
    size = model.config.vision_config.image_size
    rows = []
    for _ in range(batch):
        before = torch.randint(3, 90, (4,), generator=generator)
        after = torch.randint(3, 90, (8,), generator=generator)
        rows.append(torch.cat([torch.tensor([1]), before, torch.full((n_image,), TINY_IMAGE_TOKEN), after]))
    return {"input_ids": torch.stack(rows), "pixel_values": torch.randn(batch, 3, size, size, generator=generator)}


# -- Qwen2-VL / Qwen2.5-VL ------------------------------------------------------------------------------------------
TINY_VIDEO_TOKEN = 101
TINY_VISION_START = 102
TINY_VISION_END = 103
TINY_QWEN_PATCH = 14  # pixels per patch side; 2 x 2 patches merge into one language-model token
TINY_QWEN_GRID = (1, 8, 8)  # (t, h, w) patches of the default image: 16 language-model tokens


def _qwen_text_config(vocab: int, hidden: int, layers: int) -> dict:
    head_dim = hidden // 4
    third = head_dim // 2 // 3
    section = [head_dim // 2 - 2 * third, third, third]  # (t, h, w) frequency split of M-RoPE
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 1024,
        "pad_token_id": 0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": section},
    }


def _finish_qwen(model, attn: str):
    model = model.eval()
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight.normal_(0.0, 1.0)
    model.set_attn_implementation(attn)
    return model


_QWEN_TOKEN_IDS = {
    "image_token_id": TINY_IMAGE_TOKEN,
    "video_token_id": TINY_VIDEO_TOKEN,
    "vision_start_token_id": TINY_VISION_START,
    "vision_end_token_id": TINY_VISION_END,
}


def tiny_qwen2_vl(hidden: int = 64, layers: int = 4, vocab: int = 128, attn: str = "sdpa", seed: int = 0):
    """A Qwen2-VL-shaped model with random weights: a 2-block vision tower (14-pixel patches, 2x2 merge, full
    attention per image) and a Qwen2 decoder with M-RoPE. Token ids as ``tiny_llava``, plus video 101 and
    vision start/end 102/103."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    vision = {
        "depth": 2,
        "embed_dim": 32,
        "hidden_size": hidden,
        "num_heads": 4,
        "mlp_ratio": 2,
        "patch_size": TINY_QWEN_PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
    }
    config = Qwen2VLConfig(
        text_config=_qwen_text_config(vocab, hidden, layers), vision_config=vision, **_QWEN_TOKEN_IDS
    )
    return _finish_qwen(Qwen2VLForConditionalGeneration(config), attn)


def tiny_qwen2_5_vl(hidden: int = 64, layers: int = 4, vocab: int = 128, attn: str = "sdpa", seed: int = 0):
    """A Qwen2.5-VL-shaped model with random weights: a 3-block vision tower whose blocks 0 and 2 use window
    attention (56-pixel windows: 2x2 merged tokens) and block 1 full attention, and an M-RoPE Qwen2 decoder."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    vision = {
        "depth": 3,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 4,
        "out_hidden_size": hidden,
        "patch_size": TINY_QWEN_PATCH,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "in_channels": 3,
        "window_size": 56,
        "fullatt_block_indexes": [1],
    }
    config = Qwen2_5_VLConfig(
        text_config=_qwen_text_config(vocab, hidden, layers), vision_config=vision, **_QWEN_TOKEN_IDS
    )
    return _finish_qwen(Qwen2_5_VLForConditionalGeneration(config), attn)


def qwen_patches(grid: tuple[int, int, int], generator: torch.Generator | None = None) -> torch.Tensor:
    """Random flattened patches of an image or video of ``grid`` = (t, h, w) patches: (t * h * w, 3 * 2 * 14 * 14)."""
    t, h, w = grid
    return torch.randn(t * h * w, 3 * 2 * TINY_QWEN_PATCH**2, generator=generator)


def qwen_visual_run(token: int, grid: tuple[int, int, int]) -> torch.Tensor:
    """``<vision_start>`` + one placeholder per language-model token of ``grid`` + ``<vision_end>``."""
    t, h, w = grid
    placeholders = torch.full((t * h * w // 4,), token)
    return torch.cat([torch.tensor([TINY_VISION_START]), placeholders, torch.tensor([TINY_VISION_END])])


def tiny_qwen_inputs(
    model=None,
    batch: int = 1,
    seed: int = 0,
    grids: list[tuple[int, int, int]] | None = None,
    video_grid: tuple[int, int, int] | None = None,
    images_per_row: int = 1,
) -> dict[str, torch.Tensor]:
    """A left-padded batch ``<s> text <vision_start> image <vision_end> [video] text`` for tiny Qwen models.

    ``grids``: the (t, h, w) patch grid of each row's images (default ``TINY_QWEN_GRID`` for every row); rows get
    different text lengths, so a batch is padded. ``images_per_row`` images per row, separated by a text token.
    ``video_grid`` adds a video (2 frames per temporal patch) after each row's images. Returns input_ids,
    attention_mask, pixel_values, image_grid_thw and mm_token_type_ids (0 text, 1 image, 2 video), plus
    pixel_values_videos and video_grid_thw with a video. ``model`` is accepted for symmetry with other builders
    and not read.
    """
    generator = torch.Generator().manual_seed(seed)
    grids = grids or [TINY_QWEN_GRID] * batch
    if len(grids) != batch:
        raise ValueError(f"grids has {len(grids)} entries for a batch of {batch}")
    rows = []
    for row, grid in enumerate(grids):
        before = torch.randint(3, 90, (2 + 3 * row,), generator=generator)
        after = torch.randint(3, 90, (5 + row,), generator=generator)
        parts = [torch.tensor([1]), before, qwen_visual_run(TINY_IMAGE_TOKEN, grid)]
        for _ in range(images_per_row - 1):
            parts += [torch.randint(3, 90, (1,), generator=generator), qwen_visual_run(TINY_IMAGE_TOKEN, grid)]
        if video_grid is not None:
            parts += [torch.randint(3, 90, (1,), generator=generator), qwen_visual_run(TINY_VIDEO_TOKEN, video_grid)]
        rows.append(torch.cat([*parts, after]))
    length = max(r.numel() for r in rows)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for b, r in enumerate(rows):
        input_ids[b, length - r.numel() :] = r
        attention_mask[b, length - r.numel() :] = 1
    mm_token_type_ids = (input_ids == TINY_IMAGE_TOKEN).int() + 2 * (input_ids == TINY_VIDEO_TOKEN).int()
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": torch.cat([qwen_patches(g, generator) for g in grids for _ in range(images_per_row)]),
        "image_grid_thw": torch.tensor([g for g in grids for _ in range(images_per_row)]),
        "mm_token_type_ids": mm_token_type_ids,
    }
    if video_grid is not None:
        inputs["pixel_values_videos"] = torch.cat([qwen_patches(video_grid, generator) for _ in range(batch)])
        inputs["video_grid_thw"] = torch.tensor([video_grid] * batch)
    return inputs


# -- LLaVA-NeXT and LLaVA-OneVision (anyres tiles; OneVision also video) ---------------------------------------
TINY_GRID_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # tiles of 32 px: 1x1, 1x2, 2x1, 2x2 grids


def _tiny_text_config(config_class, hidden: int, layers: int, vocab: int):
    return config_class(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def _finish_tiny(model, attn: str):
    model = model.eval()
    with torch.no_grad():
        model.model.language_model.embed_tokens.weight.normal_(0.0, 1.0)
    model.set_attn_implementation(attn)
    return model


def tiny_llava_next(
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 64,
    layers: int = 4,
    vision_hidden: int = 32,
    vocab: int = 128,
    attn: str = "sdpa",
    seed: int = 0,
):
    """A LLaVA-NeXT-shaped model with random weights: CLIP tower (CLS, feature layer -2, "default" strategy),
    anyres tiles of ``image_size`` pixels on the grids of ``TINY_GRID_PINPOINTS`` (scaled to the tile size),
    and a Llama decoder. Token ids as :func:`tiny_llava`."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    vision = CLIPVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=vision_hidden,
    )
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=_tiny_text_config(LlamaConfig, hidden, layers, vocab),
        image_token_index=TINY_IMAGE_TOKEN,
        image_grid_pinpoints=[[h * image_size // 32, w * image_size // 32] for h, w in TINY_GRID_PINPOINTS],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return _finish_tiny(LlavaNextForConditionalGeneration(config), attn)


def tiny_llava_onevision(
    image_size: int = 32,
    patch_size: int = 8,
    hidden: int = 64,
    layers: int = 4,
    vision_hidden: int = 32,
    vocab: int = 128,
    attn: str = "sdpa",
    seed: int = 0,
):
    """A LLaVA-OneVision-shaped model with random weights: SigLIP tower (no CLS, last block, "full" strategy),
    anyres tiles as :func:`tiny_llava_next`, ``anyres_max_9``, a Qwen2 decoder, video token ``TINY_VIDEO_TOKEN``."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    vision = SiglipVisionConfig(
        hidden_size=vision_hidden,
        intermediate_size=2 * vision_hidden,
        num_hidden_layers=3,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    config = LlavaOnevisionConfig(
        vision_config=vision,
        text_config=_tiny_text_config(Qwen2Config, hidden, layers, vocab),
        image_token_index=TINY_IMAGE_TOKEN,
        video_token_index=TINY_VIDEO_TOKEN,
        image_grid_pinpoints=[[h * image_size // 32, w * image_size // 32] for h, w in TINY_GRID_PINPOINTS],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return _finish_tiny(LlavaOnevisionForConditionalGeneration(config), attn)


def tiny_tiled_inputs(
    model,
    image_sizes: list[list[tuple[int, int]]],
    videos: list[int] | None = None,
    text_before: list[int] | None = None,
    text_after: list[int] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """A left-padded batch for ``tiny_llava_next`` / ``tiny_llava_onevision``: row b holds BOS, text, its images
    (``image_sizes[b]``, (height, width) in pixels, one placeholder run each, separated by a text token), then
    ``videos[b]`` frames of video (OneVision; 0 for none), then text.

    Returns input_ids, attention_mask, and when used pixel_values (images, max tiles, 3, S, S) zero-padded past
    each image's tiles, image_sizes (images, 2), pixel_values_videos (rows with video, frames, 3, S, S). The
    placeholder count of each image is the model's own (its ``get_image_features`` on the same sizes).
    """
    import importlib

    generator = torch.Generator().manual_seed(seed)
    batch = len(image_sizes)
    videos = videos or [0] * batch
    text_before = text_before or [3] * batch
    text_after = text_after or [5] * batch
    size = model.config.vision_config.image_size
    flat_sizes = [s for row in image_sizes for s in row]
    image_runs: list[int] = []
    pixel_values = None
    if flat_sizes:
        sizes = torch.tensor(flat_sizes)
        modeling = importlib.import_module(type(model).__module__)
        tiles = [modeling.image_size_to_num_patches(s, model.config.image_grid_pinpoints, size) for s in flat_sizes]
        pixel_values = torch.zeros(len(flat_sizes), max(tiles), 3, size, size)
        for i, n in enumerate(tiles):
            pixel_values[i, :n] = torch.randn(n, 3, size, size, generator=generator)
        with torch.no_grad():
            features = model.model.get_image_features(pixel_values=pixel_values, image_sizes=sizes).pooler_output
        image_runs = [f.shape[0] for f in features]
    frames = max(videos)
    if frames and any(n not in (0, frames) for n in videos):
        raise ValueError(f"videos={videos}: every row with a video must have the same number of frames")
    patches = size // model.config.vision_config.patch_size
    video_run = frames * ((patches + 1) // 2) ** 2 + 1  # frames pooled 2x2, then one newline
    rows, image = [], 0
    for b in range(batch):
        parts = [torch.tensor([1]), torch.randint(3, 90, (text_before[b],), generator=generator)]
        for i in range(len(image_sizes[b])):
            if i:
                parts.append(torch.randint(3, 90, (1,), generator=generator))
            parts.append(torch.full((image_runs[image],), TINY_IMAGE_TOKEN))
            image += 1
        if videos[b]:
            parts.append(torch.full((video_run,), TINY_VIDEO_TOKEN))
        parts.append(torch.randint(3, 90, (text_after[b],), generator=generator))
        rows.append(torch.cat(parts))
    length = max(r.numel() for r in rows)
    input_ids = torch.zeros(batch, length, dtype=torch.long)
    attention_mask = torch.zeros(batch, length, dtype=torch.long)
    for b, row in enumerate(rows):
        input_ids[b, length - row.numel() :] = row
        attention_mask[b, length - row.numel() :] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if pixel_values is not None:
        inputs["pixel_values"] = pixel_values
        inputs["image_sizes"] = torch.tensor(flat_sizes)
    if frames:
        with_video = sum(1 for n in videos if n)
        inputs["pixel_values_videos"] = torch.randn(with_video, frames, 3, size, size, generator=generator)
    return inputs
