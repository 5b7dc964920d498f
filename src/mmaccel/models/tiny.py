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
