"""The toy model's architecture: LLaVA-1.5 in miniature (CLIP vision tower, 2-layer GELU projector, Llama LM).

The tower keeps its CLS token and LLaVA reads the penultimate layer with the ``"default"`` strategy (CLS dropped),
as LLaVA-1.5 does, so CLS-attention token selection applies unchanged.
"""

from __future__ import annotations

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from mmaccel.toy.tokenizer import IMAGE_TOKEN_ID, SPECIAL_TOKENS, VOCAB_SIZE
from mmaccel.toy.world import IMAGE_SIZE, NUM_PATCHES, PATCH


def vision_config(hidden_size: int = 192, num_layers: int = 4, num_heads: int = 4) -> CLIPVisionConfig:
    """The CLIP vision tower: 112 px images, 14 px patches, 64 patch tokens plus CLS."""
    return CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=IMAGE_SIZE,
        patch_size=PATCH,
        projection_dim=hidden_size,
        hidden_act="quick_gelu",
    )


def toy_config(
    vision_hidden: int = 192,
    vision_layers: int = 4,
    text_hidden: int = 192,
    text_layers: int = 4,
    text_heads: int = 6,
    vocab_size: int = VOCAB_SIZE,
) -> LlavaConfig:
    """The full ``LlavaConfig`` of the toy model (the defaults are the shipped model's)."""
    text = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=text_hidden,
        intermediate_size=(text_hidden * 8 // 3 + 15) // 16 * 16,
        num_hidden_layers=text_layers,
        num_attention_heads=text_heads,
        num_key_value_heads=text_heads,
        max_position_embeddings=512,
        rope_theta=10000.0,
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
        bos_token_id=SPECIAL_TOKENS.index("<s>"),
        eos_token_id=SPECIAL_TOKENS.index("</s>"),
        tie_word_embeddings=False,
    )
    return LlavaConfig(
        vision_config=vision_config(vision_hidden, vision_layers),
        text_config=text,
        image_token_index=IMAGE_TOKEN_ID,
        image_seq_length=NUM_PATCHES,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        pad_token_id=SPECIAL_TOKENS.index("<pad>"),
        eos_token_id=SPECIAL_TOKENS.index("</s>"),
    )
