"""The one generation loop of the evaluation: greedy ``generate()`` on ``(image, text)`` requests.

:func:`generate_batch` answers one batch: each text (a benchmark's ``prompt()``) goes after its image into the
processor's chat template with a generation prompt, the batch is padded as the tokenizer is set (the callers
set left padding), and the model's own ``generate()`` runs greedily, optionally inside an open
``mmaccel.apply`` session (which may prepare the images first) and with a streamer that times it.
:func:`generate_answers` runs a whole list of requests through it: identical requests (:func:`request_key`) are
generated once, longest prompts first, ``batch_size`` at a time, with left padding.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mmaccel.errors import ConfigError, DataError

__all__ = ["generate_answers", "generate_batch", "open_image", "request_key"]

Request = tuple[Any, str]  # (image path or PIL image, user text after the image)


def request_key(image: Any, text: str) -> tuple[Any, str]:
    """Requests with equal keys get one generation: the same image file (or image object) and the same text."""
    return (str(image) if isinstance(image, (str, Path)) else id(image), text)


def open_image(image: Any):
    """``image`` (a path or a PIL image) as an RGB PIL image; :class:`DataError` naming the file when it is
    missing, truncated or not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        if isinstance(image, (str, Path)):
            with Image.open(image) as handle:
                return handle.convert("RGB")
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:  # PIL's errors on bad files
        name = image if isinstance(image, (str, Path)) else getattr(image, "filename", "") or "an embedded image"
        raise DataError(f"{name}: not a readable image ({error})") from None


@torch.no_grad()
def generate_batch(model, processor, requests: Sequence[Request], max_new_tokens: int, streamer=None, session=None):
    """Greedy answers to one batch of ``requests``, the model inputs, and the tokens generated per row.

    ``streamer``: passed to ``generate()`` (a timer). ``session``: the open method, which prepares the images
    before the processor (``downsample`` resizes them). Tokens generated count up to and including the first
    end-of-sequence token.
    """
    images = [open_image(image) for image, _ in requests]
    texts = [
        processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
            add_generation_prompt=True,
        )
        for _, text in requests
    ]
    if session is not None:
        images = session.prepare_images(images, processor)
    inputs = processor(images=images, text=texts, return_tensors="pt", padding=True).to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, streamer=streamer)  # [b, L+n]
    new = output[:, inputs["input_ids"].shape[1] :]
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    counts = []
    for row in new.tolist():
        ends = [i for i, token in enumerate(row) if token in eos_ids]
        counts.append(ends[0] + 1 if ends else len(row))
    answers = [text.strip() for text in processor.batch_decode(new, skip_special_tokens=True)]
    return answers, inputs, counts


def generate_answers(
    model,
    processor,
    requests: Sequence[Request],
    batch_size: int = 32,
    max_new_tokens: int = 8,
    progress: Callable[[int], None] | None = None,
) -> list[str]:
    """Greedy answers to ``(image, text)`` requests, in order; ``image`` is a path or a PIL image.

    Requests are sorted by length so that batches carry little padding, padded on the left, and identical
    requests (same image path and text) are generated once. ``progress(n)`` is called after each batch with the
    number of requests it answered.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size}: must be a positive number of prompts")
    if max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    keys = [request_key(image, text) for image, text in requests]
    first: dict[Any, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    copies = Counter(first[key] for key in keys)  # unique request index -> how many requests it answers
    unique = sorted(first.values(), key=lambda index: -len(requests[index][1]))
    tokenizer = processor.tokenizer
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    answers: dict[int, str] = {}
    try:
        for start in range(0, len(unique), batch_size):
            chunk = unique[start : start + batch_size]
            batch_answers, _, _ = generate_batch(model, processor, [requests[i] for i in chunk], max_new_tokens)
            answers.update(zip(chunk, batch_answers))
            if progress is not None:
                progress(sum(copies[index] for index in chunk))
    finally:
        tokenizer.padding_side = side
    return [answers[first[key]] for key in keys]
