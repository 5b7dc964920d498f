"""Held-out evaluation of the toy model, with visual-token pruning ablations.

Each held-out example is one scene and one question, drawn from seeds disjoint from training. Scoring is
teacher-forced and exactly equivalent to greedy decoding: an answer counts as correct when the argmax at every
answer position, and at the position after it, reproduces the answer tokens and ``</s>``.

Pruning keeps ``k`` of the 64 visual tokens before the LLM (as VisionZip and FasterVLM do): the dropped tokens are
masked out of attention and the remaining positions are contiguous, which is the same computation as removing the
tokens from the sequence. Selections: the first ``k`` in raster order, a random ``k``, or the ``k`` patches with the
highest CLS attention in the vision tower's penultimate layer.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LlavaForConditionalGeneration

from mmaccel.toy.processor import NUM_IMAGE_TOKENS, user_prompt
from mmaccel.toy.questions import QUESTION_TYPES, Question, choose_suffix, sample_example
from mmaccel.toy.training.data import PackedBatch, TurnEncoder, pixel_tensor
from mmaccel.toy.world import Scene, render

log = logging.getLogger(__name__)

EVAL_SEED = 20_260_000  # training draws from [seed, stage, step]; held-out sets from [EVAL_SEED, type, 0]
SELECTIONS = ("first", "random", "cls")


@dataclass(frozen=True)
class Example:
    """One held-out example: the scene, its question and the full user text (with a benchmark suffix)."""

    scene: Scene
    question: Question
    prompt: str


def heldout_set(per_type: int = 200, seed: int = EVAL_SEED, kinds: tuple[str, ...] = QUESTION_TYPES) -> list[Example]:
    """``per_type`` examples of each question type (balanced mix), reproducible from ``seed``."""
    examples = []
    for kind in kinds:
        rng = np.random.default_rng([seed, QUESTION_TYPES.index(kind), 0])
        for _ in range(per_type):
            scene, question = sample_example(kind, rng)
            examples.append(Example(scene, question, question.prompt(choose_suffix(question, rng))))
    return examples


def num_choices(question: Question) -> int:
    """How many answers a uniform guess picks from."""
    fixed = {"exist": 2, "color": 6, "shape": 3, "count": 6, "position": 2}
    if question.options:
        return len(question.options)
    if question.kind == "relation":
        return 6 if question.subtype == "color" else 3
    if question.kind == "text":
        return 36 ** len(question.answer)
    return fixed[question.kind]


def chance_levels(examples: list[Example]) -> dict[str, float]:
    """Per type: the larger of a uniform guess and always giving the type's most frequent answer."""
    by_kind: dict[str, list[Question]] = defaultdict(list)
    for example in examples:
        by_kind[example.question.kind].append(example.question)
    levels = {}
    for kind, questions in by_kind.items():
        uniform = statistics.fmean(1 / num_choices(question) for question in questions)
        majority = Counter(question.answer for question in questions).most_common(1)[0][1] / len(questions)
        levels[kind] = max(uniform, majority)
    return levels


def cls_attention(model: LlavaForConditionalGeneration, pixel_values: torch.Tensor) -> torch.Tensor:
    """Mean-over-heads attention of CLS to each patch in the penultimate tower layer. ``[B, 3, H, W] -> [B, 64]``."""
    attention = model.model.vision_tower.encoder.layers[model.config.vision_feature_layer].self_attn
    captured: dict[str, torch.Tensor] = {}

    def hook(module, args, kwargs):
        captured["hidden"] = kwargs.get("hidden_states", args[0] if args else None)

    handle = attention.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        model.model.vision_tower(pixel_values=pixel_values)
    finally:
        handle.remove()
    hidden = captured["hidden"]  # [B, 1 + 64, Dv], after layer_norm1
    batch, length, _ = hidden.shape
    heads, head_dim = attention.num_heads, attention.head_dim
    query = attention.q_proj(hidden[:, :1]).view(batch, 1, heads, head_dim).transpose(1, 2)  # [B, h, 1, d]
    keys = attention.k_proj(hidden).view(batch, length, heads, head_dim).transpose(1, 2)  # [B, h, 65, d]
    weights = (query @ keys.transpose(-1, -2) * attention.scale).softmax(-1)  # [B, h, 1, 65]
    return weights.mean(1)[:, 0, 1:]  # [B, 64]


def keep_masks(
    selection: str, keep: int, model: LlavaForConditionalGeneration, pixel_values: torch.Tensor, seed: int = 0
) -> torch.Tensor:
    """Bool ``[B, 64]`` of the visual tokens kept by ``selection`` (``first``, ``random`` or ``cls``)."""
    batch = pixel_values.shape[0]
    mask = torch.zeros(batch, NUM_IMAGE_TOKENS, dtype=torch.bool)
    if keep >= NUM_IMAGE_TOKENS:
        return mask | True
    if keep <= 0:
        return mask
    if selection == "first":
        mask[:, :keep] = True
    elif selection == "random":
        generator = torch.Generator().manual_seed(seed)
        scores = torch.rand(batch, NUM_IMAGE_TOKENS, generator=generator)
        mask.scatter_(1, scores.topk(keep, dim=1).indices, True)
    elif selection == "cls":
        mask.scatter_(1, cls_attention(model, pixel_values).topk(keep, dim=1).indices, True)
    else:
        raise ValueError(f"unknown selection {selection!r}; choose from {SELECTIONS}")
    return mask


def _batch(encoder: TurnEncoder, examples: list[Example], kept: torch.Tensor) -> PackedBatch:
    """Single-turn rows (prefix with ``kept`` visual tokens, then prompt, answer and ``</s>``), right-padded."""
    rows = []
    for example, kept_row in zip(examples, kept):
        prompt_ids, answer_ids = encoder.turn(example.prompt, example.question.answer)
        ids = list(encoder.prefix) + prompt_ids + answer_ids
        segments = [0] * len(encoder.prefix) + [1] * (len(prompt_ids) + len(answer_ids))
        for index in (~kept_row).nonzero().flatten().tolist():
            segments[encoder.image_start + index] = -1
        labels = [-100] * (len(encoder.prefix) + len(prompt_ids) - 1) + answer_ids + [-100]
        rows.append((ids, segments, labels))
    length = max(len(ids) for ids, _, _ in rows)
    input_ids = torch.full((len(rows), length), encoder.pad_id, dtype=torch.long)
    segments_t = torch.full((len(rows), length), -1, dtype=torch.long)
    labels_t = torch.full((len(rows), length), -100, dtype=torch.long)
    for row, (ids, segments, labels) in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        segments_t[row, : len(ids)] = torch.tensor(segments)
        labels_t[row, : len(ids)] = torch.tensor(labels)
    positions = (segments_t >= 0).long().cumsum(1) - 1  # [B, L]: contiguous over kept tokens
    positions = positions.clamp(min=0)
    images = torch.zeros(len(rows), 3, 1, 1)  # pixels are passed separately
    return PackedBatch(images, input_ids, segments_t, positions, labels_t, [[e.question.kind] for e in examples])


@torch.no_grad()
def score_examples(
    model: LlavaForConditionalGeneration,
    encoder: TurnEncoder,
    examples: list[Example],
    selection: str = "first",
    keep: int = NUM_IMAGE_TOKENS,
    batch_size: int = 100,
) -> list[bool]:
    """Greedy-equivalent correctness of each example with ``keep`` visual tokens chosen by ``selection``."""
    model.eval()
    inner = model.model
    results: list[bool] = []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        pixel_values = pixel_tensor([render(example.scene) for example in chunk])
        kept = keep_masks(selection, keep, model, pixel_values, seed=start)
        batch = _batch(encoder, chunk, kept)
        features = inner.get_image_features(pixel_values=pixel_values)
        features = features.pooler_output if hasattr(features, "pooler_output") else features
        image_embeds = torch.stack(list(features)) if isinstance(features, (list, tuple)) else features
        embeds = inner.get_input_embeddings()(batch.input_ids)  # [B, L, D]
        slots = (batch.input_ids == model.config.image_token_index).unsqueeze(-1)
        embeds = embeds.masked_scatter(slots, image_embeds.reshape(-1, embeds.shape[-1]).to(embeds.dtype))
        hidden = inner.language_model(
            inputs_embeds=embeds, attention_mask=batch.attention_mask(), position_ids=batch.positions
        ).last_hidden_state  # [B, L, D]
        predicted = model.lm_head(hidden).argmax(-1)  # [B, L]
        targets = batch.labels >= 0
        correct = (predicted == batch.labels) | ~targets  # [B, L]
        results.extend(correct.all(dim=1).tolist())
    return results


def summarize(examples: list[Example], correct: list[bool]) -> dict[str, float]:
    """Accuracy in percent: overall (mean over types, balanced), per type and per ``type/subtype``."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for example, hit in zip(examples, correct):
        groups[example.question.kind].append(hit)
        groups[f"{example.question.kind}/{example.question.subtype}"].append(hit)
    table = {name: 100 * statistics.fmean(hits) for name, hits in sorted(groups.items())}
    table["all"] = statistics.fmean(table[kind] for kind in QUESTION_TYPES if kind in table)
    return table


def evaluate(model, tokenizer, per_type: int = 200) -> dict[str, float]:
    """Held-out accuracy table of ``model`` with all visual tokens."""
    examples = heldout_set(per_type)
    return summarize(examples, score_examples(model, TurnEncoder(tokenizer), examples))


def pruning_table(
    model, tokenizer, per_type: int = 200, fractions: tuple[float, ...] = (0.5, 0.25, 0.125)
) -> dict[str, dict[str, float]]:
    """Accuracy tables for full, blind and each selection × kept fraction (keys like ``cls@16``)."""
    examples = heldout_set(per_type)
    encoder = TurnEncoder(tokenizer)
    tables = {"all@64": summarize(examples, score_examples(model, encoder, examples))}
    tables["blind@0"] = summarize(examples, score_examples(model, encoder, examples, keep=0))
    for fraction in fractions:
        keep = round(NUM_IMAGE_TOKENS * fraction)
        for selection in SELECTIONS:
            log.info("pruning: %s keeps %d", selection, keep)
            tables[f"{selection}@{keep}"] = summarize(
                examples, score_examples(model, encoder, examples, selection=selection, keep=keep)
            )
    return tables


def generate_latency(model, processor, repeats: int = 20) -> tuple[float, str, str]:
    """Median wall time (ms) of greedy ``generate()`` on one example (batch 1, processor included)."""
    example = heldout_set(1, kinds=("color",))[0]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": example.prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    image = render(example.scene)
    times, answer = [], ""
    for _ in range(repeats + 2):
        start = time.perf_counter()
        inputs = processor(images=image, text=text, return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        times.append(time.perf_counter() - start)
        answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    return 1000 * statistics.median(times[2:]), answer, example.question.answer


def generate_agreement(model, processor, examples: list[Example], encoder: TurnEncoder) -> tuple[float, float]:
    """Accuracy of real ``generate()`` through the processor, and its agreement with the teacher-forced score."""
    forced = score_examples(model, encoder, examples)
    hits = []
    for example in examples:
        inputs = processor(images=render(example.scene), text=user_prompt(example.prompt), return_tensors="pt")
        with torch.no_grad():
            output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        answer = processor.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        hits.append(answer == example.question.answer)
    agreement = statistics.fmean(a == b for a, b in zip(hits, forced))
    return 100 * statistics.fmean(hits), 100 * agreement


ProgressCallback = Callable[[str], None]


@torch.no_grad()
def greedy_with_tokens_removed(model, processor, example: Example, kept: torch.Tensor, max_new_tokens: int = 8) -> str:
    """Greedy answer with the unkept visual tokens physically removed from the sequence (reference path).

    ``kept`` is a bool ``[64]``; the kept features are scattered into the shortened placeholder run and the text
    follows with contiguous positions, which :func:`score_examples` reproduces with masking.
    """
    inner = model.model
    inputs = processor(images=render(example.scene), text=user_prompt(example.prompt), return_tensors="pt")
    ids = inputs["input_ids"][0]  # [L]
    features = inner.get_image_features(pixel_values=inputs["pixel_values"])
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    features = torch.cat(list(features)) if isinstance(features, (list, tuple)) else features
    features = features.reshape(-1, features.shape[-1])  # [64, D]
    is_image = ids == model.config.image_token_index
    keep_ids = torch.ones_like(ids, dtype=torch.bool)
    keep_ids[is_image.nonzero().flatten()[~kept]] = False
    short_ids = ids[keep_ids]  # [L - dropped]
    embeds = inner.get_input_embeddings()(short_ids)[None]  # [1, L', D]
    embeds[0, short_ids == model.config.image_token_index] = features[kept].to(embeds.dtype)
    answer: list[int] = []
    for _ in range(max_new_tokens):
        hidden = inner.language_model(inputs_embeds=embeds).last_hidden_state  # [1, L', D]
        token = int(model.lm_head(hidden[:, -1]).argmax(-1))
        if token == processor.tokenizer.eos_token_id:
            break
        answer.append(token)
        embeds = torch.cat([embeds, inner.get_input_embeddings()(torch.tensor([[token]]))], dim=1)
    return processor.tokenizer.decode(answer).strip()


def removal_agreement(model, processor, examples: list[Example], selection: str, keep: int) -> float:
    """Percent of examples where physical token removal and the masked scoring agree on correctness."""
    encoder = TurnEncoder(processor.tokenizer)
    forced = score_examples(model, encoder, examples, selection=selection, keep=keep, batch_size=len(examples))
    pixel_values = pixel_tensor([render(example.scene) for example in examples])
    kept = keep_masks(selection, keep, model, pixel_values, seed=0)
    agree = [
        (greedy_with_tokens_removed(model, processor, example, kept_row) == example.question.answer) == hit
        for example, kept_row, hit in zip(examples, kept, forced)
    ]
    return 100 * statistics.fmean(agree)
