"""Random-weight models of every supported family, built from configs in code; nothing is downloaded.

Token ids are shared by every builder: 0/1/2 pad/bos/eos, ``TINY_IMAGE_TOKEN`` (100) the image placeholder,
``TINY_VIDEO_TOKEN`` (101) the video placeholder and 102/103 Qwen's vision start/end. The input embedding is
re-initialised with std 1 so that greedy decoding is varied (identity checks are then meaningful).
``SMALL_LLAVA`` is the 32-pixel geometry the tests use for LLaVA-1.5, the same tile size as the anyres families.
"""

from __future__ import annotations

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

TINY_IMAGE_TOKEN = 100
# LLaVA-1.5 at the tests' geometry: 32-pixel images of 8-pixel patches (16 tokens), a 64-wide decoder, 128 ids.
SMALL_LLAVA = {"image_size": 32, "patch_size": 8, "hidden": 64, "vision_hidden": 32, "vocab": 128}


def _tiny_text_config(config_class, hidden: int, layers: int, vocab: int):
    """A tiny Llama-like decoder config (4 heads, 2 key-value heads, ids pad 0, bos 1, eos 2)."""
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
    text = _tiny_text_config(LlamaConfig, hidden, layers, vocab)
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


def siglip_llava(seed: int = 0, attn: str = "sdpa", layers: int = 2):
    """A LLaVA with a SigLIP tower at the ``SMALL_LLAVA`` geometry: no CLS token, all 16 patches fed to the
    decoder (``"full"`` strategy, last vision layer). The embedding keeps its initialisation."""
    from transformers import SiglipVisionConfig

    image_size, patch_size = SMALL_LLAVA["image_size"], SMALL_LLAVA["patch_size"]
    config = LlavaConfig(
        vision_config=SiglipVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=image_size,
            patch_size=patch_size,
        ),
        text_config=LlamaConfig(
            vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4
        ),
        image_token_index=TINY_IMAGE_TOKEN,
        image_seq_length=(image_size // patch_size) ** 2,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.set_attn_implementation(attn)
    return model


# -- Qwen2-VL / Qwen2.5-VL ------------------------------------------------------------------------------------------
TINY_VIDEO_TOKEN = 101
TINY_VISION_START = 102
TINY_VISION_END = 103
TINY_QWEN_PATCH = 14  # pixels per patch side; 2 x 2 patches merge into one language-model token
TINY_QWEN_GRID = (1, 8, 8)  # (t, h, w) patches of the default image: 16 language-model tokens


def _qwen_text_config(vocab: int, hidden: int, layers: int, mrope_section: tuple[int, int, int] | None) -> dict:
    head_dim = hidden // 4
    third = head_dim // 2 // 3
    section = list(mrope_section or (head_dim // 2 - 2 * third, third, third))  # (t, h, w) split of M-RoPE
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


def _finish(model, attn: str):
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


def tiny_qwen2_vl(
    hidden: int = 64,
    layers: int = 4,
    vocab: int = 128,
    attn: str = "sdpa",
    seed: int = 0,
    mrope_section: tuple[int, int, int] | None = None,
):
    """A Qwen2-VL-shaped model with random weights: a 2-block vision tower (14-pixel patches, 2x2 merge, full
    attention per image) and a Qwen2 decoder with M-RoPE (``mrope_section``: the (t, h, w) split of the rotary
    frequencies; default about a third each). Token ids as ``tiny_llava``, plus video 101 and vision start/end
    102/103."""
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
        text_config=_qwen_text_config(vocab, hidden, layers, mrope_section), vision_config=vision, **_QWEN_TOKEN_IDS
    )
    return _finish(Qwen2VLForConditionalGeneration(config), attn)


def tiny_qwen2_5_vl(
    hidden: int = 64,
    layers: int = 4,
    vocab: int = 128,
    attn: str = "sdpa",
    seed: int = 0,
    mrope_section: tuple[int, int, int] | None = None,
    vision_depth: int = 3,
):
    """A Qwen2.5-VL-shaped model with random weights: a ``vision_depth``-block vision tower whose block 1 uses
    full attention and the others window attention (56-pixel windows: 2x2 merged tokens), and an M-RoPE Qwen2
    decoder (``mrope_section`` as :func:`tiny_qwen2_vl`)."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(seed)
    vision = {
        "depth": vision_depth,
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
        text_config=_qwen_text_config(vocab, hidden, layers, mrope_section), vision_config=vision, **_QWEN_TOKEN_IDS
    )
    return _finish(Qwen2_5_VLForConditionalGeneration(config), attn)


# -- LLaVA-NeXT and LLaVA-OneVision (anyres tiles; OneVision also video) ---------------------------------------
TINY_GRID_PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # tiles of 32 px: 1x1, 1x2, 2x1, 2x2 grids


def _anyres_tower(image_size: int, patch_size: int, width: int) -> dict:
    """The 3-block vision tower of the tiny anyres families (CLIP or SigLIP keyword arguments)."""
    return {
        "hidden_size": width,
        "intermediate_size": 2 * width,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": patch_size,
    }


def _pinpoints(image_size: int) -> list[list[int]]:
    """``TINY_GRID_PINPOINTS`` scaled to tiles of ``image_size`` pixels."""
    return [[h * image_size // 32, w * image_size // 32] for h, w in TINY_GRID_PINPOINTS]


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
    vision = CLIPVisionConfig(**_anyres_tower(image_size, patch_size, vision_hidden), projection_dim=vision_hidden)
    config = LlavaNextConfig(
        vision_config=vision,
        text_config=_tiny_text_config(LlamaConfig, hidden, layers, vocab),
        image_token_index=TINY_IMAGE_TOKEN,
        image_grid_pinpoints=_pinpoints(image_size),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    return _finish(LlavaNextForConditionalGeneration(config), attn)


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
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**_anyres_tower(image_size, patch_size, vision_hidden)),
        text_config=_tiny_text_config(Qwen2Config, hidden, layers, vocab),
        image_token_index=TINY_IMAGE_TOKEN,
        video_token_index=TINY_VIDEO_TOKEN,
        image_grid_pinpoints=_pinpoints(image_size),
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    return _finish(LlavaOnevisionForConditionalGeneration(config), attn)
