"""Processors for tiny models, built in code: a word-level tokenizer and image processors sized to the model.

Token ids follow ``tiny_models``: 0/1/2 pad/bos/eos, ``w3`` .. ``w89`` text, 100 the image placeholder, 101 the
video placeholder, 102/103 vision start/end. The PIL image processors are used (no torchvision needed).
"""

from __future__ import annotations

import torch

IMAGE, VIDEO, VISION_START, VISION_END = 100, 101, 102, 103


def tiny_tokenizer(image_token: str = "<image>"):
    """A word-level fast tokenizer: ``"w5 <image> w7"`` -> [5, 100, 7] (special tokens need no spaces)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 90)}}
    special = {image_token: IMAGE, "<video>": VIDEO, "<|vision_start|>": VISION_START, "<|vision_end|>": VISION_END}
    vocab.update({**special, "<unk>": 127})
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(list(special))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def llava_next_processor(model=None):
    """A ``LlavaNextProcessor`` matching ``model``'s tower and grid pinpoints (default: the real 336 px layout)."""
    from transformers import LlavaNextImageProcessorPil, LlavaNextProcessor

    if model is None:
        image_processor, patch, strategy = LlavaNextImageProcessorPil(), 14, "default"
    else:
        config = model.config
        side = config.vision_config.image_size
        image_processor = LlavaNextImageProcessorPil(
            size={"shortest_edge": side},
            crop_size={"height": side, "width": side},
            image_grid_pinpoints=config.image_grid_pinpoints,
        )
        patch, strategy = config.vision_config.patch_size, config.vision_feature_select_strategy
    return LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tiny_tokenizer(),
        patch_size=patch,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1,  # the CLIP tower's CLS token, dropped by the "default" strategy
    )


def qwen_image_processor(min_pixels: int = 56 * 56, max_pixels: int = 28 * 28 * 1280):
    """The Qwen2-VL / Qwen2.5-VL image processor (patch 14, 2x2 merge, 2 temporal patches)."""
    from transformers import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)


def qwen_prompt(image_inputs: dict, merge: int = 2) -> dict[str, torch.Tensor]:
    """Batch-1 Qwen inputs around one processed image: ``<s> w5 w6 <start> <image>*n <end> w8 w9``."""
    n_tokens = int(image_inputs["image_grid_thw"][0].prod()) // merge**2
    ids = torch.tensor([[1, 5, 6, VISION_START, *[IMAGE] * n_tokens, VISION_END, 8, 9]])
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": image_inputs["pixel_values"],
        "image_grid_thw": image_inputs["image_grid_thw"],
        "mm_token_type_ids": (ids == IMAGE).int(),
    }
