"""Facts of Hugging Face processors: how many visual tokens an image of a given size becomes.

Used by methods that act before the processor (``Stage.FRAMES``), which must predict what the processor will do
with an image without running the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmaccel.errors import ConfigError

TokenCounter = Callable[[int, int], int]  # (height, width) of an input image -> visual tokens in the prompt


def image_token_counter(processor: Any) -> TokenCounter:
    """The number of placeholder tokens ``processor`` writes for one image of a given (height, width).

    Accepts a full processor (``Qwen2VLProcessor``, ``LlavaNextProcessor``, ``LlavaOnevisionProcessor``, ...: their
    ``_get_num_multimodal_tokens``, the size arithmetic ``processor(images=...)`` itself follows) or a Qwen-style
    image processor alone (``get_number_of_image_patches`` and ``merge_size``: patches merged in groups of
    ``merge_size ** 2``). Any other object raises ``ConfigError`` naming the argument.
    """
    count_tokens = getattr(processor, "_get_num_multimodal_tokens", None)
    if count_tokens is not None and getattr(processor, "image_processor", None) is not None:

        def from_processor(height: int, width: int) -> int:
            return int(count_tokens(image_sizes=[(height, width)]).num_image_tokens[0])

        return from_processor
    count_patches = getattr(processor, "get_number_of_image_patches", None)
    merge_size = getattr(processor, "merge_size", None)
    if count_patches is not None and isinstance(merge_size, int):

        def from_image_processor(height: int, width: int) -> int:
            return int(count_patches(height, width, {})) // merge_size**2

        return from_image_processor
    raise ConfigError(
        f"processor: expected the model's Hugging Face processor (with _get_num_multimodal_tokens) or a Qwen-style "
        f"image processor (with get_number_of_image_patches and merge_size); got {type(processor).__name__}"
    )
