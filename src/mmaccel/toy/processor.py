"""The toy model's processor: a CLIP image processor, the BPE tokenizer and a LLaVA-1.5-style chat template.

A conversation ``[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]`` renders as
``"USER: <image>\\n{q} ASSISTANT:"``; the processor expands ``<image>`` to :data:`NUM_IMAGE_TOKENS` placeholders.
No BOS token is added anywhere, so the tokenizer, the processor and the training code produce the same ids.
"""

from __future__ import annotations

from transformers import LlavaProcessor, PreTrainedTokenizerFast
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from mmaccel.toy.tokenizer import IMAGE_TOKEN
from mmaccel.toy.world import IMAGE_SIZE, NUM_PATCHES, PATCH

NUM_IMAGE_TOKENS = NUM_PATCHES  # 64: CLS is dropped by the "default" feature strategy
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] if message['content'] is string "
    "else message['content'][0]['text'] }}{{ ' ' }}{% continue %}{% endif %}"
    "{{ message['role'].upper() + ': ' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
    "{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ ' ' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def user_prompt(text: str, with_image: bool = True) -> str:
    """The rendered chat template for one user turn with a generation prompt (before placeholder expansion)."""
    image = f"{IMAGE_TOKEN}\n" if with_image else ""
    return f"USER: {image}{text} ASSISTANT:"


def build_image_processor() -> CLIPImageProcessorPil:
    """Resize to 112 px, centre-crop to 112 px, scale to [0, 1] and normalise with CLIP's mean and std."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


def build_processor(tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    """Combine the image processor, ``tokenizer`` and the chat template into a ``LlavaProcessor``."""
    return LlavaProcessor(
        image_processor=build_image_processor(),
        tokenizer=tokenizer,
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
