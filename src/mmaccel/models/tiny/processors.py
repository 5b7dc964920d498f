"""Processors for the tiny models, built in code (no downloads): tokenizers, image processors, chat templates.

Two tokenizers keep the builders' ids (0/1/2 pad/bos/eos, 100 image, 101 video, 102/103 vision start/end):

* :func:`tiny_tokenizer`: word-level, ``"w5 <image> w7"`` -> ``[5, 100, 7]``, for tests that write ids by hand;
* :func:`byte_tokenizer`: byte-level, encodes any text and decodes it back exactly (the 256 byte symbols take the
  free ids up to 265), for the checkpoints :mod:`mmaccel.models.tiny.checkpoint` writes (vocabulary
  :data:`CHECKPOINT_VOCAB`).

:func:`family_processor` builds a family's Hugging Face processor sized to its tiny model, with a chat template in
the style of the family's released checkpoints. The PIL image processors are used (no ``torchvision`` needed);
families whose processor also holds a video processor get none (images only, see
:mod:`mmaccel.models.processor_loading`).
"""

from __future__ import annotations

from typing import Any

import torch

from mmaccel.models.tiny.builders import TINY_IMAGE_TOKEN, TINY_VIDEO_TOKEN, TINY_VISION_END, TINY_VISION_START

IMAGE, VIDEO, VISION_START, VISION_END = TINY_IMAGE_TOKEN, TINY_VIDEO_TOKEN, TINY_VISION_START, TINY_VISION_END
IM_START, IM_END, UNK = 104, 105, 106
CHECKPOINT_VOCAB = 272  # ids 0..265 used by byte_tokenizer, rounded up to a multiple of 16
QWEN_PIXELS = (56 * 56, 112 * 112)  # min and max pixels of the tiny Qwen image processors: at most 16 tokens

LLAVA_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ ' ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)
IM_TEMPLATE = (  # LLaVA-OneVision: "<|im_start|>user <image>\n{text}<|im_end|>\n<|im_start|>assistant\n"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + ' ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
QWEN_TEMPLATE = (  # "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{text}<|im_end|>\n..."
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


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


def byte_tokenizer(image_token: str = "<image>", video_token: str = "<video>"):
    """A byte-level fast tokenizer without merges: every byte is one token, so any text round-trips.

    Special tokens keep the builders' ids (``image_token`` 100, ``video_token`` 101, vision start/end 102/103,
    ``<|im_start|>``/``<|im_end|>`` 104/105); the byte symbols fill ids 3..99 and 107..265. No BOS is added.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = {
        "<pad>": 0, "<s>": 1, "</s>": 2, image_token: IMAGE, video_token: VIDEO, "<|vision_start|>": VISION_START,
        "<|vision_end|>": VISION_END, "<|im_start|>": IM_START, "<|im_end|>": IM_END, "<unk>": UNK,
    }  # fmt: skip
    free = (index for index in range(CHECKPOINT_VOCAB) if index not in special.values())
    vocab = {**special, **dict(zip(sorted(pre_tokenizers.ByteLevel.alphabet()), free))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens(list(special))
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": image_token, "video_token": video_token},
        padding_side="left",
        model_max_length=1024,
    )


def llava_next_processor(model=None, tokenizer=None, chat_template: str | None = None):
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
        tokenizer=tokenizer or tiny_tokenizer(),
        patch_size=patch,
        vision_feature_select_strategy=strategy,
        num_additional_image_tokens=1,  # the CLIP tower's CLS token, dropped by the "default" strategy
        chat_template=chat_template,
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


def family_processor(family: str, model) -> Any:
    """The Hugging Face processor of tiny ``model`` of ``family`` with :func:`byte_tokenizer` and a chat template.

    ``family``: one of ``llava``, ``llava_next``, ``llava_onevision``, ``qwen2_vl``, ``qwen2_5_vl``.
    """
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    from mmaccel.models.processor_loading import image_only

    config = model.config
    if family == "llava":
        side = config.vision_config.image_size
        return LlavaProcessor(
            image_processor=CLIPImageProcessorPil(
                size={"shortest_edge": side}, crop_size={"height": side, "width": side}
            ),
            tokenizer=byte_tokenizer(),
            patch_size=config.vision_config.patch_size,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            num_additional_image_tokens=1,  # CLIP's CLS token
            chat_template=LLAVA_TEMPLATE,
        )
    if family == "llava_next":
        return llava_next_processor(model, byte_tokenizer(), LLAVA_TEMPLATE)
    if family == "llava_onevision":
        from transformers import LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor

        side = config.vision_config.image_size
        image_processor = LlavaOnevisionImageProcessorPil(
            size={"height": side, "width": side}, image_grid_pinpoints=config.image_grid_pinpoints
        )
        return image_only(LlavaOnevisionProcessor)(
            image_processor=image_processor,
            tokenizer=byte_tokenizer(),
            video_processor=None,
            num_image_tokens=(side // config.vision_config.patch_size) ** 2,
            vision_feature_select_strategy=config.vision_feature_select_strategy,
            chat_template=IM_TEMPLATE,
            vision_aspect_ratio=config.vision_aspect_ratio,
        )
    if family in ("qwen2_vl", "qwen2_5_vl"):
        from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor

        processor_class = Qwen2VLProcessor if family == "qwen2_vl" else Qwen2_5_VLProcessor
        return image_only(processor_class)(
            image_processor=qwen_image_processor(*QWEN_PIXELS),
            tokenizer=byte_tokenizer("<|image_pad|>", "<|video_pad|>"),
            video_processor=None,
            chat_template=QWEN_TEMPLATE,
        )
    raise ValueError(f"family={family!r}: expected one of llava, llava_next, llava_onevision, qwen2_vl, qwen2_5_vl")
