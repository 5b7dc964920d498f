"""Tiny random-weight models built from configs in code (no downloads), and inputs for them.

Vocabulary conventions: ids 0/1/2 are pad/bos/eos, 100 is the image placeholder; text ids are drawn from
3..89. The input embedding is re-initialised with std 1 so that greedy decoding is varied, which makes
identity checks meaningful, and generation suppresses the placeholder id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from mmaccel.models.tiny import TINY_IMAGE_TOKEN
from mmaccel.models.tiny import tiny_llava as build_tiny_llava

IMAGE_TOKEN = TINY_IMAGE_TOKEN
PAD, BOS, EOS = 0, 1, 2
IMAGE_SIZE, PATCH = 32, 8
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH) ** 2  # 16 patches (+ CLS inside the tower)
GENERATE_KWARGS = {"do_sample": False, "suppress_tokens": [IMAGE_TOKEN], "pad_token_id": PAD}


def tiny_llava(attn: str = "sdpa", strategy: str = "default", layers: int = 4, seed: int = 0):
    return build_tiny_llava(
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        hidden=64,
        layers=layers,
        vision_hidden=32,
        vocab=128,
        strategy=strategy,
        attn=attn,
        seed=seed,
    )


def siglip_llava(seed: int = 0, attn: str = "sdpa", layers: int = 2):
    """A tiny LLaVA with a SigLIP tower: no CLS token, all 16 patches fed to the LM (``"full"`` strategy)."""
    from transformers import LlamaConfig, LlavaConfig, LlavaForConditionalGeneration, SiglipVisionConfig

    config = LlavaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE_SIZE,
            patch_size=PATCH,
        ),
        text_config=LlamaConfig(
            vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4
        ),
        image_token_index=IMAGE_TOKEN,
        image_seq_length=TOKENS_PER_IMAGE,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.set_attn_implementation(attn)
    return model


def prompt_ids(n_images: int = 1, text_before: int = 3, text_after: int = 5, strategy: str = "default", seed=0):
    """One prompt: BOS, text, n images (each a run of placeholders, separated by a text token), text."""
    generator = torch.Generator().manual_seed(seed)
    per_image = TOKENS_PER_IMAGE + (1 if strategy == "full" else 0)
    parts = [torch.tensor([BOS]), torch.randint(3, 90, (text_before,), generator=generator)]
    for i in range(n_images):
        if i:
            parts.append(torch.randint(3, 90, (1,), generator=generator))
        parts.append(torch.full((per_image,), IMAGE_TOKEN))
    parts.append(torch.randint(3, 90, (text_after,), generator=generator))
    return torch.cat(parts)


def batch_inputs(prompts: list[torch.Tensor], n_images: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Left-padded batch with pixel values for every image of every prompt, in order."""
    length = max(p.numel() for p in prompts)
    input_ids = torch.full((len(prompts), length), PAD)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, length - prompt.numel() :] = prompt
        attention_mask[row, length - prompt.numel() :] = 1
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(sum(n_images), 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}


def single_inputs(n_images: int = 1, seed: int = 0, strategy: str = "default", **kwargs) -> dict[str, torch.Tensor]:
    inputs = batch_inputs([prompt_ids(n_images, strategy=strategy, seed=seed, **kwargs)], [n_images], seed=seed)
    return inputs


# -- model families: one tiny model and one prompt builder each, for the family-parametrised suites -------------------
VIDEO_TOKEN, VISION_START, VISION_END = 101, 102, 103
Rows = list[tuple[int, int]]  # one (images, seed) per prompt of a batch


@dataclass(frozen=True)
class TinyFamily:
    """A family's tiny model and prompts. ``build(attn=, seed=)`` makes the model; ``inputs(model, rows)`` makes a
    left-padded batch, one prompt per ``(images, seed)`` row, every image of one size, so that a batch row equals
    the same row built alone. ``adapter`` is the adapter that must be registered for the family to run."""

    adapter: str
    build: Callable[..., Any]
    inputs: Callable[[Any, Rows], dict[str, torch.Tensor]]
    # Per image of a batch, the token counts a budget applies to separately (anyres tiles); None: whole images.
    # Tokens of an image outside its units (anyres newlines) are structural: always kept, not counted as visual.
    units: Callable[[Any, dict[str, torch.Tensor]], list[list[int]]] | None = None


def budget_units(model, family: TinyFamily, inputs: dict[str, torch.Tensor]) -> list[list[int]]:
    """Per image of ``inputs``, the token counts its budget applies to (the whole image but for anyres tiles)."""
    if family.units is not None:
        return family.units(model, inputs)
    n_image = tokens_per_image(model, family)
    return [[n_image]] * (int((inputs["input_ids"] == IMAGE_TOKEN).sum()) // n_image)


def tokens_per_image(model, family: TinyFamily) -> int:
    """Placeholder tokens of one image in ``family``'s prompts (the same for every image)."""
    inputs = family.inputs(model, [(1, 0)])
    return int((inputs["input_ids"] == IMAGE_TOKEN).sum())


def _batch(rows: list[list[torch.Tensor]], images: list[dict[str, torch.Tensor]], model) -> dict[str, torch.Tensor]:
    """Left-pad prompts (lists of id pieces) and concatenate their images' tensors in order."""
    prompts = [torch.cat(pieces) for pieces in rows]
    length = max(p.numel() for p in prompts)
    input_ids = torch.full((len(prompts), length), PAD)
    attention_mask = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, length - prompt.numel() :] = prompt
        attention_mask[row, length - prompt.numel() :] = 1
    out = {"input_ids": input_ids, "attention_mask": attention_mask}
    for key in images[0] if images else ():
        out[key] = torch.cat([image[key] for image in images])
    if "image_grid_thw" in out:  # Qwen: 0 text, 1 image (required by get_rope_index)
        out["mm_token_type_ids"] = (input_ids == IMAGE_TOKEN).int()
    return out


def _rows(model, rows: Rows, image_ids: list[int], make_image) -> dict[str, torch.Tensor]:
    pieces, images = [], []
    for n_images, seed in rows:
        generator = torch.Generator().manual_seed(seed)
        before, after = torch.randint(2, 6, (2,), generator=generator).tolist()
        row = [torch.tensor([BOS]), torch.randint(3, 90, (before,), generator=generator)]
        for i in range(n_images):
            if i:
                row.append(torch.randint(3, 90, (1,), generator=generator))
            row.append(torch.tensor(image_ids))
            images.append(make_image(generator))
        row.append(torch.randint(3, 90, (after,), generator=generator))
        pieces.append(row)
    return _batch(pieces, images, model)


def llava_rows(model, rows: Rows) -> dict[str, torch.Tensor]:
    from mmaccel.models.registry import adapter_for

    size = model.config.vision_config.image_size
    n_tokens = adapter_for(model).tokens_per_image()
    return _rows(
        model,
        rows,
        [IMAGE_TOKEN] * n_tokens,
        lambda generator: {"pixel_values": torch.randn(1, 3, size, size, generator=generator)},
    )


ANYRES_SIZE = (32, 64)  # (height, width) of every LLaVA-NeXT / OneVision test image: base tile + 2 grid tiles


def anyres_rows(model, rows: Rows) -> dict[str, torch.Tensor]:
    side = model.config.vision_config.image_size
    n_tiles = 1 + (ANYRES_SIZE[0] // side) * (ANYRES_SIZE[1] // side)

    def make_image(generator):
        pixels = torch.randn(1, n_tiles, 3, side, side, generator=generator)
        return {"pixel_values": pixels, "image_sizes": torch.tensor([ANYRES_SIZE])}

    probe = make_image(torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = model.model.get_image_features(**probe).pooler_output
    return _rows(model, rows, [IMAGE_TOKEN] * sum(f.shape[0] for f in features), make_image)


QWEN_GRID = (1, 8, 8)  # (t, h, w) patches of every Qwen test image: 16 tokens after the 2x2 merge


def qwen_rows(model, rows: Rows) -> dict[str, torch.Tensor]:
    vision = model.config.vision_config
    n_patches = QWEN_GRID[0] * QWEN_GRID[1] * QWEN_GRID[2]
    channels = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    n_tokens = n_patches // vision.spatial_merge_size**2

    def make_image(generator):
        pixels = torch.randn(n_patches, channels, generator=generator)
        return {"pixel_values": pixels, "image_grid_thw": torch.tensor([QWEN_GRID])}

    return _rows(model, rows, [VISION_START, *[IMAGE_TOKEN] * n_tokens, VISION_END], make_image)


def _text_config(kind: str, layers: int = 4) -> dict:
    config = dict(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    if kind == "qwen_vl":
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    return config


def _finish(model, attn: str):
    model = model.eval()
    with torch.no_grad():
        model.get_input_embeddings().weight.normal_(0.0, 1.0)  # varied greedy decoding
    model.set_attn_implementation(attn)
    return model


def tiny_llava_next(attn: str = "sdpa", seed: int = 0):
    """LLaVA-NeXT: CLIP 32 px / 8 px patches (CLS, feature layer -2), anyres grid up to 2 x 2 tiles, Llama."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    torch.manual_seed(seed)
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        text_config=LlamaConfig(**_text_config("llama")),
        image_token_index=IMAGE_TOKEN,
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return _finish(LlavaNextForConditionalGeneration(config), attn)


def tiny_llava_onevision(attn: str = "sdpa", seed: int = 0):
    """LLaVA-OneVision: SigLIP 32 px / 8 px patches (no CLS, last layer, all tokens), anyres grid, Qwen2."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        Qwen2Config,
        SiglipVisionConfig,
    )

    torch.manual_seed(seed)
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
        ),
        text_config=Qwen2Config(**_text_config("qwen2")),
        image_token_index=IMAGE_TOKEN,
        video_token_index=VIDEO_TOKEN,
        image_grid_pinpoints=[[32, 32], [32, 64], [64, 32], [64, 64]],
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return _finish(LlavaOnevisionForConditionalGeneration(config), attn)


def _qwen_ids() -> dict:
    return dict(
        image_token_id=IMAGE_TOKEN,
        video_token_id=VIDEO_TOKEN,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )


def tiny_qwen2_vl(attn: str = "sdpa", seed: int = 0):
    """Qwen2-VL: 14 px patches, 2 x 2 merge, 2 vision blocks, M-RoPE sections (2, 3, 3)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2VLConfig(
        text_config=_text_config("qwen_vl"),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=4, mlp_ratio=2, patch_size=14),
        **_qwen_ids(),
    )
    return _finish(Qwen2VLForConditionalGeneration(config), attn)


def tiny_qwen2_5_vl(attn: str = "sdpa", seed: int = 0):
    """Qwen2.5-VL: as Qwen2-VL, with window attention in block 0 and full attention in block 1."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    config = Qwen2_5_VLConfig(
        text_config=_text_config("qwen_vl"),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=64,
            patch_size=14,
            window_size=56,
            fullatt_block_indexes=[1],
        ),
        **_qwen_ids(),
    )
    return _finish(Qwen2_5_VLForConditionalGeneration(config), attn)


def anyres_units(model, inputs: dict[str, torch.Tensor]) -> list[list[int]]:
    """Patch tokens of each tile of each image (the adapter's tile layout; newlines are outside the tiles)."""
    from mmaccel.models.registry import adapter_for

    layouts = adapter_for(model).visual_layouts(
        "image", {"image_sizes": inputs["image_sizes"]}, len(inputs["image_sizes"])
    )
    return [[len(layout.positions(unit)) for unit in layout.grids] for layout in layouts]


# Adding a family is one line: its adapter's name, a builder and a prompt builder.
FAMILIES: dict[str, TinyFamily] = {
    "llava": TinyFamily("llava", tiny_llava, llava_rows),
    "siglip_llava": TinyFamily("llava", partial(siglip_llava, layers=4), llava_rows),
    "llava_next": TinyFamily("llava_next", tiny_llava_next, anyres_rows, units=anyres_units),
    "llava_onevision": TinyFamily("llava_onevision", tiny_llava_onevision, anyres_rows, units=anyres_units),
    "qwen2_vl": TinyFamily("qwen2_vl", tiny_qwen2_vl, qwen_rows),
    "qwen2_5_vl": TinyFamily("qwen2_5_vl", tiny_qwen2_5_vl, qwen_rows),
}


def available_families() -> list[str]:
    """The families of :data:`FAMILIES` whose adapter is registered in this version of mmaccel."""
    from mmaccel.models.registry import ADAPTERS

    registered = {adapter.name for adapter in ADAPTERS}
    return [name for name, family in FAMILIES.items() if family.adapter in registered]
