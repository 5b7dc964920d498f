"""Tiny random-weight models of every supported family, their inputs and processors; nothing is downloaded.

The one factory of tiny models for tests, benchmarks and the command line:

* :mod:`~mmaccel.models.tiny.builders`: one builder per family (``tiny_llava``, ``siglip_llava``,
  ``tiny_llava_next``, ``tiny_llava_onevision``, ``tiny_qwen2_vl``, ``tiny_qwen2_5_vl``) and the shared token ids;
* :mod:`~mmaccel.models.tiny.inputs`: left-padded input batches for them;
* :mod:`~mmaccel.models.tiny.families`: the families as the parametrised test suites see them;
* :mod:`~mmaccel.models.tiny.processors`: tokenizers, image processors and chat templates built in code;
* :mod:`~mmaccel.models.tiny.checkpoint`: complete checkpoint directories
  (``python -m mmaccel.models.tiny FAMILY OUT_DIR``).

Importing this package builds nothing and imports only the builders and inputs (torch, transformers configs).
"""

from mmaccel.models.tiny.builders import (
    SMALL_LLAVA,
    TINY_GRID_PINPOINTS,
    TINY_IMAGE_TOKEN,
    TINY_QWEN_GRID,
    TINY_QWEN_PATCH,
    TINY_VIDEO_TOKEN,
    TINY_VISION_END,
    TINY_VISION_START,
    siglip_llava,
    tiny_llava,
    tiny_llava_next,
    tiny_llava_onevision,
    tiny_qwen2_5_vl,
    tiny_qwen2_vl,
)
from mmaccel.models.tiny.inputs import (
    batch_inputs,
    prompt_ids,
    qwen_patches,
    qwen_visual_run,
    single_inputs,
    tiny_inputs,
    tiny_qwen_inputs,
    tiny_tiled_inputs,
)

__all__ = [
    "SMALL_LLAVA",
    "TINY_GRID_PINPOINTS",
    "TINY_IMAGE_TOKEN",
    "TINY_QWEN_GRID",
    "TINY_QWEN_PATCH",
    "TINY_VIDEO_TOKEN",
    "TINY_VISION_END",
    "TINY_VISION_START",
    "batch_inputs",
    "prompt_ids",
    "qwen_patches",
    "qwen_visual_run",
    "siglip_llava",
    "single_inputs",
    "tiny_inputs",
    "tiny_llava",
    "tiny_llava_next",
    "tiny_llava_onevision",
    "tiny_qwen2_5_vl",
    "tiny_qwen2_vl",
    "tiny_qwen_inputs",
    "tiny_tiled_inputs",
]
