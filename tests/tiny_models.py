"""Tiny random-weight models built from configs in code (no downloads), and inputs for them.

Vocabulary conventions: ids 0/1/2 are pad/bos/eos, 100 is the image placeholder; text ids are drawn from
3..89. The input embedding is re-initialised with std 1 so that greedy decoding is varied, which makes
identity checks meaningful, and generation suppresses the placeholder id.
"""

from __future__ import annotations

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


def siglip_llava(seed: int = 0, attn: str = "sdpa"):
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
            vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
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
