"""A picture of what a method keeps: the image with its patch grid, kept tokens outlined, merged tokens shaded.

:func:`token_map` runs one prompt with and without a method and returns, per patch of the first image, what
became of it: ``-1`` dropped, otherwise the number of the output token it went into; tokens that stand for a
single patch are *kept*, tokens that stand for several are *merged groups*. Pre-LLM and in-tower methods read
this from the session's ``visual_groups``; in-LLM methods (FastV, SparseVLM) from the kept positions of their
first pruning layer. :func:`draw` writes the PNG: the image (dropped patches dimmed, kept patches outlined,
each merged group in its own colour) next to the question and both answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

__all__ = ["TokenMap", "draw", "token_map"]


@dataclass
class TokenMap:
    """What a method did to the first image of a prompt, and the answers with and without it."""

    grid: tuple[int, int]  # (h, w) patches
    groups: list[int]  # per patch (row-major): output token it went into, -1 when dropped
    stage: str  # where the method acted
    answer: str
    baseline_answer: str
    question: str
    method: str
    budget: Any

    @property
    def kept(self) -> list[int]:
        """Patches that stand alone in an output token."""
        sizes: dict[int, int] = {}
        for group in self.groups:
            if group >= 0:
                sizes[group] = sizes.get(group, 0) + 1
        return [p for p, g in enumerate(self.groups) if g >= 0 and sizes[g] == 1]

    @property
    def merged(self) -> dict[int, list[int]]:
        """Output token -> the patches merged into it (groups of two or more)."""
        members: dict[int, list[int]] = {}
        for patch, group in enumerate(self.groups):
            if group >= 0:
                members.setdefault(group, []).append(patch)
        return {g: m for g, m in members.items() if len(m) > 1}


def _prompt(processor, image, question: str, device) -> dict[str, Any]:
    content = [{"type": "image"}, {"type": "text", "text": question}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    return processor(images=[image], text=[text], return_tensors="pt").to(device)


@torch.no_grad()
def token_map(model, processor, image, question: str, method: str, budget, max_new_tokens: int = 8, **options):
    """Answer ``question`` about ``image`` (a PIL image) with and without ``method``; see :class:`TokenMap`."""
    import mmaccel
    from mmaccel.models.registry import adapter_for

    adapter = adapter_for(model)
    with mmaccel.apply(model, method, budget=budget, **options) as session:  # validates before any work
        inputs = _prompt(processor, image, question, model.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    context = session.last_call
    baseline = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    length = inputs["input_ids"].shape[1]
    decode = processor.batch_decode
    answer = decode(output[:, length:], skip_special_tokens=True)[0].strip()
    baseline_answer = decode(baseline[:, length:], skip_special_tokens=True)[0].strip()
    h, w = adapter.patch_grid()
    n_patches = h * w
    if context.visual_groups:
        groups = context.visual_groups[0].tolist()
        groups = groups[-n_patches:]  # a leading CLS entry (strategy "full") is not a patch
        stage = next(iter(context.stats[0].stages), "vision_output")
    elif context.llm_keep:
        layer = min(context.llm_keep)
        positions = (inputs["input_ids"][0] == adapter.image_token_id).nonzero().flatten().tolist()
        kept = set(context.llm_keep[layer][0].tolist())
        groups = [number if position in kept else -1 for number, position in enumerate(positions)][:n_patches]
        stage = f"llm_layer_{layer}"
    else:
        groups, stage = list(range(n_patches)), "none"
    return TokenMap((h, w), groups, stage, answer, baseline_answer, question, method, budget)


def draw(image, result: TokenMap, path: str | Path) -> Path:
    """Write the picture of ``result`` for ``image`` (a PIL image) to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    h, w = result.grid
    size = 448
    picture = image.convert("RGB").resize((size, size))
    cell_h, cell_w = size / h, size / w
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 5), gridspec_kw={"width_ratios": [1, 1]})
    left.imshow(picture)
    colours = plt.get_cmap("tab20")
    merged = {group: index for index, group in enumerate(sorted(result.merged))}
    kept = set(result.kept)
    for patch, group in enumerate(result.groups):
        y, x = divmod(patch, w)
        corner = (x * cell_w, y * cell_h)
        if group < 0:
            left.add_patch(Rectangle(corner, cell_w, cell_h, color="black", alpha=0.6, linewidth=0))
        elif patch in kept:
            left.add_patch(Rectangle(corner, cell_w, cell_h, fill=False, edgecolor="yellow", linewidth=1.5))
        else:
            colour = colours(merged[group] % 20)
            left.add_patch(Rectangle(corner, cell_w, cell_h, color=colour, alpha=0.45, linewidth=0))
    left.set_xticks([])
    left.set_yticks([])
    left.set_title(f"{result.method} budget {result.budget}: {len(kept)} kept (yellow), {len(merged)} merged "
                   f"groups (shaded), {sum(g < 0 for g in result.groups)} dropped (dark)", fontsize=8)  # fmt: skip
    right.axis("off")
    lines = [
        f"question: {result.question}",
        "",
        f"without the method: {result.baseline_answer}",
        f"with {result.method} ({result.budget}): {result.answer}",
        "",
        f"acts at: {result.stage}; {h}x{w} patches",
    ]
    right.text(0.0, 0.95, "\n".join(lines), va="top", ha="left", fontsize=10, wrap=True, family="monospace")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path
