"""Downsample: shrink each image before the processor so that the model makes about ``budget`` visual tokens.

Paper: Liao et al., "Are We Using the Right Benchmark: An Evaluation Framework for Visual Token Compression
Methods" (VTC-Bench), arXiv 2510.07143, 2025 — simple image downsampling beats many token-compression methods on
the common benchmarks. Reference code: ``Chenfei-Liao/VTC-Bench`` (``qwen2_vl.py``, the lmms-eval model wrapper).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from mmaccel.errors import ConfigError
from mmaccel.methods.base import Stage, TokenMethod
from mmaccel.methods.registry import register_method
from mmaccel.models.processors import TokenCounter, image_token_counter

if TYPE_CHECKING:
    from mmaccel.models.base import ModelAdapter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Resized:
    """What :meth:`Downsample.resize` did to one image."""

    size_in: tuple[int, int]  # (height, width) given
    size_out: tuple[int, int]  # (height, width) handed to the processor
    tokens_in: int  # visual tokens the processor makes of the given image
    tokens_out: int  # ... of the resized image
    target: int  # tokens the budget asked for


@register_method("downsample")
@dataclass
class Downsample(TokenMethod):
    """Baseline: resize every image, aspect ratio kept, so that the model produces about ``budget`` tokens.

    Stage ``FRAMES``: it acts on the images *before* the processor, and the model then runs completely
    unmodified on a smaller image: its own placeholder count, tiles, M-RoPE positions and cache. Use it through
    the session, which hands the images back resized (any other method hands them back unchanged, so one
    pipeline serves every method)::

        with mmaccel.apply(model, "downsample", budget=0.25) as session:
            images = session.prepare_images(images, processor)
            out = model.generate(**processor(images=images, text=prompts, return_tensors="pt"))

    Why a step before the processor and not a hook: by the time the model is called, the processor has fixed the
    prompt's placeholder count, the anyres tiles (LLaVA-NeXT/OneVision: crops of the image resized to a grid
    resolution chosen from its size) and ``image_grid_thw``; ``generate`` then encodes the pixels and computes
    Qwen's M-RoPE positions from that grid before the first forward call. A hook would have to re-tile, re-patch
    and re-number all of it, i.e. re-implement the processor; resizing the image first lets the processor and
    the model do exactly what they do for a small image, which is what the baseline is. A session of this
    method refuses a prefill with images when :meth:`Session.prepare_images` was never called, so that a
    forgotten step cannot pass for a downsampled run.

    Sizes come from the processor's own token arithmetic (``mmaccel.models.processors.image_token_counter``):
    the largest size whose token count is at most the target, ``round(budget * tokens)`` for a float budget
    (at least 1), ``budget`` for an int (an image with fewer tokens is left as it is). Images are never enlarged.
    When even the smallest size makes more tokens than the target (LLaVA-NeXT always keeps its base tile, Qwen's
    processor enlarges images below ``min_pixels``), the largest size within 5 % of the fewest tokens is used and
    a warning logged; the counts are in ``session.resized``.

    Supported where the token count follows the image size (``adapter.tokens_per_image()`` is None: Qwen2-VL,
    Qwen2.5-VL, LLaVA-NeXT, LLaVA-OneVision). On a fixed-resolution model (LLaVA-1.5) the processor resizes every
    image to the same 336 px and the model makes 576 tokens whatever the input size, so a smaller image cannot
    mean fewer tokens: ``NotSupportedError``.

    Accepted images: ``PIL.Image.Image``, a (C, H, W) tensor, or (nested) lists of them, as the processor takes
    them. Videos are not resized.

    Differences from reference:
    - The reference divides both sides by a hard-coded integer (``w // 3, h // 3``) and lets the processor round
      the result to its patch grid; here the size is searched on the processor's own token count, so that the
      tokens match the budget (at most the target) for any budget, and budgets read as everywhere in mmaccel.
    - The reference re-encodes the resized image as JPEG (a base64 data URL for ``qwen_vl_utils``), adding
      compression artefacts; here the resized pixels go to the processor as they are.
    - Sides are rounded to keep the aspect ratio (the reference floors each side separately).
    - Bicubic resampling as in the reference (PIL ``BICUBIC``; antialiased bicubic ``interpolate`` for tensors).
    """

    stage = Stage.FRAMES

    def unsupported_reason(self, adapter: ModelAdapter) -> str | None:
        if adapter.tokens_per_image() is not None:
            return (
                f"needs a model whose visual token count follows the image size; {adapter.name} resizes every image "
                "to its fixed input resolution, so a smaller image gives no fewer tokens"
            )
        return super().unsupported_reason(adapter)

    def target_tokens(self, n_tokens: int) -> int:
        """Tokens asked for an image that the processor turns into ``n_tokens``."""
        if isinstance(self.budget, int):
            return min(self.budget, n_tokens)
        return self.keep_count(n_tokens)

    # -- sizes --------------------------------------------------------------------------------------------------------
    def plan(self, height: int, width: int, count: TokenCounter) -> Resized:
        """The size to resize a (height, width) image to; ``count(h, w)`` is the processor's token count."""
        tokens_in = count(height, width)
        target = self.target_tokens(tokens_in)
        if target >= tokens_in:
            return Resized((height, width), (height, width), tokens_in, tokens_in, target)

        def size_at(long_side: int) -> tuple[int, int]:  # the aspect ratio kept, sides >= 1
            if height >= width:
                return long_side, max(1, round(width * long_side / height))
            return max(1, round(height * long_side / width)), long_side

        longest = max(height, width)
        # Token counts need not be monotone in the size (LLaVA-NeXT picks its tile grid from it): scan down in
        # steps of 1/256 of the long side for the first size within the target, then bisect inside that step.
        step = max(1, longest // 256)
        high = longest  # count(size_at(high)) > target
        low = high - step
        while low >= 1 and count(*size_at(low)) > target:
            high, low = low, low - step
        if low < 1:
            if count(*size_at(1)) > target:
                size = self._floor_size([size_at(side) for side in range(longest, 0, -step)], count)
                tokens = count(*size)
                log.warning(
                    "downsample: budget=%r asks for %d tokens, but the smallest image the processor takes makes %d",
                    self.budget,
                    target,
                    tokens,
                )
                return Resized((height, width), size, tokens_in, tokens, target)
            low = 1
        while high - low > 1:  # invariant: count(size_at(low)) <= target < count(size_at(high))
            middle = (low + high) // 2
            if count(*size_at(middle)) <= target:
                low = middle
            else:
                high = middle
        size = size_at(low)
        return Resized((height, width), size, tokens_in, count(*size), target)

    @staticmethod
    def _floor_size(sizes: list[tuple[int, int]], count: TokenCounter) -> tuple[int, int]:
        """Of ``sizes`` (largest first), the largest within 5 % of the fewest tokens: below the processor's floor,
        smaller images only shave rounding (a few pixels wide they still make LLaVA-NeXT's base tile)."""
        counts = [count(*size) for size in sizes]
        floor = min(counts)
        return next(size for size, n in zip(sizes, counts) if n <= floor * 1.05)

    # -- images -------------------------------------------------------------------------------------------------------
    def resize(self, images: Any, processor: Any) -> tuple[Any, list[Resized]]:
        """``images`` resized for ``processor`` (same nesting), and what was done to each image in order."""
        count = image_token_counter(processor)
        records: list[Resized] = []

        def visit(item: Any) -> Any:
            if isinstance(item, (list, tuple)):
                return type(item)(visit(inner) for inner in item)
            height, width = _image_size(item)
            record = self.plan(height, width, count)
            records.append(record)
            return item if record.size_out == record.size_in else _resize_image(item, *record.size_out)

        return visit(images), records


def _image_size(image: Any) -> tuple[int, int]:
    if isinstance(image, torch.Tensor):
        if image.dim() != 3:
            raise ConfigError(f"images: a tensor image must be (C, H, W), got shape {tuple(image.shape)}")
        return int(image.shape[1]), int(image.shape[2])
    size = getattr(image, "size", None)
    if isinstance(size, tuple) and len(size) == 2 and hasattr(image, "resize"):  # PIL: size is (width, height)
        return int(size[1]), int(size[0])
    raise ConfigError(
        f"images: expected PIL images or (C, H, W) tensors (or lists of them), got {type(image).__name__}"
    )


def _resize_image(image: Any, height: int, width: int) -> Any:
    if isinstance(image, torch.Tensor):  # (C, H, W)
        resized = F.interpolate(image[None].float(), size=(height, width), mode="bicubic", antialias=True)[0]
        if image.dtype == torch.uint8:
            return resized.round().clamp(0, 255).to(torch.uint8)
        return resized.to(image.dtype)
    from PIL import Image

    return image.resize((width, height), resample=Image.Resampling.BICUBIC)
